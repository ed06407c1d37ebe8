package mylib_test

import (
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
)

// examplesTwice, set in its environment, makes the test binary run the
// tests and examples -test.run selects twice over, on one database.
const examplesTwice = "MYLIB_TEST_EXAMPLES_TWICE"

// twice runs the tests twice over.
type twice struct{ m *testing.M }

func (r twice) Run() int {
	if code := r.m.Run(); code != 0 {
		return code
	}
	return r.m.Run()
}

// TestExamples_RunTwiceTheSame: a reader who runs an example twice on one
// database sees the same output: each example keeps to a schema of its own
// and cleans up what it counts. The test binary runs every example twice
// over, on one database, in a process of its own, and go test checks each
// run's output against the example's Output comment.
func TestExamples_RunTwiceTheSame(t *testing.T) {
	t.Parallel()
	examples := exampleFuncs(t)
	for name, output := range examples {
		if !output {
			t.Errorf("%s has no // Output: comment, so go test compiles it but never runs it: add the output it prints", name)
		}
	}
	if len(examples) == 0 {
		t.Skip("the package has no example")
	}
	if os.Getenv("DATABASE_URL") == "" {
		t.Skip("no examples database")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, os.Args[0], "-test.run=^Example", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), examplesTwice+"=1", "TEST_DATABASE_URL="+pgtest.AdminDSN(t))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the examples, run twice on one database:\n%s", out)
	for name := range examples {
		require.Equal(t, 2, strings.Count(string(out), "--- PASS: "+name+" ("), "%s ran twice:\n%s", name, out)
	}
}

// exampleFuncs names the examples of the package's test files, and says of
// each whether it has an Output comment.
func exampleFuncs(t *testing.T) map[string]bool {
	names, err := filepath.Glob("*_test.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range names {
		file, err := parser.ParseFile(fset, name, nil, parser.ParseComments|parser.SkipObjectResolution)
		require.NoError(t, err)
		files = append(files, file)
	}
	examples := map[string]bool{}
	for _, ex := range doc.Examples(files...) {
		examples["Example"+ex.Name] = ex.Output != "" || ex.EmptyOutput
	}
	return examples
}

// TestLogs_NameTheLibrary: every line the library logs, the migrations' and
// the second pool's warning among them, says which library wrote it.
func TestLogs_NameTheLibrary(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, schema := range []string{"one", "two"} {
		c, err := mylib.New(t.Context(), mylib.WithDSN(dsn), mylib.WithSchema(schema), mylib.WithLogger(log))
		require.NoError(t, err)
		t.Cleanup(c.Close)
	}

	var messages []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		require.Equal(t, mylib.DefaultSchema, rec["library"], "a line without the library's name: %s", line)
		messages = append(messages, rec["msg"].(string))
	}
	joined := strings.Join(messages, "\n")
	require.Contains(t, joined, "applied migrations")
	require.Contains(t, joined, "another connection pool")
}
