package mylib_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
)

// examples are the package's runnable examples.
var examples = map[string]func(){
	"Example_standalone":     Example_standalone,
	"Example_embedded":       Example_embedded,
	"Example_errors":         Example_errors,
	"ExampleClient_RecordTx": ExampleClient_RecordTx,
	"ExampleClient_List":     ExampleClient_List,
	"ExampleWithPoolConfig":  ExampleWithPoolConfig,
}

// TestExamples_RunTwiceTheSame: a reader who runs an example twice on one
// database sees the same output: each example keeps to a schema of its own
// and cleans up what it counts. Not parallel: it swaps os.Stdout while no
// other test of the package runs.
func TestExamples_RunTwiceTheSame(t *testing.T) {
	require.ElementsMatch(t, exampleFuncs(t), slices.Collect(maps.Keys(examples)), "every example is listed in examples")
	if os.Getenv("DATABASE_URL") == "" {
		t.Skip("no examples database")
	}
	for name, example := range examples {
		first, second := stdoutOf(t, example), stdoutOf(t, example)
		require.NotEmpty(t, first, name)
		require.Equal(t, first, second, "%s printed something else the second time", name)
	}
}

// exampleFuncs lists the Example functions of the package's test files.
func exampleFuncs(t *testing.T) []string {
	files, err := filepath.Glob("*_test.go")
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		for _, d := range file.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && strings.HasPrefix(fn.Name.Name, "Example") {
				names = append(names, fn.Name.Name)
			}
		}
	}
	return names
}

// stdoutOf runs f and returns what it printed.
func stdoutOf(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	read := make(chan []byte, 1)
	go func() {
		out, _ := io.ReadAll(r)
		read <- out
	}()
	saved := os.Stdout
	os.Stdout = w
	func() {
		defer func() { os.Stdout = saved }()
		f()
	}()
	require.NoError(t, w.Close())
	return string(<-read)
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
