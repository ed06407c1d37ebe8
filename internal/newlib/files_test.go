package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWalkFiles_SkipsGitTheDestinationAndIgnoredBuildOutputs(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{
		".gitignore", "go.mod", "lib.go", "cmd/app/main.go", "internal/x/x.go",
		"app", "cmd/app/app", "lib.test", "cover.out", "build/out.txt", ".git/HEAD", "copy/go.mod",
	} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, f), nil, 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, ".gitignore"), []byte("# outputs\n/app\n/cmd/app/app\n*.test\n*.out\nbuild/\n!keep.out\n"), 0o644))

	src, err := listFiles(root, filepath.Join(root, "copy"))
	require.NoError(t, err)
	require.Equal(t, []string{".gitignore", "cmd/app/main.go", "go.mod", "internal/x/x.go", "lib.go"}, src.paths)
	require.Empty(t, src.untracked)
}

func TestModulePath(t *testing.T) {
	for gomod, want := range map[string]string{
		"module example.com/acme/ledger\n\ngo 1.26\n":                  "example.com/acme/ledger",
		"// a comment\nmodule \"example.com/acme/ledger\" // quoted\n": "example.com/acme/ledger",
		"go 1.26\n": "",
	} {
		require.Equal(t, want, modulePath([]byte(gomod)))
	}
}
