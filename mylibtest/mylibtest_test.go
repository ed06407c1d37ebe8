package mylibtest_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/migratetest"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/mylibtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.MainWithDatabase(m, "DATABASE_URL")) }

// TestNew_AsAHostUsesIt runs parallel tests on one host pool, beside a table
// of the host's own, as a host's test suite would.
func TestNew_AsAHostUsesIt(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := pgtest.Pool(t, pgtest.DSN(t))
	_, err := pool.Exec(ctx, "CREATE TABLE accounts (id int PRIMARY KEY); INSERT INTO accounts VALUES (42)")
	require.NoError(t, err)

	var mu sync.Mutex
	seen := map[string]string{}     // schema: test
	tables := map[string][]string{} // schema: its tables
	t.Run("suite", func(t *testing.T) {
		for _, name := range []string{"signup", "login", "Login twice", "ünïcode/and spaces", strings.Repeat("long", 30)} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				client := mylibtest.New(t, pool)
				schema := client.Schema()
				migratetest.RequireMigratedOnce(t, pool, schema, migratetest.Files(t, os.DirFS("../migrations")))
				mu.Lock()
				_, dup := seen[schema]
				seen[schema] = t.Name()
				tables[schema] = domainTables(t, pool, schema)
				mu.Unlock()
				require.False(t, dup, "schema %s given twice", schema)
				require.True(t, strings.HasPrefix(schema, mylibtest.SchemaPrefix), schema)
			})
		}
	})
	require.Len(t, seen, 5)
	// Every test has the library's tables, in a schema of its own.
	var first []string
	for _, names := range tables {
		require.NotEmpty(t, names)
		if first == nil {
			first = names
		}
		require.Equal(t, first, names)
	}

	// The cleanups ran when the subtests ended: no schema is left, and the
	// host's pool and table are as they were.
	var left []string
	require.NoError(t, pool.QueryRow(ctx, "SELECT coalesce(array_agg(nspname), '{}') FROM pg_namespace WHERE starts_with(nspname, $1)",
		mylibtest.SchemaPrefix).Scan(&left))
	require.Empty(t, left, "schemas left after the tests")
	var accounts int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM accounts").Scan(&accounts))
	require.Equal(t, 1, accounts)
}

// TestNew_PassesOptions: options embedded mode accepts reach the library.
func TestNew_PassesOptions(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t, pgtest.DSN(t))
	var logs bytes.Buffer
	mylibtest.New(t, pool, mylib.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.Contains(t, logs.String(), "applied migrations", "the library logged through the logger given")
}

// TestBuild_NoContainerRuntime: a host that imports the helper builds no
// Docker client; only the library's own tests may use one.
func TestBuild_NoContainerRuntime(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "github.com/jackc/pgx/v5/pgxpool")
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(strings.ToLower(dep), "docker") || strings.HasSuffix(dep, "/internal/pgtest") {
			t.Errorf("the helper's build imports %s", dep)
		}
	}
}

// domainTables lists the tables in schema but the migrations' bookkeeping.
func domainTables(t *testing.T, pool *pgxpool.Pool, schema string) []string {
	t.Helper()
	var names []string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT coalesce(array_agg(table_name::text ORDER BY table_name), '{}')
FROM information_schema.tables WHERE table_schema = $1 AND table_name NOT LIKE '%\_goose\_%'`, schema).Scan(&names))
	return names
}
