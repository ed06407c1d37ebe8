package mylib_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3/database"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/probe"
)

func TestMain(m *testing.M) {
	var run interface{ Run() int } = m
	if os.Getenv(examplesTwice) != "" {
		run = twice{m}
	}
	os.Exit(pgtest.MainWithDatabase(run, "DATABASE_URL"))
}

// host is a host application's own Manager: any type with Pool and Schema.
type host struct {
	pool   *pgxpool.Pool
	schema string
}

func (h host) Pool() *pgxpool.Pool { return h.pool }
func (h host) Schema() string      { return h.schema }

// mode opens a Client on a database in one of the two modes.
type mode struct {
	name string
	open func(t *testing.T, dsn, schema string, opts ...mylib.Option) (*mylib.Client, error)
}

var modes = []mode{
	{"standalone", func(t *testing.T, dsn, schema string, opts ...mylib.Option) (*mylib.Client, error) {
		return mylib.New(context.Background(), append([]mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema(schema)}, opts...)...)
	}},
	{"embedded", func(t *testing.T, dsn, schema string, opts ...mylib.Option) (*mylib.Client, error) {
		return mylib.New(context.Background(), append([]mylib.Option{mylib.WithManager(host{pgtest.Pool(t, dsn), schema})}, opts...)...)
	}},
}

// eachMode runs f once per mode, each on a fresh, empty database.
func eachMode(t *testing.T, f func(t *testing.T, m mode, dsn string)) {
	eachModeOn(t, pgtest.DSN, f)
}

// eachModeOn runs f once per mode, each on a fresh database from newDB.
func eachModeOn(t *testing.T, newDB func(testing.TB) string, f func(t *testing.T, m mode, dsn string)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			f(t, m, newDB(t))
		})
	}
}

func mustOpen(t *testing.T, m mode, dsn, schema string, opts ...mylib.Option) *mylib.Client {
	t.Helper()
	c, err := m.open(t, dsn, schema, opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// probeFiles is how many migration files the probe has (internal/probe): the
// machinery's tests migrate with them (mylib.WithProbe) and run its
// statements, whatever the library's domain.
var probeFiles = len(probe.Names())

// migrationFiles counts the files a user sees in migrations/.
func migrationFiles(t *testing.T) int {
	files, err := filepath.Glob("migrations/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	return len(files)
}

// libraryFiles is the library's migration files numbered up to version (all
// with math.MaxInt64), as a file system New or migrate.Load can take: for the
// library's tests of its own releases.
func libraryFiles(t testing.TB, version int64) fstest.MapFS {
	t.Helper()
	files := fstest.MapFS{}
	names, err := filepath.Glob("migrations/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, names)
	for _, n := range names {
		prefix, _, _ := strings.Cut(filepath.Base(n), "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		require.NoError(t, err, n)
		if v > version {
			continue
		}
		data, err := os.ReadFile(n)
		require.NoError(t, err)
		files[filepath.Base(n)] = &fstest.MapFile{Data: data}
	}
	return files
}

// appliedVersions reads the version table with goose's own store.
func appliedVersions(t *testing.T, dsn, schema string) []int64 {
	t.Helper()
	store, err := database.NewStore(database.DialectPostgres, schema+".mylib_goose_db_version")
	require.NoError(t, err)
	db := stdlibDB(t, dsn)
	list, err := store.ListMigrations(context.Background(), db)
	require.NoError(t, err)
	var versions []int64
	for _, m := range list {
		if m.IsApplied && m.Version > 0 {
			versions = append(versions, m.Version)
		}
	}
	return versions
}

func TestNew_RunsMigrationsInBothModes(t *testing.T) {
	t.Parallel()
	eachMode(t, func(t *testing.T, m mode, dsn string) {
		c := mustOpen(t, m, dsn, "audit", mylib.WithProbe)
		require.Equal(t, "audit", c.Schema())
		require.Len(t, appliedVersions(t, dsn, "audit"), probeFiles)
		require.ElementsMatch(t, []string{probe.Table, "mylib_goose_db_version", "mylib_goose_checksums", "mylib_goose_lease"}, tables(t, dsn, "audit"))
	})
}

func TestNew_UpToDateSchemaAppliesNothing(t *testing.T) {
	t.Parallel()
	eachMode(t, func(t *testing.T, m mode, dsn string) {
		mustOpen(t, m, dsn, "audit", mylib.WithProbe).Close()
		before := versionRows(t, dsn, "audit")
		for range 3 {
			mustOpen(t, m, dsn, "audit", mylib.WithProbe).Close()
		}
		require.Equal(t, before, versionRows(t, dsn, "audit"))
	})
}

func TestNew_DefaultSchemaIsTheModuleName(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	c, err := mylib.New(context.Background(), mylib.WithDSN(dsn))
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, mylib.DefaultSchema, c.Schema())
	require.Len(t, appliedVersions(t, dsn, mylib.DefaultSchema), migrationFiles(t))
}

func TestNew_ConcurrentStartsMigrateOnce(t *testing.T) {
	t.Parallel()
	eachMode(t, func(t *testing.T, m mode, dsn string) {
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := m.open(t, dsn, "audit", mylib.WithProbe)
				if err == nil {
					c.Close()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		require.Equal(t, probeFiles, versionRows(t, dsn, "audit"), "every migration applied exactly once")
	})
}

func TestClose_StandaloneClosesItsPool(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	c, err := mylib.New(context.Background(), mylib.WithDSN(dsn), mylib.WithProbe, mylib.WithPoolConfig(func(cfg *pgxpool.Config) {
		cfg.ConnConfig.RuntimeParams["application_name"] = "close_test"
		cfg.MinConns = 2
	}))
	require.NoError(t, err)
	_, err = mylib.ProbeCount(context.Background(), c, "x")
	require.NoError(t, err)
	require.Positive(t, backends(t, dsn, "close_test"))
	c.Close()
	require.Eventually(t, func() bool { return backends(t, dsn, "close_test") == 0 }, 5*time.Second, 20*time.Millisecond,
		"the library's own pool is closed")
}

func TestClose_EmbeddedLeavesHostPoolOpen(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	pool := pgtest.Pool(t, dsn)
	c, err := mylib.New(context.Background(), mylib.WithManager(host{pool, "audit"}), mylib.WithProbe)
	require.NoError(t, err)
	c.Close()
	c.Close() // a second call does nothing
	var one int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT 1").Scan(&one), "the host's pool stays open")
	require.Equal(t, 1, one)
}

func TestClose_MethodsAfterCloseReturnErrClosed(t *testing.T) {
	t.Parallel()
	eachMode(t, func(t *testing.T, m mode, dsn string) {
		c := mustOpen(t, m, dsn, "audit", mylib.WithProbe)
		c.Close()
		c.Close()
		ctx := context.Background()
		_, err := mylib.ProbeInsert(ctx, c, nil, "c")
		require.ErrorIs(t, err, mylib.ErrClosed)
		_, err = mylib.ProbeCount(ctx, c, "c")
		require.ErrorIs(t, err, mylib.ErrClosed)
	})
}

func TestSharedPool_TenantsAreIsolated(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	pool := pgtest.Pool(t, dsn, func(c *pgxpool.Config) { c.MaxConns = 3 })
	ctx := context.Background()
	tenants := map[string]*mylib.Client{}
	for _, schema := range []string{"tenant_a", "tenant_b", "tenant_c"} {
		c, err := mylib.New(ctx, mylib.WithManager(host{pool, schema}), mylib.WithProbe)
		require.NoError(t, err)
		t.Cleanup(c.Close)
		tenants[schema] = c
	}
	_, err := mylib.ProbeInsert(ctx, tenants["tenant_a"], nil, "account:1")
	require.NoError(t, err)
	for schema, c := range tenants {
		n, err := mylib.ProbeCount(ctx, c, "account:1")
		require.NoError(t, err)
		if schema == "tenant_a" {
			require.EqualValues(t, 1, n)
		} else {
			require.Zero(t, n, "a row written through tenant_a is invisible through %s", schema)
		}
	}
}

func TestStandalone_WarnsOnSecondPoolToTheSameDatabase(t *testing.T) {
	t.Parallel()
	dsn, other := pgtest.DSN(t), pgtest.DSN(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	open := func(dsn, schema string) {
		c, err := mylib.New(context.Background(), mylib.WithDSN(dsn), mylib.WithSchema(schema), mylib.WithLogger(log))
		require.NoError(t, err)
		t.Cleanup(c.Close)
	}
	open(dsn, "one")
	open(other, "one")
	require.NotContains(t, logs.String(), "another connection pool", "pools to different databases are not a second pool")
	open(dsn, "two")
	require.Contains(t, logs.String(), "another connection pool")
	require.Contains(t, logs.String(), "WithManager")
}

func TestNew_NoPasswordInErrorsOrLogs(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-Pa55"
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dsns := []string{
		"postgres://alice:" + secret + "@127.0.0.1:1/app?connect_timeout=2",          // nothing listens there
		"postgres://alice:" + secret + "@127.0.0.1:1/app?sslmode=bogus",              // bad parameter
		"postgres://alice:" + secret + "@127.0.0.1:bad/app",                          // bad port
		"postgres://alice:" + secret + "%zz@127.0.0.1/app",                           // bad escape
		"host=127.0.0.1 port=1 user=alice password=" + secret + " connect_timeout=2", // key/value
		"host=127.0.0.1 port=1 user=alice password='" + secret + "' sslmode=bogus",
	}
	for _, dsn := range dsns {
		_, err := mylib.New(context.Background(), mylib.WithDSN(dsn), mylib.WithLogger(log))
		require.Error(t, err, dsn)
		require.NotContains(t, err.Error(), secret, "error for %q", dsn)
		require.NotContains(t, err.Error(), "Pa55")
	}
	require.NotContains(t, logs.String(), "Pa55")
}

// tables lists the tables in schema.
func tables(t *testing.T, dsn, schema string) []string {
	t.Helper()
	var names []string
	rows, err := pgtest.Pool(t, dsn).Query(context.Background(), "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
	require.NoError(t, err)
	names, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

// versionRows counts applied versions above zero, duplicates included.
func versionRows(t *testing.T, dsn, schema string) int {
	t.Helper()
	var n int
	err := pgtest.Pool(t, dsn).QueryRow(context.Background(),
		fmt.Sprintf("SELECT count(*) FROM %s WHERE version_id > 0 AND is_applied", pgx.Identifier{schema, "mylib_goose_db_version"}.Sanitize())).Scan(&n)
	require.NoError(t, err)
	return n
}

// backends counts server connections with the given application_name.
func backends(t *testing.T, dsn, app string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n))
	return n
}

// schemas lists the schemas of the database that are not PostgreSQL's own.
func schemas(t *testing.T, dsn string) []string {
	t.Helper()
	rows, err := pgtest.Pool(t, dsn).Query(context.Background(),
		`SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%' AND nspname NOT IN ('information_schema', 'public') ORDER BY 1`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

// migratedDSN returns a fresh database whose schema "audit" is already
// migrated: a clone of a template migrated once per test binary, keyed on the
// migration files, so tests of the domain do not re-run migrations.
func migratedDSN(t testing.TB) string {
	t.Helper()
	return migratedWith(t, os.DirFS("migrations"))
}

// probeDSN is migratedDSN with the probe's files.
func probeDSN(t testing.TB) string {
	t.Helper()
	return migratedWith(t, probe.Files(), mylib.WithProbe)
}

// migratedWith returns a fresh database whose schema "audit" New, given
// opts, has migrated with files.
func migratedWith(t testing.TB, files fs.FS, opts ...mylib.Option) string {
	t.Helper()
	h := sha256.New()
	names, err := fs.Glob(files, "*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, names)
	for _, n := range names {
		text, err := fs.ReadFile(files, n)
		require.NoError(t, err)
		fmt.Fprintf(h, "%s\x00%s\x00", n, text)
	}
	return pgtest.TemplateDSN(t, fmt.Sprintf("mylib-migrated-%x", h.Sum(nil)[:8]), func(ctx context.Context, dsn string) error {
		c, err := mylib.New(ctx, append([]mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
}

// quietLogger drops the library's log lines (the second-pool warning, here expected).
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// withApp returns dsn with application_name set, to find its connections in
// pg_stat_activity.
func withApp(t *testing.T, dsn, app string) string {
	t.Helper()
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("application_name", app)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " application_name=" + app
}

// stdlibDB is a database/sql handle on dsn, as goose uses.
func stdlibDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db := stdlib.OpenDBFromPool(pgtest.Pool(t, dsn))
	t.Cleanup(func() { db.Close() })
	return db
}
