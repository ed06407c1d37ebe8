package fleettest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/migratetest"
	"github.com/pgdual/mylib/internal/pgtest"
)

// manager is a host's Manager.
type manager struct {
	pool   *pgxpool.Pool
	schema string
}

func (m manager) Pool() *pgxpool.Pool { return m.pool }
func (m manager) Schema() string      { return m.schema }

var quiet = slog.New(slog.DiscardHandler)

// A host that ends idle transactions quickly (idle_in_transaction_session_timeout
// = 200ms) does not end the migration lock's transaction, idle by design
// while a migration runs longer than that and longer than the heartbeat.
func TestMigrationLock_OutlastsTheHostsIdleInTransactionTimeout(t *testing.T) {
	for _, target := range fleetTargets {
		t.Run(target.name, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.DSN(t)
			watch := pgtest.Pool(t, dsn)
			var reach string
			if target.name == "direct" {
				reach = pgtest.SetParam(dsn, "options", "-c idle_in_transaction_session_timeout=200ms")
			} else {
				// PgBouncer does not pass startup options on: a host sets it on the database or the role.
				_, err := watch.Exec(t.Context(), fmt.Sprintf("ALTER DATABASE %s SET idle_in_transaction_session_timeout = '200ms'",
					pgx.Identifier{currentDatabase(t, watch)}.Sanitize()))
				require.NoError(t, err)
				reach = target.reach(t, dsn)
			}
			requireIdleTransactionsEnded(t, reach)

			release := migratetest.Block(t, dsn, "audit")
			result := openAsync(reach, "audit")
			migratetest.WaitInsideLock(t, watch, "audit")
			select {
			case err := <-result:
				t.Fatalf("New returned while its migration was blocked: %v", err)
			case <-time.After(1500 * time.Millisecond): // the lock's transaction idles 7 timeouts long
			}
			release()
			require.NoError(t, <-result)
			migratetest.RequireMigratedOnce(t, watch, "audit", migrationFiles(t))
			require.Zero(t, migratetest.AdvisoryLocks(t, watch))
		})
	}
}

// When the lock's transaction is ended anyway while a migration runs (here
// its backend is terminated), New fails saying so, and the migration in
// flight is rolled back: nothing ran unlocked to completion.
func TestMigrationLock_LostMidMigrationFailsNewAndKeepsNothing(t *testing.T) {
	for _, target := range fleetTargets {
		t.Run(target.name, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.DSN(t)
			reach := target.reach(t, dsn)
			watch := pgtest.Pool(t, dsn)

			release := migratetest.Block(t, dsn, "audit")
			result := openAsync(reach, "audit")
			holder := migratetest.WaitInsideLock(t, watch, "audit")
			_, err := watch.Exec(t.Context(), "SELECT pg_terminate_backend($1)", holder)
			require.NoError(t, err)
			terminated := time.Now()
			err = <-result
			failedAfter := time.Since(terminated)
			release()
			t.Logf("%s: New failed %v after the lock's backend was terminated: %v", target.name, failedAfter.Round(time.Millisecond), err)

			require.ErrorIs(t, err, migrate.ErrLockLost)
			require.ErrorIs(t, err, mylib.ErrMigration)
			require.NotErrorIs(t, err, migrate.ErrFailed, "the file is fine: the error should not say to fix it")
			require.ErrorContains(t, err, "migration lock lost")
			require.Less(t, failedAfter, 5*time.Second, "the heartbeat should notice within about a second")
			migratetest.RequireNothingMigrated(t, watch, "audit")
			// The terminated backend holds the lock until it has exited, a
			// moment after its client saw the error; start again once it has.
			require.Eventually(t, func() bool { return migratetest.AdvisoryLocks(t, watch) == 0 }, 10*time.Second, 10*time.Millisecond,
				"the terminated backend's lock should go with it")

			c, err := mylib.New(t.Context(), mylib.WithDSN(reach), mylib.WithSchema("audit"), mylib.WithLogger(quiet))
			require.NoError(t, err, "the next start migrates")
			c.Close()
			migratetest.RequireMigratedOnce(t, watch, "audit", migrationFiles(t))
			require.Zero(t, migratetest.AdvisoryLocks(t, watch))
		})
	}
}

// When the lock's transaction ends while a migration runs, that migration
// must not commit: a migrator that takes the freed lock would run it again.
// The heartbeat notices only within a second, so each migration checks the
// lock in its own transaction before it records its version.
func TestMigrationLock_NoMigrationCommitsAfterTheLockIsLost(t *testing.T) {
	files := fstest.MapFS{}
	for v := 1; v <= 3; v++ {
		files[fmt.Sprintf("%05d_slow.sql", v)] = &fstest.MapFile{Data: []byte(fmt.Sprintf(
			"-- +goose Up\nCREATE TABLE {{tables.t%d}} (id int);\nSELECT pg_sleep(0.4);\n", v))}
	}
	set, err := migrate.Load(migratetest.Module, files)
	require.NoError(t, err)
	for _, target := range fleetTargets {
		t.Run(target.name, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.DSN(t)
			reach := target.reach(t, dsn)
			watch := pgtest.Pool(t, dsn)
			up := func() <-chan error {
				result := make(chan error, 1)
				pool := pgtest.Pool(t, reach)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					_, err := set.Up(ctx, pool, "audit", migrate.Config{Log: quiet})
					result <- err
				}()
				return result
			}

			first := up()
			var holder *int32
			require.Eventually(t, func() bool {
				require.NoError(t, watch.QueryRow(t.Context(), `SELECT min(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&holder))
				return holder != nil && sleeping(t, watch)
			}, 10*time.Second, 5*time.Millisecond, "the first migrator should be inside the lock, migrating")
			// Returns once the backend has exited, and its lock with it.
			_, err := watch.Exec(t.Context(), "SELECT pg_terminate_backend($1, 10000)", *holder)
			require.NoError(t, err)
			second := up() // takes the freed lock while the first's migration is still running

			require.ErrorIs(t, <-first, migrate.ErrLockLost)
			require.NoError(t, <-second, "the second migrator should apply every file")
			require.Equal(t, map[int64]int{1: 1, 2: 1, 3: 1}, migratetest.VersionCounts(t, watch, "audit"))
			require.Zero(t, migratetest.AdvisoryLocks(t, watch))
		})
	}
}

// PgBouncer's idle_transaction_timeout disconnects a client whose transaction
// idles too long. The migration lock's transaction never idles while a file
// runs (the file runs in it), so a timeout far shorter than the migration
// does not end it.
func TestMigrationLock_PgBouncerIdleTransactionTimeoutDoesNotEndIt(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	reach := viaBouncer(t, dsn, pgtest.BouncerIdleTransactionTimeout(300*time.Millisecond))
	watch := pgtest.Pool(t, dsn)

	release := migratetest.Block(t, dsn, "audit")
	result := openAsync(reach, "audit")
	migratetest.WaitInsideLock(t, watch, "audit")
	select {
	case err := <-result:
		t.Fatalf("New returned while its migration was blocked: %v", err)
	case <-time.After(1500 * time.Millisecond): // five timeouts long
	}
	release()
	require.NoError(t, <-result)
	migratetest.RequireMigratedOnce(t, watch, "audit", migrationFiles(t))
	require.Zero(t, migratetest.AdvisoryLocks(t, watch))
}

// openAsync opens a standalone Client in the background and sends New's
// error, closing the Client.
func openAsync(dsn, schema string) <-chan error {
	result := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema(schema), mylib.WithLogger(quiet))
		if err == nil {
			c.Close()
		}
		result <- err
	}()
	return result
}

// requireIdleTransactionsEnded checks that the server ends a transaction
// left idle on dsn, so a test of the timeout tests something.
func requireIdleTransactionsEnded(t *testing.T, dsn string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(t.Context(), "BEGIN")
	require.NoError(t, err)
	time.Sleep(500 * time.Millisecond)
	_, err = conn.Exec(t.Context(), "SELECT 1")
	require.Error(t, err, "an idle transaction should have been ended by the timeout")
}

func currentDatabase(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var name string
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT current_database()").Scan(&name))
	return name
}
