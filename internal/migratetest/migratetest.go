// Package migratetest holds what tests of the migrations share: a way to stop
// a migration inside the migration lock, and the checks a user would make of
// a schema afterwards.
package migratetest

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3/database"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/pgtest"
)

// Module is the library's module name, which names its version table.
const Module = "mylib"

// VersionTable is schema's version table, schema-qualified and unquoted.
func VersionTable(schema string) string { return schema + "." + migrate.VersionTable(Module) }

// BlockerName is the application_name of Block's session.
const BlockerName = "migratetest blocker"

// Block makes the next migration of schema wait inside the migration lock,
// mid-file, until release is called: it creates the schema's version table as
// goose does and locks it against writes (reads still pass), so the first
// file's transaction, its statements run, waits to record its version.
func Block(t testing.TB, dsn, schema string) (release func()) {
	t.Helper()
	ctx := t.Context()
	db := stdlib.OpenDBFromPool(pgtest.Pool(t, dsn))
	defer db.Close()
	store, err := database.NewStore(database.DialectPostgres, VersionTable(schema))
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize())
	require.NoError(t, err)
	require.NoError(t, store.CreateVersionTable(ctx, db))
	require.NoError(t, store.Insert(ctx, db, database.InsertRequest{Version: 0}))

	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	cfg.RuntimeParams["application_name"] = BlockerName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SET idle_in_transaction_session_timeout = 0; BEGIN; LOCK TABLE "+VersionTable(schema)+" IN EXCLUSIVE MODE")
	require.NoError(t, err)
	var once sync.Once
	release = func() { once.Do(func() { _ = conn.Close(context.Background()) }) } // ends the transaction
	t.Cleanup(release)
	return release
}

// WaitInsideLock waits until a migrator holds the migration lock while its
// migration waits on the blocked version table, and returns the pid of the
// backend that holds the lock.
func WaitInsideLock(t testing.TB, watch *pgxpool.Pool, schema string) int32 {
	t.Helper()
	var holder *int32
	require.Eventually(t, func() bool {
		var waiting bool
		require.NoError(t, watch.QueryRow(t.Context(), `SELECT
(SELECT min(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
	AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),
EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND relation = to_regclass($1))`,
			VersionTable(schema)).Scan(&holder, &waiting))
		return holder != nil && waiting
	}, 10*time.Second, 5*time.Millisecond, "a migrator should be inside the lock, its migration waiting")
	return *holder
}

// Files counts the migration files (*.sql) at the root of fsys, such as the
// library's: os.DirFS of its migrations directory.
func Files(t testing.TB, fsys fs.FS) int {
	t.Helper()
	names, err := fs.Glob(fsys, "*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, names)
	return len(names)
}

// RequireMigratedOnce checks what a user would: every one of files applied,
// none of them twice, and a checksum recorded for each.
func RequireMigratedOnce(t testing.TB, pool *pgxpool.Pool, schema string, files int) {
	t.Helper()
	counts := VersionCounts(t, pool, schema)
	require.Len(t, counts, files, "schema %s: applied versions %v", schema, counts)
	for v, n := range counts {
		require.Equal(t, 1, n, "schema %s: version %d applied %d times", schema, v, n)
	}
	var sums int
	require.NoError(t, pool.QueryRow(t.Context(), fmt.Sprintf("SELECT count(*) FROM %s",
		pgx.Identifier{schema, migrate.ChecksumTable(Module)}.Sanitize())).Scan(&sums))
	require.Equal(t, files, sums, "schema %s: a checksum for every applied file", schema)
}

// VersionCounts returns how many rows each applied version has in schema's
// version table: more than one means it was applied more than once.
func VersionCounts(t testing.TB, pool *pgxpool.Pool, schema string) map[int64]int {
	t.Helper()
	rows, err := pool.Query(t.Context(), fmt.Sprintf(
		"SELECT version_id, count(*) FROM %s WHERE version_id > 0 AND is_applied GROUP BY 1",
		pgx.Identifier{schema, migrate.VersionTable(Module)}.Sanitize()))
	require.NoError(t, err)
	counts := map[int64]int{}
	var version int64
	var n int
	_, err = pgx.ForEachRow(rows, []any{&version, &n}, func() error { counts[version] = n; return nil })
	require.NoError(t, err)
	return counts
}

// LockKey returns the migration lock's key in script, a migration script of
// the library (mylib.Script): a test that holds the lock shows that a start
// takes no lock.
func LockKey(t testing.TB, script string) int64 {
	t.Helper()
	_, after, found := strings.Cut(script, "pg_advisory_xact_lock(")
	require.True(t, found, "the script takes no migration lock:\n%s", script)
	var key int64
	_, err := fmt.Sscanf(after, "%d", &key)
	require.NoError(t, err)
	return key
}

// AdvisoryLocks counts the advisory locks held or awaited in pool's database.
func AdvisoryLocks(t testing.TB, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n))
	return n
}

// IdleInTransaction counts the sessions of pool's database left idle in a transaction.
func IdleInTransaction(t testing.TB, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND state LIKE 'idle in transaction%'`).Scan(&n))
	return n
}

// RequireNothingMigrated checks that no migration of schema was kept: no
// version recorded, and no table in it but the migrations' own bookkeeping.
func RequireNothingMigrated(t testing.TB, watch *pgxpool.Pool, schema string) {
	t.Helper()
	var versions int
	var tables []string
	require.NoError(t, watch.QueryRow(t.Context(), fmt.Sprintf(
		`SELECT (SELECT count(*) FROM %s WHERE version_id > 0),
	(SELECT coalesce(array_agg(tablename::text ORDER BY tablename), '{}') FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename <> ALL($2))`,
		pgx.Identifier{schema, migrate.VersionTable(Module)}.Sanitize()), schema,
		[]string{migrate.VersionTable(Module), migrate.ChecksumTable(Module), migrate.LeaseTable(Module)}).Scan(&versions, &tables))
	require.Zero(t, versions, "no version should be recorded")
	require.Empty(t, tables, "no table of the migration in flight should exist")
}
