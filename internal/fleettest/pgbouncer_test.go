package fleettest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
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

// The query modes a DSN behind PgBouncer before 1.21 must choose from: the
// library's own queries, migrations included, work in both, directly and
// through PgBouncer.
func TestQueryModes_TheLibraryWorksInExecAndSimpleProtocol(t *testing.T) {
	for _, target := range fleetTargets {
		for _, mode := range []string{"exec", "simple_protocol"} {
			t.Run(target.name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				dsn := pgtest.SetParam(target.reach(t, pgtest.DSN(t)), "default_query_exec_mode", mode)
				ctx := t.Context()

				c, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithLogger(quiet))
				require.NoError(t, err, "New on an empty schema migrates it")
				defer c.Close()
				base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
				for i := range 5 {
					_, err := c.Record(ctx, mylib.Event{Actor: "alice", Action: fmt.Sprintf("edit-%d", i), Subject: "doc:1",
						Data: json.RawMessage(fmt.Sprintf(`{"n": %d}`, i)), At: base.Add(time.Duration(i) * time.Minute)})
					require.NoError(t, err)
				}
				now, err := c.Record(ctx, mylib.Event{Actor: "bob", Action: "view", Subject: "doc:1"}) // no Data, no time
				require.NoError(t, err)
				require.WithinDuration(t, time.Now(), now.At, time.Minute)

				n, err := c.Count(ctx, "doc:1")
				require.NoError(t, err)
				require.EqualValues(t, 6, n)
				var actions []string
				for p, after := (mylib.Page{}), (*mylib.Cursor)(nil); ; after = p.Next {
					p, err = c.List(ctx, "doc:1", 4, after)
					require.NoError(t, err)
					for _, ev := range p.Events {
						actions = append(actions, ev.Action)
					}
					if p.Next == nil {
						break
					}
				}
				require.Equal(t, []string{"view", "edit-4", "edit-3", "edit-2", "edit-1", "edit-0"}, actions)

				// A host's transaction, on a pool of its own: the record goes with it.
				host := pgtest.Pool(t, dsn)
				for _, commit := range []bool{false, true} {
					tx, err := host.Begin(ctx)
					require.NoError(t, err)
					_, err = c.RecordTx(ctx, tx, mylib.Event{Actor: "host", Action: "debit", Subject: "doc:2"})
					require.NoError(t, err)
					if commit {
						require.NoError(t, tx.Commit(ctx))
					} else {
						require.NoError(t, tx.Rollback(ctx))
					}
				}
				n, err = c.Count(ctx, "doc:2")
				require.NoError(t, err)
				require.EqualValues(t, 1, n, "the rolled back record is gone, the committed one stays")

				purged, err := c.Purge(ctx, base.Add(150*time.Second))
				require.NoError(t, err)
				require.EqualValues(t, 3, purged)

				// Up to date: the fast path, standalone and embedded.
				again, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithLogger(quiet))
				require.NoError(t, err)
				again.Close()
				embedded, err := mylib.New(ctx, mylib.WithManager(manager{host, "tenant"}), mylib.WithLogger(quiet))
				require.NoError(t, err)
				embedded.Close()
				migratetest.RequireMigratedOnce(t, pgtest.Pool(t, dsn), "audit", migrationFiles(t))
				migratetest.RequireMigratedOnce(t, pgtest.Pool(t, dsn), "tenant", migrationFiles(t))
			})
		}
	}
}

// A host pool of 16 connections on a server pool of 4: PgBouncer queues the
// host's transactions, and nothing is lost or fails.
func TestPgBouncer_WorkloadOnAHostPoolLargerThanTheServerPool(t *testing.T) {
	t.Parallel()
	const workers, writes, subjects = 32, 20, 4
	dsn := pgtest.DSN(t)
	host := pgtest.Pool(t, viaBouncer(t, dsn, pgtest.BouncerPoolSize(4)), func(c *pgxpool.Config) { c.MaxConns = 16 })
	ctx := t.Context()
	c, err := mylib.New(ctx, mylib.WithManager(manager{host, "audit"}), mylib.WithLogger(quiet))
	require.NoError(t, err)
	defer c.Close()

	var acked [subjects]atomic.Int64
	var failures atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			fail := func(err error) {
				failures.Add(1)
				firstErr.Do(func() { t.Errorf("worker %d: %v", w, err) })
			}
			for i := range writes {
				s := (w + i) % subjects
				subject := fmt.Sprintf("account:%d", s)
				if _, err := c.Record(ctx, mylib.Event{Actor: fmt.Sprintf("w%d", w), Action: fmt.Sprintf("op-%d", i), Subject: subject}); err != nil {
					fail(err)
					continue
				}
				acked[s].Add(1)
				if _, err := c.List(ctx, subject, 10, nil); err != nil {
					fail(err)
				}
				if _, err := c.Count(ctx, subject); err != nil {
					fail(err)
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, failures.Load(), "no call should fail")

	var total int64
	for s := range subjects {
		subject := fmt.Sprintf("account:%d", s)
		n, err := c.Count(ctx, subject)
		require.NoError(t, err)
		require.Equal(t, acked[s].Load(), n, "%s: stored events == acknowledged writes", subject)
		listed := 0
		for p, after := (mylib.Page{}), (*mylib.Cursor)(nil); ; after = p.Next {
			p, err = c.List(ctx, subject, 100, after)
			require.NoError(t, err)
			listed += len(p.Events)
			if p.Next == nil {
				break
			}
		}
		require.EqualValues(t, n, listed)
		total += n
	}
	require.EqualValues(t, workers*writes, total)
	var rows int64
	require.NoError(t, pgtest.Pool(t, dsn).QueryRow(ctx, `SELECT count(*) FROM audit.events`).Scan(&rows))
	require.Equal(t, total, rows)
}

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
					_, err := set.Up(ctx, pool, "audit", quiet)
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
