package mylib_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/migratetest"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/probe"
)

// A fault during New: how it is provoked on a real server, and what New must
// say of it. The sentinels a host branches on are asserted both ways, and so
// are the words a person acts on; afterwards nothing is half-applied, no lock
// or transaction is left, and where starting again is the fix, it works.
type fault struct {
	name string
	// provoke opens the library while it injects the fault, and returns
	// New's error and a DSN with the rights to start again.
	provoke func(t *testing.T) (dsn string, err error)
	is      []error
	isNot   []error
	words   []string
	// retry: a New with the returned DSN then migrates; otherwise nothing
	// at all must have been created.
	retry bool
	// left lists the tables of the library's names that provoke made, which stay.
	left []string
}

// contextErrors are never matched unless the caller's context ended.
var contextErrors = []error{context.Canceled, context.DeadlineExceeded}

func TestNew_FaultsAreReportedTruthfully(t *testing.T) {
	faults := []fault{
		{
			name: "the backend migrating is terminated mid-file",
			provoke: func(t *testing.T) (string, error) {
				dsn := pgtest.DSN(t)
				return dsn, midFile(t, dsn, dsn, func(watch *pgxpool.Pool, holder int32) {
					_, err := watch.Exec(t.Context(), "SELECT pg_terminate_backend($1)", holder)
					require.NoError(t, err)
				})
			},
			is:    []error{mylib.ErrLockLost, mylib.ErrRetryable, mylib.ErrMigration},
			isNot: append([]error{mylib.ErrMigrationFailed, mylib.ErrNotMigrated}, contextErrors...),
			words: []string{"migration lock lost", "terminating connection", "nothing ran unlocked", "start again"},
			retry: true,
		},
		{
			name: "the server crashes and restarts mid-file",
			provoke: func(t *testing.T) (string, error) {
				_, dsn := pgtest.Restartable(t)
				return dsn, midFile(t, dsn, dsn, func(_ *pgxpool.Pool, holder int32) {
					require.NoError(t, syscall.Kill(int(holder), syscall.SIGKILL), "a backend killed: the postmaster restarts them all")
				})
			},
			is:    []error{mylib.ErrLockLost, mylib.ErrRetryable, mylib.ErrMigration},
			isNot: append([]error{mylib.ErrMigrationFailed}, contextErrors...),
			words: []string{"migration lock lost", "start again"},
			retry: true,
		},
		{
			name: "the server is restarted mid-file",
			provoke: func(t *testing.T) (string, error) {
				srv, dsn := pgtest.Restartable(t)
				return dsn, midFile(t, dsn, dsn, func(*pgxpool.Pool, int32) {
					require.NoError(t, srv.Restart(t.Context()))
				})
			},
			is:    []error{mylib.ErrLockLost, mylib.ErrRetryable, mylib.ErrMigration},
			isNot: append([]error{mylib.ErrMigrationFailed}, contextErrors...),
			words: []string{"migration lock lost", "start again"},
			retry: true,
		},
		{
			name: "statement_timeout is shorter than a migration",
			provoke: func(t *testing.T) (string, error) {
				dsn := pgtest.DSN(t)
				return dsn, midFile(t, dsn, pgtest.SetParam(dsn, "options", "-c statement_timeout=300ms"), nil)
			},
			is:    []error{mylib.ErrMigration},
			isNot: append([]error{mylib.ErrMigrationFailed, mylib.ErrRetryable, mylib.ErrLockLost}, contextErrors...),
			words: []string{"statement_timeout, which is 300ms for role", "raise it for the migrating role", "split the file", probe.Names()[0]},
			retry: true,
		},
		{
			name: "a runtime role without CREATE on the schema, which is empty",
			provoke: func(t *testing.T) (string, error) {
				dsn := pgtest.DSN(t)
				admin := pgtest.Pool(t, dsn)
				exec(t, admin, "CREATE SCHEMA audit")
				role, roleDSN := pgtest.Role(t, dsn, "app")
				exec(t, admin, "GRANT USAGE ON SCHEMA audit TO "+role)
				return dsn, open(t, roleDSN, "audit")
			},
			is:    []error{mylib.ErrNotMigrated, mylib.ErrMigration},
			isNot: append([]error{mylib.ErrMigrationFailed, mylib.ErrRetryable}, contextErrors...),
			words: []string{`schema "audit" is behind`, strings.Join(probe.Names(), ", "), "_app", "cannot migrate it", "`mylib migrate -schema audit`", "schema owner"},
		},
		{
			name: "a role without CREATE on the database, and no schema",
			provoke: func(t *testing.T) (string, error) {
				dsn := pgtest.DSN(t)
				_, roleDSN := pgtest.Role(t, dsn, "app")
				return dsn, open(t, roleDSN, "audit")
			},
			is:    []error{mylib.ErrNotMigrated, mylib.ErrMigration},
			isNot: append([]error{mylib.ErrMigrationFailed, mylib.ErrRetryable}, contextErrors...),
			words: []string{`schema "audit" does not exist`, "permission denied", "no CREATE on the database", "CREATE SCHEMA audit AUTHORIZATION"},
		},
		{
			name: "a read-only session (default_transaction_read_only) on an empty database",
			provoke: func(t *testing.T) (string, error) {
				dsn := pgtest.DSN(t)
				return dsn, open(t, pgtest.SetParam(dsn, "options", "-c default_transaction_read_only=on"), "audit")
			},
			is:    []error{mylib.ErrNotMigrated, mylib.ErrMigration},
			isNot: append([]error{mylib.ErrMigrationFailed, mylib.ErrRetryable}, contextErrors...),
			words: []string{"read-only", "default_transaction_read_only", "migrate on the primary", probe.Names()[0]},
		},
		{
			name: "the host lends a schema that holds a table named like the library's",
			provoke: func(t *testing.T) (string, error) {
				dsn := pgtest.DSN(t)
				pool := pgtest.Pool(t, dsn)
				exec(t, pool, "CREATE TABLE public."+probe.Table+" (id int)")
				_, err := mylib.New(t.Context(), mylib.WithManager(host{pool, "public"}), mylib.WithLogger(quietLogger()), mylib.WithProbe)
				return dsn, err
			},
			is:    []error{mylib.ErrInvalidSchema},
			isNot: append([]error{mylib.ErrMigrationFailed, mylib.ErrRetryable, mylib.ErrNotMigrated}, contextErrors...),
			words: []string{`schema "public" already holds public.` + probe.Table, "a schema of its own", "nothing was created"},
			left:  []string{"public." + probe.Table},
		},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			dsn, err := f.provoke(t)
			require.Error(t, err)
			t.Logf("New returned: %v", err)
			for _, want := range f.is {
				require.ErrorIs(t, err, want)
			}
			for _, not := range f.isNot {
				require.NotErrorIs(t, err, not)
			}
			for _, w := range f.words {
				require.ErrorContains(t, err, w)
			}
			require.True(t, strings.HasPrefix(err.Error(), "mylib: "), "one prefix: %q", err)
			require.Equal(t, 1, strings.Count(err.Error(), "mylib: "), "one prefix: %q", err)

			watch := pgtest.Pool(t, dsn)
			require.Eventually(t, func() bool { return settled(t, watch) }, 10*time.Second, 10*time.Millisecond,
				"no migration lock and no open transaction left (the server may be recovering from a crash first)")
			if !f.retry {
				require.ElementsMatch(t, f.left, libraryTables(t, watch), "nothing created")
				return
			}
			migratetest.RequireNothingMigrated(t, watch, "audit")
			require.NoError(t, open(t, dsn, "audit"), "starting again migrates")
			migratetest.RequireMigratedOnce(t, watch, "audit", probeFiles)
		})
	}
}

// A migration that needs a table a long transaction of the host holds: each
// try of the file waits at most lock_timeout and gives way, so the host's
// queries on the table go on, until New's deadline; the error is retryable,
// says that the deadline ended it, and names the session that blocked it.
// Nothing of the file is kept, and once the reader is gone, New migrates.
func TestNew_ALockHeldUntilTheDeadlineIsNamed(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	pool := pgtest.Pool(t, dsn)
	_, err := migrationsUpTo(t, 1).Up(t.Context(), pool, "audit", migrate.Config{})
	require.NoError(t, err)
	reader, err := pool.Begin(t.Context())
	require.NoError(t, err)
	defer reader.Rollback(context.Background())
	_, err = reader.Exec(t.Context(), "SET application_name = 'monthly report'; SELECT count(*) FROM audit."+probe.Table)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err = mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithLogger(quietLogger()), mylib.WithProbe)
	t.Logf("New returned: %v", err)
	for _, is := range []error{mylib.ErrRetryable, mylib.ErrMigration, context.DeadlineExceeded} {
		require.ErrorIs(t, err, is)
	}
	for _, not := range []error{mylib.ErrMigrationFailed, mylib.ErrLockLost, mylib.ErrNotMigrated, context.Canceled} {
		require.NotErrorIs(t, err, not)
	}
	for _, w := range []string{probe.Names()[1], "ran out of lock_timeout (100ms)", "so that the host's queries could go on",
		"blocked by pid", `application_name "monthly report"`, "idle in transaction", "transaction open", "AccessShareLock on " + probe.Table,
		"start again once that transaction ends", "pg_terminate_backend", "a longer deadline"} {
		require.ErrorContains(t, err, w)
	}
	require.Equal(t, 1, strings.Count(err.Error(), "mylib: "), "one prefix: %q", err)
	require.Equal(t, map[int64]int{1: 1}, migratetest.VersionCounts(t, pool, "audit"), "nothing of the file kept")
	require.Equal(t, 0, migratetest.AdvisoryLocks(t, pool))

	require.NoError(t, reader.Rollback(t.Context()))
	require.NoError(t, open(t, dsn, "audit"), "once the reader is gone, New migrates")
	migratetest.RequireMigratedOnce(t, pool, "audit", probeFiles)
}

// patient makes a migration wait for the blocked version table (see
// migratetest.Block) as it would for a slow file, rather than give way.
var patient = mylib.WithLockTimeout(time.Hour)

// midFile opens the library on reach while its first file waits inside the
// migration lock, calls inject (if not nil) with the lock holder's backend,
// and returns New's error. admin reaches the same database with all rights.
func midFile(t *testing.T, admin, reach string, inject func(watch *pgxpool.Pool, holder int32)) error {
	t.Helper()
	release := migratetest.Block(t, admin, "audit")
	defer release()
	result := make(chan error, 1)
	go func() { result <- open(t, reach, "audit", patient) }()
	if inject != nil {
		watch := pgtest.Pool(t, admin)
		inject(watch, migratetest.WaitInsideLock(t, watch, "audit"))
	}
	select {
	case err := <-result:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("New did not return within 30 s of the fault")
		return nil
	}
}

// settled reports whether pool's database answers and holds no advisory lock
// and no session idle in a transaction.
func settled(t *testing.T, pool *pgxpool.Pool) bool {
	var locks, idle int
	err := pool.QueryRow(t.Context(), `SELECT
	(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),
	(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%')`).Scan(&locks, &idle)
	return err == nil && locks == 0 && idle == 0
}

// open runs New standalone on dsn with the probe's files and closes the
// Client it may return.
func open(t *testing.T, dsn, schema string, opts ...mylib.Option) error {
	c, err := mylib.New(t.Context(), append([]mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema(schema), mylib.WithLogger(quietLogger()), mylib.WithProbe}, opts...)...)
	if err == nil {
		c.Close()
	}
	return err
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string) {
	t.Helper()
	_, err := pool.Exec(t.Context(), sql)
	require.NoError(t, err, sql)
}

// libraryTables lists the tables of the library's names, and the probe's, in
// any schema.
func libraryTables(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname IN ('mylib_goose_db_version', 'mylib_goose_checksums', $1) ORDER BY 1`, probe.Table)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

// A role whose search_path puts a schema of look-alikes before pg_catalog (an
// empty pg_locks, a pg_try_advisory_xact_lock that never grants) changes
// nothing: the library's SQL names the catalog's objects with pg_catalog.
func TestNew_SearchPathCannotStandInForTheCatalog(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	admin := pgtest.Pool(t, dsn)
	exec(t, admin, `CREATE SCHEMA evil;
CREATE TABLE evil.pg_locks (locktype text, granted bool, pid int, classid oid, objid oid, objsubid int, database oid);
CREATE TABLE evil.pg_namespace (oid oid, nspname name);
CREATE FUNCTION evil.pg_try_advisory_xact_lock(bigint) RETURNS bool LANGUAGE sql AS 'SELECT false';
CREATE FUNCTION evil.current_setting(text) RETURNS text LANGUAGE sql AS 'SELECT ''on''::text'`)
	reach := pgtest.SetParam(dsn, "options", "-c search_path=evil,pg_catalog,public")

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := mylib.New(ctx, mylib.WithDSN(reach), mylib.WithSchema("audit"), mylib.WithLogger(quietLogger()), mylib.WithProbe)
	require.NoError(t, err)
	_, err = mylib.ProbeInsert(ctx, c, nil, "c")
	require.NoError(t, err)
	c.Close()
	migratetest.RequireMigratedOnce(t, admin, "audit", probeFiles)
}
