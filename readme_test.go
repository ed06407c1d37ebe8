package mylib

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgdual/mylib/internal/hostmod"
)

// TestReadme_GoBlocksCompileAsWritten: every Go block of the README is a
// whole file, which go vet accepts in a host module that requires this
// library, or is plainly a fragment, with "..." where code was left out.
func TestReadme_GoBlocksCompileAsWritten(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var whole []string
	for i, block := range goBlocks(string(readme)) {
		switch {
		case strings.HasPrefix(block, "package "):
			whole = append(whole, block)
		case !strings.Contains(block, "...") && !strings.Contains(block, "…"):
			t.Errorf("README.md's Go block %d is neither a whole file (it does not start with a package clause) nor marked as a fragment with ...:\n%s", i+1, block)
		}
	}
	if len(whole) == 0 {
		t.Skip("README.md has no whole Go file")
	}
	if testing.Short() {
		t.Skip("-short: go vet of the README's programs takes seconds")
	}

	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	path := modulePathOf(string(gomod))
	dir := t.TempDir()
	for i, block := range whole {
		name := "main.go"
		if pkg, _, _ := strings.Cut(strings.TrimPrefix(block, "package "), "\n"); strings.HasSuffix(pkg, "_test") {
			name = "readme_test.go"
		}
		file := filepath.Join(dir, "block"+strconv.Itoa(i+1), name)
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(block), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := hostmod.Write(dir, "example.com/readme", hostmod.Library{Path: path, Dir: root}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "vet", "./...")
	cmd.Dir = dir
	// Offline: every module the blocks need is one this library builds with.
	cmd.Env = append(os.Environ(), hostmod.Env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go vet of README.md's whole Go files (block N is the Nth of them): %v\n%s", err, out)
	}
}

// goBlocks returns the contents of a Markdown text's ```go blocks.
func goBlocks(markdown string) []string {
	var blocks []string
	var block *strings.Builder
	for _, line := range strings.Split(markdown, "\n") {
		switch {
		case block == nil && strings.TrimSpace(line) == "```go":
			block = &strings.Builder{}
		case block != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, block.String())
			block = nil
		case block != nil:
			block.WriteString(line + "\n")
		}
	}
	return blocks
}
