package migrate

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// file is a migration file of the given text.
func mapFile(text string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(text)} }

// runsFiles: a table that records which statements ran, a file marked NO
// TRANSACTION with the given statements, and a last file.
func runsFiles(noTx string) fstest.MapFS {
	return fstest.MapFS{
		"00001_runs.sql": mapFile("-- +goose Up\nCREATE TABLE {{tables.runs}} (mark int);\n"),
		"00002_notx.sql": mapFile("-- +goose NO TRANSACTION\n-- +goose Up\n" + noTx),
		"00003_c.sql":    sqlFile("c"),
	}
}

// marks lists what the runs table recorded, in order.
func (r *run) marks() []int {
	r.t.Helper()
	rows, err := r.pool.Query(context.Background(), "SELECT mark FROM lib.runs ORDER BY mark")
	require.NoError(r.t, err)
	marks, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(r.t, err)
	return marks
}

// freezeAt makes m stop before the statement that contains mark, once, as a
// frozen process would, until thaw is closed; frozen is closed when it stops.
func freezeAt(m *Migrations, mark string) (frozen, thaw chan struct{}) {
	frozen, thaw = make(chan struct{}), make(chan struct{})
	var once sync.Once
	m.hook = func(stmt string) {
		if strings.Contains(stmt, mark) {
			once.Do(func() {
				close(frozen)
				<-thaw
			})
		}
	}
	return frozen, thaw
}

// takeOver runs a first migrator of files until it freezes before the
// statement that contains mark, then a second one, which must take over:
// it returns how long the second took and what it applied, and, once the
// first has resumed, the first's error.
func takeOver(t *testing.T, r *run, files fstest.MapFS, mark string, cfg Config) (res Result, resumed error) {
	t.Helper()
	first, err := Load(module, files)
	require.NoError(t, err)
	frozen, thaw := freezeAt(first, mark)
	done := make(chan error, 1)
	go func() {
		_, err := first.Up(context.Background(), r.pool, "lib", cfg)
		done <- err
	}()
	<-frozen

	second, err := Load(module, files)
	require.NoError(t, err)
	start := time.Now()
	res, err = second.Up(context.Background(), r.pool, "lib", cfg)
	took := time.Since(start)
	close(thaw)
	resumed = <-done
	require.NoError(t, err)
	t.Logf("the second migrator took over after %v (lease %v)", took, cfg.Lease)
	require.GreaterOrEqual(t, took, cfg.Lease/2, "it waited for the frozen holder's lease")
	require.Less(t, took, 10*time.Second)
	return res, resumed
}

// A statement that runs longer than the lease (a concurrent index build on
// a big table, here pg_sleep) is its holder at work: pg_stat_activity shows
// it running with the lease's tag. Another migrator waits for it rather than
// take the lease over, and the file runs once.
func TestUp_ALongStatementUnderTheLeaseIsNotTakenOver(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	cfg := Config{Lease: 300 * time.Millisecond}
	files := runsFiles("INSERT INTO {{tables.runs}} VALUES (2);\nSELECT pg_sleep(2);\n")
	first, err := Load(module, files)
	require.NoError(t, err)
	second, err := Load(module, files)
	require.NoError(t, err)

	done := make(chan error, 1)
	var res Result
	go func() {
		var err error
		res, err = first.Up(context.Background(), r.pool, "lib", cfg)
		done <- err
	}()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, r.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
WHERE state = 'active' AND query LIKE '/* ' || $1 || ': migration lease % */ %pg_sleep(2)%'`, module).Scan(&n))
		return n == 1
	}, 10*time.Second, 5*time.Millisecond, "the first migrator runs the long statement, tagged")

	other, err := second.Up(context.Background(), r.pool, "lib", cfg)
	require.NoError(t, err)
	require.NoError(t, <-done)
	require.Equal(t, []string{"00001_runs.sql", "00002_notx.sql", "00003_c.sql"}, res.Applied)
	require.Empty(t, other.Applied, "the second found the work done")
	require.Equal(t, []int{2}, r.marks(), "the file ran once")
	require.Equal(t, []int64{1, 2, 3}, r.versions())
}

// A holder frozen between two statements of a file marked NO TRANSACTION
// holds no transaction and stops renewing its lease: the next migrator takes
// the lease over once it expires, runs the file again from its start (such
// files are written to be safe to run twice) and the rest. The frozen one,
// when it resumes, finds its lease gone before its next statement: it runs
// nothing more and says the lock was lost.
func TestUp_AFrozenHolderLosesTheLeaseAndFindsOut(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := runsFiles("INSERT INTO {{tables.runs}} VALUES (21);\nINSERT INTO {{tables.runs}} VALUES (22);\n")
	res, err := takeOver(t, r, files, "VALUES (22)", Config{Lease: 500 * time.Millisecond})
	require.Equal(t, []string{"00002_notx.sql", "00003_c.sql"}, res.Applied)
	require.ErrorIs(t, err, ErrLockLost)
	require.ErrorIs(t, err, ErrRetryable)
	require.NotErrorIs(t, err, ErrFailed)
	require.ErrorContains(t, err, "00002_notx.sql")
	require.ErrorContains(t, err, "taken over by another migrator")
	require.ErrorContains(t, err, "start again")
	require.Equal(t, []int{21, 21, 22}, r.marks(), "the frozen one ran nothing after it resumed")
	require.Equal(t, []int64{1, 2, 3}, r.versions(), "each version recorded once")
}

// A holder frozen in the middle of a file that runs in the lock's
// transaction leaves that transaction idle: the server ends it after the
// lease (idle_in_transaction_session_timeout), which rolls the file back and
// frees the lock for the next migrator. The frozen one, when it resumes,
// finds its connection gone: the lock was lost, nothing of its file stays.
func TestUp_AFrozenHolderInTheLocksTransactionLosesTheLock(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := fstest.MapFS{
		"00001_runs.sql": mapFile("-- +goose Up\nCREATE TABLE {{tables.runs}} (mark int);\nINSERT INTO {{tables.runs}} VALUES (11);\nINSERT INTO {{tables.runs}} VALUES (12);\n"),
		"00002_c.sql":    sqlFile("c"),
	}
	res, err := takeOver(t, r, files, "VALUES (12)", Config{Lease: 500 * time.Millisecond})
	require.Equal(t, []string{"00001_runs.sql", "00002_c.sql"}, res.Applied)
	require.ErrorIs(t, err, ErrLockLost)
	require.ErrorIs(t, err, ErrRetryable)
	require.NotErrorIs(t, err, ErrFailed)
	require.ErrorContains(t, err, "migration lock lost")
	require.Equal(t, []int{11, 12}, r.marks(), "the frozen one's file was rolled back")
	require.Equal(t, []int64{1, 2}, r.versions())
}

// The issue a concurrent unique index build leaves: it fails on duplicate
// rows, leaving an invalid index that enforces nothing, and IF NOT EXISTS
// would then skip it on the next run. The migrator drops the index the
// failed build left, says so, and builds it anew once the rows are fixed;
// it never records a version while the file left an invalid index.
func TestUp_AFailedConcurrentUniqueIndexIsNeverRecordedAsApplied(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := fstest.MapFS{
		"00001_t.sql": mapFile("-- +goose Up\nCREATE TABLE {{tables.t}} (k int);\nINSERT INTO {{tables.t}} VALUES (1), (1), (2);\n"),
		"00002_unique.sql": mapFile("-- +goose NO TRANSACTION\n-- +goose Up\n" +
			"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_k ON {{tables.t}} (k);\n"),
	}
	_, err := r.up(files)
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorContains(t, err, "00002_unique.sql")
	require.ErrorContains(t, err, "could not create unique index")
	require.ErrorContains(t, err, "the invalid index lib.t_k that its concurrent build left was dropped")
	require.False(t, r.tableExists("t_k"), "no invalid index stays behind")
	require.Equal(t, []int64{1}, r.versions())

	// An invalid index left by an older release, which did not drop it.
	_, err = r.pool.Exec(context.Background(), "CREATE UNIQUE INDEX CONCURRENTLY t_k ON lib.t (k)")
	require.Error(t, err)
	require.True(t, r.tableExists("t_k"))
	require.Equal(t, []string{"t_k"}, r.invalidIndexes())
	m, err := Load(module, files)
	require.NoError(t, err)
	st, err := m.Status(context.Background(), r.pool, "lib")
	require.NoError(t, err)
	require.Equal(t, []string{Applied, Pending, Invalid}, states(st), "status reports the invalid index")
	require.Equal(t, "lib.t_k", st[2].Index)
	require.Equal(t, "00002_unique.sql", st[2].File, "the file that names it")
	require.Contains(t, st[2].Note, "the next migrate drops it and builds it again")

	_, err = r.pool.Exec(context.Background(), "DELETE FROM lib.t WHERE ctid = (SELECT min(ctid) FROM lib.t WHERE k = 1)")
	require.NoError(t, err)
	res, err := r.up(files)
	require.NoError(t, err)
	require.Equal(t, []string{"00002_unique.sql"}, res.Applied)
	require.Empty(t, r.invalidIndexes(), "the index was dropped and built again, valid")
	require.True(t, r.tableExists("t_k"))
	require.Contains(t, r.logs.String(), "dropping the invalid index lib.t_k, which an earlier run of 00002_unique.sql left")
	_, err = r.pool.Exec(context.Background(), "INSERT INTO lib.t VALUES (2)")
	require.ErrorContains(t, err, "duplicate key", "the index enforces uniqueness")
}

func (r *run) invalidIndexes() []string {
	r.t.Helper()
	rows, err := r.pool.Query(context.Background(), `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE NOT i.indisvalid AND c.relnamespace = 'lib'::regnamespace`)
	require.NoError(r.t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(r.t, err)
	return names
}

// A migration that needs a table a long transaction of the host reads: its
// ALTER would queue for ACCESS EXCLUSIVE behind the reader, and every later
// query on the table behind the ALTER. With the migration's lock_timeout, the
// host's queries wait at most that long at a time, and the migration
// completes soon after the reader ends. The figures are printed; the bounds
// asserted leave room for a loaded machine, and fail the way of a migration
// that waits without a bound (the workers would wait the whole 3 s).
func TestUp_AMigrationWaitingForALockKeepsTheHostsQueriesMoving(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	before := fstest.MapFS{"00001_t.sql": mapFile("-- +goose Up\nCREATE TABLE {{tables.t}} (id bigint GENERATED ALWAYS AS IDENTITY, v int);\nINSERT INTO {{tables.t}} (v) SELECT g FROM generate_series(1, 1000) g;\n")}
	_, err := r.up(before)
	require.NoError(t, err)
	after := fstest.MapFS{"00001_t.sql": before["00001_t.sql"], "00002_w.sql": mapFile("-- +goose Up\nALTER TABLE {{tables.t}} ADD COLUMN w int;\n")}

	const hold = 3 * time.Second
	ctx := context.Background()
	stop := make(chan struct{})
	var mu sync.Mutex
	var latencies []time.Duration
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				start := time.Now()
				var err error
				if w%2 == 0 {
					_, err = r.pool.Exec(ctx, "SELECT count(*) FROM lib.t")
				} else {
					_, err = r.pool.Exec(ctx, "INSERT INTO lib.t (v) VALUES (1)")
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				latencies = append(latencies, time.Since(start))
				mu.Unlock()
			}
		})
	}
	reader, err := r.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = reader.Exec(ctx, "SELECT count(*) FROM lib.t")
	require.NoError(t, err)
	readerEnded := make(chan time.Time, 1)
	go func() {
		time.Sleep(hold)
		_ = reader.Rollback(ctx)
		readerEnded <- time.Now()
	}()

	m, err := Load(module, after)
	require.NoError(t, err)
	res, err := m.Up(ctx, r.pool, "lib", Config{})
	migrated := time.Now()
	require.NoError(t, err)
	require.Equal(t, []string{"00002_w.sql"}, res.Applied)
	ended := <-readerEnded
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()

	slices.Sort(latencies)
	worst := latencies[len(latencies)-1]
	p99 := latencies[len(latencies)*99/100]
	fmt.Printf("lock wait: a %v reader, 4 workers every 20 ms: %d queries, worst latency %v, p99 %v; the migration completed %v after the reader ended (lock_timeout %v)\n",
		hold, len(latencies), worst.Round(time.Millisecond), p99.Round(time.Millisecond), migrated.Sub(ended).Round(time.Millisecond), DefaultLockTimeout)
	require.Less(t, worst, hold/2, "no query of the host waited for the whole blocker")
	require.Less(t, migrated.Sub(ended), 2*time.Second, "the migration follows the blocker's end")
	require.Greater(t, len(latencies), 200, "the workers kept working")
}

// A deadlock with another session, which the server resolves by failing the
// migration's statement, is a conflict, not a broken file: the file gives
// way and is tried again, and completes once the other session is done.
func TestUp_ADeadlockGivesWayAndTheFileIsTriedAgain(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	before := fstest.MapFS{"00001_ab.sql": mapFile("-- +goose Up\nCREATE TABLE {{tables.a}} (id int);\nCREATE TABLE {{tables.b}} (id int);\n")}
	_, err := r.up(before)
	require.NoError(t, err)
	after := fstest.MapFS{"00001_ab.sql": before["00001_ab.sql"], "00002_both.sql": mapFile(
		"-- +goose Up\nLOCK TABLE {{tables.a}};\nSELECT pg_sleep(0.3);\nLOCK TABLE {{tables.b}};\n")}
	m, err := Load(module, after)
	require.NoError(t, err)

	ctx := context.Background()
	other, err := r.pool.Begin(ctx)
	require.NoError(t, err)
	defer other.Rollback(ctx)
	// The migration's backend, not this one, finds the deadlock.
	_, err = other.Exec(ctx, "SET LOCAL deadlock_timeout = '1min'; LOCK TABLE lib.b")
	require.NoError(t, err)
	done := make(chan error, 1)
	var res Result
	go func() {
		var err error
		res, err = m.Up(ctx, r.pool, "lib", Config{LockTimeout: time.Minute})
		done <- err
	}()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, r.pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE relation = 'lib.a'::regclass AND mode = 'AccessExclusiveLock' AND granted`).Scan(&n))
		return n == 1
	}, 10*time.Second, time.Millisecond, "the migration holds a")
	_, err = other.Exec(ctx, "LOCK TABLE lib.a") // waits for the migration, which waits for b: a deadlock
	require.NoError(t, err, "the server failed the migration's statement, not this one")
	require.NoError(t, other.Commit(ctx))
	require.NoError(t, <-done, "the file was tried again once the other session was done")
	require.Equal(t, []string{"00002_both.sql"}, res.Applied)
	require.Equal(t, []int64{1, 2}, r.versions())
}

// A migrator whose deadline ends it under the lease, mid-statement, loses
// its connection, and its statement stops on the server within a second: it
// lets the lease lapse on its way out, so the next migrator takes over then,
// not when the lease would have expired (15 s).
func TestUp_ADeadlineUnderTheLeaseLetsItLapse(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := runsFiles("SELECT pg_sleep(30);\nINSERT INTO {{tables.runs}} VALUES (2);\n")
	m, err := Load(module, files)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = m.Up(ctx, r.pool, "lib", Config{})
	require.ErrorIs(t, err, context.DeadlineExceeded)

	fixed := runsFiles("INSERT INTO {{tables.runs}} VALUES (2);\n") // a file not yet applied may change
	again, err := Load(module, fixed)
	require.NoError(t, err)
	start := time.Now()
	res, err := again.Up(context.Background(), r.pool, "lib", Config{})
	took := time.Since(start)
	require.NoError(t, err)
	t.Logf("the next migrator took over after %v", took)
	require.Less(t, took, DefaultLease/2, "the lease lapsed with its holder's statement")
	require.Equal(t, []string{"00002_notx.sql", "00003_c.sql"}, res.Applied)
	require.Equal(t, []int{2}, r.marks())
}

// Concurrent migrators of one schema, round after round: whoever takes the
// lock between two files of another (a waiter's look holds it for a moment)
// must see what the other applied, and no file runs twice, a NO TRANSACTION
// one included.
func TestUp_ConcurrentMigratorsOfOneSchemaApplyEachFileOnce(t *testing.T) {
	t.Parallel()
	r := newRun(t, func(c *pgxpool.Config) { c.MaxConns = 8 })
	files := fstest.MapFS{
		"00001_a.sql": sqlFile("a"),
		"00002_b.sql": mapFile("-- +goose Up\nALTER TABLE {{tables.a}} ADD COLUMN b int;\n"),
		"00003_c.sql": mapFile("-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY IF NOT EXISTS a_b ON {{tables.a}} (b);\n"),
		"00004_d.sql": mapFile("-- +goose Up\nALTER TABLE {{tables.a}} ADD COLUMN d int;\n"),
	}
	m, err := Load(module, files)
	require.NoError(t, err)
	for round := range 150 {
		schema := fmt.Sprintf("round_%d", round)
		var wg sync.WaitGroup
		errs := make([]error, 8)
		applied := make([]int, 8)
		for i := range errs {
			wg.Go(func() {
				res, err := m.Up(context.Background(), r.pool, schema, Config{})
				errs[i], applied[i] = err, len(res.Applied)
			})
		}
		wg.Wait()
		total := 0
		for i, err := range errs {
			require.NoError(t, err, "round %d, migrator %d", round, i)
			total += applied[i]
		}
		require.Equal(t, 4, total, "round %d: each file applied once, by one migrator or another", round)
	}
}
