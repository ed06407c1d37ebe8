package mylib_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/migratetest"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/probe"
)

// A primary killed while New migrates on it, mid-file and inside the lock,
// and its standby promoted: New fails at once with a retryable error, not a
// broken file, as does a New before the promotion, and the next New, through
// a DSN that reaches whichever server takes writes, migrates on the new
// primary exactly once.
func TestNew_FailoverMidFileIsRetryableAndTheNextNewMigratesOnTheNewPrimary(t *testing.T) {
	t.Parallel()
	primary, standby := pgtest.Standby(t)
	dsn := pgtest.SetParam(pgtest.MultiHostDSN(t, primary.DSN(), standby.DSN()), "target_session_attrs", "read-write")
	release := migratetest.Block(t, primary.DSN(), "audit")
	defer release()
	onStandby := pgtest.Pool(t, standby.DSN())
	awaitReplay(t, onStandby, "the version table Block created",
		"SELECT to_regclass('audit.mylib_goose_db_version') IS NOT NULL")

	result := make(chan error, 1)
	go func() { result <- open(t, dsn, "audit", patient) }()
	migratetest.WaitInsideLock(t, pgtest.Pool(t, primary.DSN()), "audit")
	crash := time.Now()
	require.NoError(t, primary.Kill())
	t.Logf("Kill took %v", time.Since(crash))
	var err error
	select {
	case err = <-result:
	case <-time.After(time.Until(crash.Add(5 * time.Second))):
		t.Fatal("New did not return within 5 s of the primary's crash")
	}
	t.Logf("New returned %v after the crash began: %v", time.Since(crash), err)
	require.ErrorIs(t, err, mylib.ErrRetryable)
	require.ErrorIs(t, err, mylib.ErrLockLost)
	require.ErrorIs(t, err, mylib.ErrMigration)
	for _, not := range append([]error{mylib.ErrMigrationFailed, mylib.ErrNotMigrated}, contextErrors...) {
		require.NotErrorIs(t, err, not)
	}
	require.ErrorContains(t, err, "migration lock lost")
	require.ErrorContains(t, err, "start again")

	err = open(t, dsn, "audit")
	t.Logf("New before the promotion: %v", err)
	require.ErrorIs(t, err, mylib.ErrRetryable, "no server takes writes until the standby is promoted")
	require.ErrorContains(t, err, "start again")

	require.NoError(t, standby.Promote(t.Context()))
	migratetest.RequireNothingMigrated(t, onStandby, "audit")
	c, err := mylib.New(t.Context(), mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithLogger(quietLogger()), mylib.WithProbe)
	require.NoError(t, err, "the next New migrates on the new primary")
	_, err = mylib.ProbeInsert(t.Context(), c, nil, "account:42")
	require.NoError(t, err)
	c.Close()
	requireMigrated(t, onStandby, "audit")
}

// A migration acknowledged by the primary but not yet replicated when it
// fails over is gone on the new primary, as is every commit of that moment
// under asynchronous replication; the next New applies it again, exactly
// once. Replication is cut before the migration, so the loss is certain.
func TestNew_AMigrationLostInAFailoverIsAppliedAgainOnTheNewPrimary(t *testing.T) {
	t.Parallel()
	primary, standby := pgtest.Standby(t)
	dsn := pgtest.SetParam(pgtest.MultiHostDSN(t, primary.DSN(), standby.DSN()), "target_session_attrs", "read-write")
	onPrimary, onStandby := pgtest.Pool(t, primary.DSN()), pgtest.Pool(t, standby.DSN())
	_, err := migrationsUpTo(t, 1).Up(t.Context(), onPrimary, "audit", migrate.Config{Log: quietLogger()})
	require.NoError(t, err)
	awaitReplay(t, onStandby, "version 1 and its checksum",
		"SELECT count(*) = 1 FROM audit.mylib_goose_checksums")
	cutReplication(t, onStandby, onPrimary)

	c, err := mylib.New(t.Context(), mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithLogger(quietLogger()), mylib.WithProbe)
	require.NoError(t, err, "the primary migrates")
	_, err = mylib.ProbeInsert(t.Context(), c, nil, "account:42")
	require.NoError(t, err)
	c.Close()
	migratetest.RequireMigratedOnce(t, onPrimary, "audit", probeFiles)

	require.NoError(t, primary.Kill())
	require.NoError(t, standby.Promote(t.Context()))
	require.Equal(t, map[int64]int{1: 1}, migratetest.VersionCounts(t, onStandby, "audit"),
		"the new primary has only what was replicated")

	c, err = mylib.New(t.Context(), mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithLogger(quietLogger()), mylib.WithProbe)
	require.NoError(t, err, "the next New applies the lost migration again")
	defer c.Close()
	n, err := mylib.ProbeCount(t.Context(), c, "account:42")
	require.NoError(t, err)
	require.Zero(t, n, "the row written after the cut is lost with the migration")
	requireMigrated(t, onStandby, "audit")
}

// On a hot standby, New starts on a schema that is up to date, without the
// lock, and the Client reads (writes get the server's refusal); on a schema
// behind the code it fails closed, saying to migrate on the primary, and
// leaves nothing behind.
func TestNew_OnAHotStandby(t *testing.T) {
	t.Parallel()
	primary, standby := pgtest.Standby(t)
	onPrimary := pgtest.Pool(t, primary.DSN())
	c, err := mylib.New(t.Context(), mylib.WithManager(host{onPrimary, "audit"}), mylib.WithLogger(quietLogger()), mylib.WithProbe)
	require.NoError(t, err)
	_, err = mylib.ProbeInsert(t.Context(), c, nil, "account:42")
	require.NoError(t, err)
	c.Close()
	_, err = migrationsUpTo(t, 1).Up(t.Context(), onPrimary, "behind", migrate.Config{Log: quietLogger()})
	require.NoError(t, err)
	onStandby := pgtest.Pool(t, standby.DSN())
	awaitReplay(t, onStandby, "both schemas",
		"SELECT (SELECT count(*) FROM audit."+probe.Table+") = 1 AND (SELECT count(*) FROM behind.mylib_goose_checksums) = 1")

	t.Run("a schema up to date starts, and reads", func(t *testing.T) {
		// The locked path refuses a read-only session: to start at all is
		// to have taken the fast path.
		c, err := mylib.New(t.Context(), mylib.WithDSN(standby.DSN()), mylib.WithSchema("audit"), mylib.WithLogger(quietLogger()), mylib.WithProbe)
		require.NoError(t, err)
		defer c.Close()
		n, err := mylib.ProbeCount(t.Context(), c, "account:42")
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		_, err = mylib.ProbeInsert(t.Context(), c, nil, "account:43")
		require.ErrorContains(t, err, "read-only", "the standby refuses writes")
	})
	names := probe.Names()
	for _, tt := range []struct {
		schema, pending string
	}{
		{schema: "never", pending: "(pending: " + strings.Join(names, ", ") + ")"},
		{schema: "behind", pending: "(pending: " + strings.Join(names[1:], ", ") + ")"},
	} {
		t.Run("a schema behind is refused: "+tt.schema, func(t *testing.T) {
			err := open(t, standby.DSN(), tt.schema)
			require.Error(t, err)
			t.Logf("New returned: %v", err)
			require.ErrorIs(t, err, mylib.ErrNotMigrated)
			require.ErrorIs(t, err, mylib.ErrMigration)
			for _, not := range append([]error{mylib.ErrMigrationFailed, mylib.ErrRetryable, mylib.ErrLockLost}, contextErrors...) {
				require.NotErrorIs(t, err, not)
			}
			for _, w := range []string{"read-only", "it is a hot standby, in recovery", "migrate on the primary", tt.pending} {
				require.ErrorContains(t, err, w)
			}
			require.Eventually(t, func() bool { return settled(t, onStandby) }, 10*time.Second, 10*time.Millisecond,
				"no migration lock and no open transaction left on the standby")
		})
	}
}

// awaitReplay waits until the standby has replayed what the test depends on:
// query, run on the standby, returns true. Replication is asynchronous, so a
// commit the primary acknowledged reaches the standby a little later.
func awaitReplay(t *testing.T, standby *pgxpool.Pool, what, query string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var ok bool
		return standby.QueryRow(t.Context(), query).Scan(&ok) == nil && ok
	}, 10*time.Second, 10*time.Millisecond, "the standby did not replay %s", what)
}

// cutReplication stops the standby's streaming from the primary: the primary
// then commits what the standby will never have.
func cutReplication(t *testing.T, standby, primary *pgxpool.Pool) {
	t.Helper()
	exec(t, standby, "ALTER SYSTEM SET primary_conninfo = ''")
	exec(t, standby, "SELECT pg_reload_conf()")
	require.Eventually(t, func() bool {
		var streaming bool
		return primary.QueryRow(t.Context(), "SELECT EXISTS (SELECT FROM pg_stat_replication)").Scan(&streaming) == nil && !streaming
	}, 10*time.Second, 10*time.Millisecond, "the standby still streams from the primary")
}

// requireMigrated checks schema on the new primary: every file applied once
// with its checksum, the probe's table there, no lock or transaction left.
func requireMigrated(t *testing.T, pool *pgxpool.Pool, schema string) {
	t.Helper()
	migratetest.RequireMigratedOnce(t, pool, schema, probeFiles)
	var exists bool
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", schema+"."+probe.Table).Scan(&exists))
	require.True(t, exists, "%s.%s", schema, probe.Table)
	require.Eventually(t, func() bool { return settled(t, pool) }, 10*time.Second, 10*time.Millisecond,
		"no migration lock and no open transaction left")
}

// migrationsUpTo loads the probe's migration files numbered up to version,
// as New loads them all: a schema migrated with them is behind by the rest.
func migrationsUpTo(t *testing.T, version int64) *migrate.Migrations {
	t.Helper()
	set, err := migrate.Load(migratetest.Module, probe.UpTo(version))
	require.NoError(t, err)
	return set
}
