package migrate

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib/internal/pgtemp"
	"github.com/pgdual/mylib/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const module = "mylib"

// sqlFile is a migration file that creates one table.
func sqlFile(table string) *fstest.MapFile {
	return &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE {{tables." + table + "}} (id int);\n-- +goose Down\nDROP TABLE {{tables." + table + "}};\n")}
}

type run struct {
	t    *testing.T
	pool *pgxpool.Pool
	logs *bytes.Buffer
}

func newRun(t *testing.T, opts ...func(*pgxpool.Config)) *run {
	return &run{t: t, pool: pgtest.Pool(t, pgtest.DSN(t), opts...), logs: &bytes.Buffer{}}
}

func (r *run) up(fsys fstest.MapFS) (Result, error) {
	r.t.Helper()
	m, err := Load(module, fsys)
	require.NoError(r.t, err)
	return m.Up(context.Background(), r.pool, "lib", Config{Log: slog.New(slog.NewTextHandler(r.logs, nil))})
}

func (r *run) versions() []int64 {
	r.t.Helper()
	rows, err := r.pool.Query(context.Background(), "SELECT version_id FROM lib.mylib_goose_db_version WHERE version_id > 0 ORDER BY id")
	require.NoError(r.t, err)
	v, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(r.t, err)
	return v
}

func (r *run) tableExists(name string) bool {
	r.t.Helper()
	var ok bool
	require.NoError(r.t, r.pool.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", "lib."+name).Scan(&ok))
	return ok
}

func TestUp_FailingMigrationKeepsThePreviousVersionAndNothingOfTheFile(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := fstest.MapFS{
		"00001_a.sql": sqlFile("a"),
		// The second statement fails: the first must not stay behind.
		"00002_b.sql": {Data: []byte("-- +goose Up\nCREATE TABLE {{tables.b}} (id int);\nINSERT INTO {{tables.nope}} VALUES (1);\n-- +goose Down\nDROP TABLE {{tables.b}};\n")},
	}
	res, err := r.up(files)
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorContains(t, err, "00002_b.sql")
	require.ErrorContains(t, err, `relation "lib.nope" does not exist`, "the server's message")
	require.ErrorContains(t, err, "stays at version 1")
	require.Equal(t, []string{"00001_a.sql"}, res.Applied)
	require.Equal(t, []int64{1}, r.versions())
	require.True(t, r.tableExists("a"))
	require.False(t, r.tableExists("b"), "nothing of the failed file is left behind")

	files["00002_b.sql"] = sqlFile("b") // fixed
	res, err = r.up(files)
	require.NoError(t, err)
	require.Equal(t, []string{"00002_b.sql"}, res.Applied)
	require.Equal(t, []int64{1, 2}, r.versions())
	require.True(t, r.tableExists("b"))
}

// A file marked NO TRANSACTION runs statement by statement: when one fails,
// the ones before it stay, and goose records no version. This is what the
// marker gives up; it is needed only for statements such as
// CREATE INDEX CONCURRENTLY that cannot run in a transaction.
func TestUp_NoTransactionFileKeepsStatementsBeforeAFailure(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := fstest.MapFS{
		"00001_a.sql": {Data: []byte("-- +goose NO TRANSACTION\n-- +goose Up\nCREATE TABLE {{tables.a}} (id int);\nINSERT INTO {{tables.nope}} VALUES (1);\n")},
	}
	_, err := r.up(files)
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorContains(t, err, "marked NO TRANSACTION, so its statements before the failing one were kept")
	require.True(t, r.tableExists("a"), "without a transaction the first statement stays")
	require.Empty(t, r.versions())
}

func TestUp_DriftIsRefusedButWhitespaceIsNot(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b")}
	_, err := r.up(files)
	require.NoError(t, err)

	// Line endings and trailing white space are not drift.
	same := strings.ReplaceAll(string(files["00002_b.sql"].Data), "\n", "  \r\n") + "\n\n"
	_, err = r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": {Data: []byte(same)}})
	require.NoError(t, err)

	edited := fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": {Data: []byte("-- +goose Up\nCREATE TABLE {{tables.b}} (id bigint);\n")}}
	_, err = r.up(edited)
	require.ErrorIs(t, err, ErrDrift)
	require.ErrorContains(t, err, "00002_b.sql")

	// Drift is found on the fast path and under the lock alike: with a
	// pending file as well, nothing of it is applied.
	edited["00003_c.sql"] = sqlFile("c")
	_, err = r.up(edited)
	require.ErrorIs(t, err, ErrDrift)
	require.False(t, r.tableExists("c"))
}

func TestUp_FileNumberedBelowTheAppliedVersionIsRefused(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	_, err := r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00003_c.sql": sqlFile("c")})
	require.NoError(t, err)
	_, err = r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b"), "00003_c.sql": sqlFile("c")})
	require.ErrorIs(t, err, ErrOutOfOrder)
	require.ErrorContains(t, err, "00002_b.sql")
	require.ErrorContains(t, err, "above 3")
	require.False(t, r.tableExists("b"))
}

func TestUp_NewerDatabaseWarnsAndNeverMigratesDown(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	_, err := r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b"), "00003_c.sql": sqlFile("c")})
	require.NoError(t, err)
	res, err := r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b")})
	require.NoError(t, err, "an older replica during a rolling deploy starts")
	require.EqualValues(t, 3, res.Version)
	require.Contains(t, r.logs.String(), "level=WARN")
	require.Contains(t, r.logs.String(), "newer version")
	require.Equal(t, []int64{1, 2, 3}, r.versions())
	require.True(t, r.tableExists("c"), "nothing migrated down")
}

// Checks hold for a schema whose checksums are not recorded yet, too.
func TestUp_WithoutChecksumsFilesAreStillChecked(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	_, err := r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b"), "00003_c.sql": sqlFile("c")})
	require.NoError(t, err)
	dropSums := func() {
		_, err := r.pool.Exec(context.Background(), "DROP TABLE IF EXISTS lib.mylib_goose_checksums")
		require.NoError(t, err)
	}
	dropSums()
	_, err = r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00003_c.sql": sqlFile("c")})
	require.ErrorIs(t, err, ErrUnknownVersion)
	dropSums()
	r.logs.Reset()
	_, err = r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b")})
	require.NoError(t, err)
	require.Contains(t, r.logs.String(), "newer version")

	other := newRun(t)
	_, err = other.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00003_c.sql": sqlFile("c")})
	require.NoError(t, err)
	_, err = other.pool.Exec(context.Background(), "DROP TABLE lib.mylib_goose_checksums")
	require.NoError(t, err)
	_, err = other.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b"), "00003_c.sql": sqlFile("c")})
	require.ErrorIs(t, err, ErrOutOfOrder)
}

func TestUp_InterruptedByTheCallersDeadlineIsNotABrokenFile(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	// The first file is applied before the deadline starts, so that a
	// loaded machine cannot make the deadline strike before the slow file.
	_, err := r.up(fstest.MapFS{"00001_a.sql": sqlFile("a")})
	require.NoError(t, err)
	m, err := Load(module, fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_slow.sql": {Data: []byte("-- +goose Up\nSELECT pg_sleep(5);\n")}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	_, err = m.Up(ctx, r.pool, "lib", Config{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, ErrFailed)
	require.ErrorContains(t, err, "longer deadline")
	require.Equal(t, []int64{1}, r.versions())
}

func TestUp_AppliedVersionWithoutItsFileIsRefused(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	_, err := r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b"), "00003_c.sql": sqlFile("c")})
	require.NoError(t, err)
	_, err = r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00003_c.sql": sqlFile("c")})
	require.ErrorIs(t, err, ErrUnknownVersion)
	require.ErrorContains(t, err, "version 2")
}

func TestUp_SchemaMigratedByPlainGooseGetsChecksums(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b")}
	_, err := r.up(files)
	require.NoError(t, err)
	_, err = r.pool.Exec(context.Background(), "DROP TABLE lib.mylib_goose_checksums")
	require.NoError(t, err)

	res, err := r.up(files)
	require.NoError(t, err)
	require.Empty(t, res.Applied)
	require.EqualValues(t, 2, res.Version, "the applied versions are read even without checksums")
	var n int
	require.NoError(t, r.pool.QueryRow(context.Background(), "SELECT count(*) FROM lib.mylib_goose_checksums").Scan(&n))
	require.Equal(t, 2, n)
	require.Equal(t, []int64{1, 2}, r.versions())
}

func TestUp_CancelledWhileWaitingForTheLockReturnsPromptlyAndHoldsNothing(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	ctx := context.Background()
	// Another migrator holds the lock.
	holder, err := r.pool.Begin(ctx)
	require.NoError(t, err)
	defer holder.Rollback(ctx)
	_, err = holder.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(module, "lib"))
	require.NoError(t, err)

	m, err := Load(module, fstest.MapFS{"00001_a.sql": sqlFile("a")})
	require.NoError(t, err)
	waitCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = m.Up(waitCtx, r.pool, "lib", Config{})
	took := time.Since(start)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "waiting for the migration lock")
	require.Less(t, took, 2*time.Second, "returns promptly after the context ends (300 ms), with room for a loaded machine")
	require.Eventually(t, func() bool { return r.pool.Stat().AcquiredConns() == 1 }, 5*time.Second, 10*time.Millisecond,
		"only the holder's connection is in use: the waiter released its own")

	var locks int
	require.NoError(t, holder.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").Scan(&locks))
	require.Equal(t, 1, locks, "only the holder's lock is held")
	require.NoError(t, holder.Rollback(ctx))

	_, err = m.Up(ctx, r.pool, "lib", Config{})
	require.NoError(t, err, "once the holder is gone the next start migrates")
}

// Files in a transaction run on the one connection that holds the lock: a
// pool of one connection migrates them.
func TestUp_PoolOfOneConnectionMigrates(t *testing.T) {
	t.Parallel()
	one := pgtest.Pool(t, pgtest.DSN(t), func(c *pgxpool.Config) { c.MaxConns = 1 })
	m, err := Load(module, fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b")})
	require.NoError(t, err)
	res, err := m.Up(context.Background(), one, "lib", Config{})
	require.NoError(t, err)
	require.Equal(t, []string{"00001_a.sql", "00002_b.sql"}, res.Applied)
}

// A file marked NO TRANSACTION runs under the lease, on the one connection
// the migrator holds: a pool of one migrates it.
func TestUp_NoTransactionFileOnAPoolOfOneMigrates(t *testing.T) {
	t.Parallel()
	one := pgtest.Pool(t, pgtest.DSN(t), func(c *pgxpool.Config) { c.MaxConns = 1 })
	m, err := Load(module, fstest.MapFS{
		"00001_a.sql": sqlFile("a"),
		"00002_b.sql": {Data: []byte("-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY a_id ON {{tables.a}} (id);\n")},
		"00003_c.sql": sqlFile("c"),
	})
	require.NoError(t, err)
	res, err := m.Up(context.Background(), one, "lib", Config{})
	require.NoError(t, err)
	require.Equal(t, []string{"00001_a.sql", "00002_b.sql", "00003_c.sql"}, res.Applied)
	r := &run{t: t, pool: one}
	require.Equal(t, []int64{1, 2, 3}, r.versions())
	require.True(t, r.tableExists("a_id"), "CREATE INDEX CONCURRENTLY ran outside a transaction")
	var leases int
	require.NoError(t, one.QueryRow(context.Background(), "SELECT count(*) FROM lib.mylib_goose_lease").Scan(&leases))
	require.Zero(t, leases, "the lease is given back with the version")
}

func TestLoad_BadFilesAreRefusedNamingTheFile(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		fsys fstest.MapFS
		says string
	}{
		"no files":          {fstest.MapFS{}, "no migration files"},
		"no number":         {fstest.MapFS{"events.sql": sqlFile("a")}, "events.sql"},
		"zero version":      {fstest.MapFS{"00000_a.sql": sqlFile("a")}, "00000_a.sql"},
		"same version":      {fstest.MapFS{"00001_a.sql": sqlFile("a"), "1_b.sql": sqlFile("b")}, "both have version 1"},
		"bad placeholder":   {fstest.MapFS{"00001_a.sql": {Data: []byte("-- +goose Up\nCREATE TABLE {{tables.a} (id int);\n")}}, "00001_a.sql"},
		"unknown one":       {fstest.MapFS{"00001_a.sql": {Data: []byte("-- +goose Up\nCREATE TABLE {{table.a}} (id int);\n")}}, "unknown placeholder"},
		"uppercase table":   {fstest.MapFS{"00001_a.sql": {Data: []byte("-- +goose Up\nCREATE TABLE {{tables.A}} (id int);\n")}}, "lowercase"},
		"unclosed at end":   {fstest.MapFS{"00001_a.sql": {Data: []byte("-- +goose Up\nSELECT 1; {{")}}, "never closed"},
		"stray close":       {fstest.MapFS{"00001_a.sql": {Data: []byte("-- +goose Up\nSELECT 1 }}")}}, "without"},
		"schema misspelled": {fstest.MapFS{"00001_a.sql": {Data: []byte("-- +goose Up\nCREATE SCHEMA {{schemas}};")}}, "unknown placeholder"},
	} {
		_, err := Load(module, tc.fsys)
		require.ErrorContains(t, err, tc.says, name)
	}
}

func TestChecksum_IgnoresLineEndingsAndTrailingSpace(t *testing.T) {
	t.Parallel()
	base := checksum([]byte("-- +goose Up\nCREATE TABLE t (id int);\n"))
	require.Equal(t, base, checksum([]byte("-- +goose Up\r\nCREATE TABLE t (id int);  \r\n\r\n")))
	require.Equal(t, base, checksum([]byte("-- +goose Up\t\nCREATE TABLE t (id int);")))
	require.NotEqual(t, base, checksum([]byte("-- +goose Up\nCREATE TABLE t (id bigint);\n")))
	require.NotEqual(t, base, checksum([]byte("-- +goose Up\n CREATE TABLE t (id int);\n")), "leading space is content")
}

// The script applies a NO TRANSACTION file outside a transaction, as goose
// does, and records it like the others: Up then finds nothing to do.
func TestScript_ThroughPsqlWithANoTransactionFile(t *testing.T) {
	t.Parallel()
	psql, err := pgtemp.Program("psql")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	files := fstest.MapFS{
		"00001_a.sql": sqlFile("a"),
		"00002_b.sql": {Data: []byte("-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY a_id ON {{tables.a}} (id);\n-- +goose Down\nDROP INDEX {{schema}}.a_id;\n")},
	}
	m, err := Load(module, files)
	require.NoError(t, err)
	script, err := m.Script("lib", 0)
	require.NoError(t, err)
	require.Contains(t, script, "00002_b.sql (version 2), marked NO TRANSACTION")
	path := t.TempDir() + "/lib.sql"
	require.NoError(t, os.WriteFile(path, []byte(script), 0o644))
	r := newRun(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", r.pool.Config().ConnString(), "-f", path).CombinedOutput()
	require.NoError(t, err, "psql:\n%s", out)
	require.Equal(t, []int64{1, 2}, r.versions())
	require.True(t, r.tableExists("a_id"))

	res, err := m.Up(context.Background(), r.pool, "lib", Config{})
	require.NoError(t, err)
	require.Empty(t, res.Applied, "the script recorded every file as Up would")
	require.EqualValues(t, 2, res.Version)
	status, err := m.Status(context.Background(), r.pool, "lib")
	require.NoError(t, err)
	require.Len(t, status, 2)
	for _, s := range status {
		require.Equal(t, Applied, s.State, s.File)
		require.Empty(t, s.Note, "a checksum is recorded for %s", s.File)
	}
}

// Status reads every state without changing anything, and returns the error
// Up would refuse with.
func TestStatus_EveryStateAndTheRefusal(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	ctx := context.Background()
	load := func(fsys fstest.MapFS) *Migrations {
		m, err := Load(module, fsys)
		require.NoError(t, err)
		return m
	}
	two := load(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00003_c.sql": sqlFile("c")})
	st, err := two.Status(ctx, r.pool, "lib")
	require.NoError(t, err)
	require.Equal(t, []string{Pending, Pending}, states(st), "a schema that does not exist: all pending")
	var exists bool
	require.NoError(t, r.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'lib')").Scan(&exists))
	require.False(t, exists, "Status creates nothing")

	_, err = r.up(fstest.MapFS{"00001_a.sql": sqlFile("a"), "00003_c.sql": sqlFile("c")})
	require.NoError(t, err)
	st, err = two.Status(ctx, r.pool, "lib")
	require.NoError(t, err)
	require.Equal(t, []string{Applied, Applied}, states(st))
	require.False(t, st[0].AppliedAt.IsZero())

	// A file below the applied version, an edited one, and an applied version no file has.
	edited := load(fstest.MapFS{"00001_a.sql": {Data: []byte("-- +goose Up\nCREATE TABLE {{tables.a}} (id bigint);\n")}, "00002_b.sql": sqlFile("b")})
	st, err = edited.Status(ctx, r.pool, "lib")
	require.Error(t, err)
	require.Equal(t, []string{Changed, Pending, Applied}, states(st))
	require.Contains(t, st[1].Note, "out of order")
	require.Equal(t, int64(3), st[2].Version)
	require.Empty(t, st[2].File)
	require.Contains(t, st[2].Note, "newer than this code")
}

func states(st []FileStatus) []string {
	out := make([]string, len(st))
	for i, s := range st {
		out[i] = s.State
	}
	return out
}

// The fast path recognises an up-to-date schema by one row: what the server
// computes over the checksum table must be what the code computes over its
// files, for any versions (timestamps included); swapping two files' numbers
// changes it.
func TestDigest_ServerAndCodeAgree(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := fstest.MapFS{"00001_a.sql": sqlFile("a"), "00002_b.sql": sqlFile("b"), "20260101120000_c.sql": sqlFile("c")}
	m, err := Load(module, files)
	require.NoError(t, err)
	_, err = m.Up(context.Background(), r.pool, "lib", Config{})
	require.NoError(t, err)
	sf, err := m.forSchema("lib")
	require.NoError(t, err)
	var count, sum string
	require.NoError(t, r.pool.QueryRow(context.Background(), sf.fastSQL, pgx.QueryExecModeSimpleProtocol).Scan(&count, &sum))
	require.Equal(t, m.digest, count+","+sum)

	for _, v := range [][2]int64{{0, 0}, {1, 0}, {1, 1}, {-5, 3}, {9223372036854775807, 20260101120000}, {123456789012345, 2}, {-9223372036854775808, -1}} {
		var server int64
		require.NoError(t, r.pool.QueryRow(context.Background(), "SELECT pg_catalog.hashint8extended($1, $2)", v[0], v[1]).Scan(&server))
		require.Equal(t, server, hashint8extended(v[0], v[1]), "hashint8extended(%d, %d)", v[0], v[1])
	}

	swapped := fstest.MapFS{"00001_a.sql": sqlFile("b"), "00002_b.sql": sqlFile("a"), "20260101120000_c.sql": sqlFile("c")}
	other, err := Load(module, swapped)
	require.NoError(t, err)
	require.NotEqual(t, m.digest, other.digest)
}
