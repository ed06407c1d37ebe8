package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestDSN_ATestsDatabaseIsItsOwnAndGoesAway(t *testing.T) {
	var names []string
	t.Run("first", func(t *testing.T) {
		first := Pool(t, DSN(t))
		_, err := first.Exec(t.Context(), "CREATE TABLE marker (id int)")
		require.NoError(t, err)
		names = append(names, currentDatabase(t, first))

		t.Run("second, while the first runs", func(t *testing.T) {
			second := Pool(t, DSN(t))
			names = append(names, currentDatabase(t, second))
			var found bool
			require.NoError(t, second.QueryRow(t.Context(), "SELECT to_regclass('marker') IS NOT NULL").Scan(&found))
			require.False(t, found, "a table made in one test's database shows in another's")
		})
	})
	require.Len(t, names, 2)
	require.NotEqual(t, names[0], names[1])
	require.Empty(t, existingDatabases(t, names), "databases outlived their tests")
}

func TestDSN_ParallelTestsEachGetADatabase(t *testing.T) {
	var mu sync.Mutex
	var names []string
	t.Run("group", func(t *testing.T) {
		for i := range 8 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				pool := Pool(t, DSN(t))
				_, err := pool.Exec(t.Context(), "CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
				require.NoError(t, err)
				var n int
				require.NoError(t, pool.QueryRow(t.Context(), "SELECT count(*) FROM t").Scan(&n))
				require.Equal(t, 1, n)
				mu.Lock()
				names = append(names, currentDatabase(t, pool))
				mu.Unlock()
			})
		}
	})
	slices.Sort(names)
	require.Len(t, slices.Compact(names), 8)
	require.Empty(t, existingDatabases(t, names))
}

func TestTemplateDSN_SetupRunsOncePerKey(t *testing.T) {
	key := uniqueKey(t)
	var setups atomic.Int32
	setup := func(ctx context.Context, dsn string) error {
		setups.Add(1)
		return execOnce(ctx, dsn, "CREATE TABLE items (v text); INSERT INTO items VALUES ('from setup')")
	}
	t.Run("group", func(t *testing.T) {
		for i := range 4 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				pool := Pool(t, TemplateDSN(t, key, setup))
				_, err := pool.Exec(t.Context(), "INSERT INTO items VALUES ('mine')")
				require.NoError(t, err)
				var n int
				require.NoError(t, pool.QueryRow(t.Context(), "SELECT count(*) FROM items").Scan(&n))
				require.Equal(t, 2, n, "the setup's row and this test's own, nobody else's")
			})
		}
	})
	require.EqualValues(t, 1, setups.Load())
}

func TestTemplateDSN_SetupMayLeaveConnectionsOpen(t *testing.T) {
	var leaked *pgx.Conn
	dsn := TemplateDSN(t, uniqueKey(t), func(ctx context.Context, dsn string) error {
		var err error
		leaked, err = pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		_, err = leaked.Exec(ctx, "CREATE TABLE t (v int)")
		return err
	})
	t.Cleanup(func() { _ = leaked.Close(context.Background()) })

	var found bool
	require.NoError(t, Pool(t, dsn).QueryRow(t.Context(), "SELECT to_regclass('t') IS NOT NULL").Scan(&found))
	require.True(t, found)
	require.Error(t, leaked.Ping(t.Context()), "the setup's connection should have been ended")
}

func TestTemplateDSN_FailedSetupLeavesNothing(t *testing.T) {
	b := server(t)
	key := "setup " + uniqueKey(t)
	_, err := b.template(key, func(ctx context.Context, dsn string) error {
		if err := execOnce(ctx, dsn, "CREATE TABLE half_done (v int)"); err != nil {
			return err
		}
		return errors.New("migration 3 failed")
	})
	require.ErrorContains(t, err, "migration 3 failed")
	template, build := templateNames(key)
	require.Empty(t, existingDatabases(t, []string{template, build}))

	_, again := b.template(key, nil)
	require.Equal(t, err, again, "every test using the key gets the same error")
}

// TestTemplateDSN_TestBinariesShareOneServer runs several test binaries at once against one server
// (as TEST_DATABASE_URL): they build the template once between them, and each gets its clone.
func TestTemplateDSN_TestBinariesShareOneServer(t *testing.T) {
	key := uniqueKey(t)
	const binaries = 3
	outputs := make([][]byte, binaries)
	errs := make([]error, binaries)
	admin := AdminDSN(t)
	var wg sync.WaitGroup
	for i := range binaries {
		cmd := helper(t, "build-template", "TEST_DATABASE_URL="+admin, "PGTEST_TEMPLATE_KEY="+key)
		wg.Go(func() { outputs[i], errs[i] = cmd.CombinedOutput() })
	}
	wg.Wait()
	ran := 0
	for i := range binaries {
		require.NoError(t, errs[i], "test binary %d:\n%s", i, outputs[i])
		ran += bytes.Count(outputs[i], []byte("setup ran"))
	}
	require.Equal(t, 1, ran, "setup should run once across all binaries")
}

func TestNoServer_FailsUnderCIAndSkipsOtherwise(t *testing.T) {
	tests := []struct {
		name     string
		ci       string
		wantFail bool
		wantLine string
	}{
		{name: "CI=true", ci: "CI=true", wantFail: true, wantLine: "--- FAIL: TestHelperProcess"},
		{name: "locally", ci: "", wantFail: false, wantLine: "--- SKIP: TestHelperProcess"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := helper(t, "needs-database",
				"PGTEMP_BIN=/nonexistent", "DOCKER_HOST=unix:///nonexistent/docker.sock", tt.ci)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			began := time.Now()
			err := cmd.Run()
			out := stdout.String()

			require.Less(t, time.Since(began), 20*time.Second, "looking for a server took too long")
			if tt.wantFail {
				require.Error(t, err, "exit status; output:\n%s", out)
			} else {
				require.NoError(t, err, "exit status; output:\n%s%s", out, stderr.String())
			}
			for _, want := range []string{
				tt.wantLine,
				"no PostgreSQL server for the tests",
				"TEST_DATABASE_URL=postgres://",                // way 1
				"apt-get install postgresql", "set PGTEMP_BIN", // way 2
				"a running Docker daemon",                                           // way 3
				"TEST_DATABASE_URL is not set", "PGTEMP_BIN=/nonexistent", "Docker", // the reasons
			} {
				require.Contains(t, out, want)
			}
		})
	}
}

func TestAdminDSN_MayCreateDatabases(t *testing.T) {
	pool := Pool(t, AdminDSN(t))
	var may bool
	require.NoError(t, pool.QueryRow(t.Context(),
		"SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user").Scan(&may))
	require.True(t, may)
}

func TestRestartable_KeepsDataAndDSN(t *testing.T) {
	srv, dsn := Restartable(t)
	before, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	defer func() { _ = before.Close(context.Background()) }()
	_, err = before.Exec(t.Context(), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
	require.NoError(t, err)

	require.NoError(t, srv.Restart(t.Context()))

	require.Error(t, before.Ping(t.Context()), "a connection from before the restart should be broken")
	var v int
	require.NoError(t, Pool(t, dsn).QueryRow(t.Context(), "SELECT v FROM kept").Scan(&v))
	require.Equal(t, 42, v)
}

func TestConnDSN_ReplacesOnlyTheDatabase(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"url", "postgres://u:secret@db.example:5433/old?sslmode=disable",
			"postgres://u:secret@db.example:5433/new?sslmode=disable"},
		{"url over a unix socket", "postgres://postgres@/postgres?host=/tmp/pgtemp-1/sock&port=5432&sslmode=disable",
			"postgres://postgres@/new?host=/tmp/pgtemp-1/sock&port=5432&sslmode=disable"},
		{"url without a database", "postgresql://u@h", "postgresql://u@h/new"},
		{"url with dbname parameter", "postgres://u@h/old?dbname=old", "postgres://u@h/new?dbname=new"},
		{"keywords", "host=h dbname=old user=u", "host=h dbname=new user=u"},
		{"keywords without a database", "host=h user=u", "host=h user=u dbname=new"},
		{"keywords, quoted and spaced", `host = h dbname='my db' password='a b\'c'`,
			`host=h dbname=new password='a b\'c'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ConnDSN(tt.in, "new")
			require.Equal(t, tt.want, got)
			before, err := pgx.ParseConfig(tt.in)
			require.NoError(t, err)
			after, err := pgx.ParseConfig(got)
			require.NoError(t, err)
			require.Equal(t, "new", after.Database)
			require.Equal(t, before.Host, after.Host)
			require.Equal(t, before.Port, after.Port)
			require.Equal(t, before.User, after.User)
			require.Equal(t, before.Password, after.Password)
		})
	}
}

const helperEnv = "PGTEST_TEST_HELPER"

// TestHelperProcess is not a test: other tests run the test binary with it, as another test binary
// would run, with the environment variable PGTEST_TEST_HELPER saying what to do.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "needs-database":
		DSN(t)
		t.Error("DSN returned without a server")
	case "build-template":
		dsn := TemplateDSN(t, os.Getenv("PGTEST_TEMPLATE_KEY"), func(ctx context.Context, dsn string) error {
			fmt.Println("setup ran")
			time.Sleep(300 * time.Millisecond) // long enough for the other binaries to arrive
			return execOnce(ctx, dsn, "CREATE TABLE from_setup (v int)")
		})
		var found bool
		require.NoError(t, Pool(t, dsn).QueryRow(t.Context(), "SELECT to_regclass('from_setup') IS NOT NULL").Scan(&found))
		require.True(t, found)
	default:
		t.Skip("runs only as a subprocess of other tests")
	}
}

// BenchmarkDatabase measures what DSN costs a test: cloning the empty template, and dropping the clone.
func BenchmarkDatabase(b *testing.B) {
	be := server(b)
	template, err := be.template("empty", nil)
	require.NoError(b, err)
	ctx := context.Background()
	for b.Loop() {
		name, err := be.createDatabase(ctx, b.Name(), template)
		require.NoError(b, err)
		require.NoError(b, be.drop(ctx, be.admin, name))
	}
}

// helper prepares the test binary to run TestHelperProcess in the given role, with env added to an
// environment cleared of anything that chooses a server.
func helper(t *testing.T, role string, env ...string) *exec.Cmd {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperProcess$", "-test.v", "-test.count=1")
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "TEST_DATABASE_URL", "PGTEMP_BIN", "DOCKER_HOST", "CI", helperEnv:
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, helperEnv+"="+role)
	for _, kv := range env {
		if kv != "" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

// uniqueKey returns a template key no earlier run used, and drops its template when the test ends, so
// a shared TEST_DATABASE_URL server does not collect them.
func uniqueKey(t *testing.T) string {
	key := t.Name() + " " + rand.Text()
	t.Cleanup(func() {
		b, err := current()
		if err != nil {
			return
		}
		name, _ := templateNames("setup " + key)
		require.NoError(t, b.dropTemplate(context.Background(), b.admin, name))
	})
	return key
}

func execOnce(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(ctx, sql)
	return err
}

func currentDatabase(t *testing.T, pool *pgxpool.Pool) string {
	var name string
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT current_database()").Scan(&name))
	return name
}

// existingDatabases returns those of names that exist on the server.
func existingDatabases(t *testing.T, names []string) []string {
	rows, err := server(t).admin.Query(t.Context(), "SELECT datname FROM pg_database WHERE datname = ANY($1)", names)
	require.NoError(t, err)
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return found
}

// Catalog sees what a program could leave in a database, and nothing else
// changes it: every change below shows, and undone, the lists match again.
func TestCatalog_SeesEveryChangeAndItsUndoing(t *testing.T) {
	t.Parallel()
	dsn := DSN(t)
	pool := Pool(t, dsn)
	exec := func(sql string) {
		t.Helper()
		_, err := pool.Exec(t.Context(), sql)
		require.NoError(t, err, sql)
	}
	// With privileges of its own, which a GRANT and its REVOKE leave as they were.
	exec("CREATE TABLE kept (v int); GRANT SELECT ON kept TO PUBLIC")
	before := Catalog(t, dsn)
	require.Contains(t, before, "table kept")
	for _, change := range []struct{ do, undo string }{
		{"CREATE SCHEMA s", "DROP SCHEMA s"},
		{"CREATE TABLE s_t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY)", "DROP TABLE s_t"},
		{"ALTER TABLE kept ALTER COLUMN v SET (n_distinct = -0.01)", "ALTER TABLE kept ALTER COLUMN v RESET (n_distinct)"},
		{"ALTER TABLE kept ALTER COLUMN v SET NOT NULL", "ALTER TABLE kept ALTER COLUMN v DROP NOT NULL"},
		{"COMMENT ON TABLE kept IS 'x'", "COMMENT ON TABLE kept IS NULL"},
		{"ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC", "ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM PUBLIC"},
		{"GRANT INSERT ON kept TO PUBLIC", "REVOKE INSERT ON kept FROM PUBLIC"},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "DROP FUNCTION f()"},
	} {
		exec(change.do)
		require.NotEmpty(t, CatalogChanges(before, Catalog(t, dsn)), "Catalog misses %s", change.do)
		exec(change.undo)
		require.Empty(t, CatalogChanges(before, Catalog(t, dsn)), "after %s", change.undo)
	}
	var db string
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT current_database()").Scan(&db))
	exec("ALTER DATABASE " + pgx.Identifier{db}.Sanitize() + " SET work_mem = '5MB'")
	require.Equal(t, []string{"+ settings of every role {work_mem=5MB}"}, CatalogChanges(before, Catalog(t, dsn)))
}

// The tests run on a server the library supports. The line this logs (with
// go test -v) is how .ci/run tells which server each of its passes used.
func TestServer_IsASupportedVersion(t *testing.T) {
	var version string
	require.NoError(t, server(t).admin.QueryRow(t.Context(), "SELECT current_setting('server_version')").Scan(&version))
	t.Logf("the tests' server: PostgreSQL %s", version)
	require.GreaterOrEqual(t, server(t).version, 150000, "PostgreSQL %s: the library supports 15 and later", version)
}
