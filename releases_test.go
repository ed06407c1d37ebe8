package mylib_test

// Two releases of the library side by side, as a rolling deploy and a
// rollback run them. Release N is this module; release N+1 is the same code
// with two more migration files, both additive and both with a Down section:
// a column on events, and a concurrent index on it.
//
// What depends on a process boundary runs in processes built from each
// release (internal/releasetest): the migration files are embedded in a
// binary when it is built, and a rollback of the binary is a restart. What
// does not runs in this process, with release N+1's files given to New
// (mylib.WithMigrationFiles): Record and Purge are the same code in both
// releases, and what they race on is the database.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/migratetest"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/releasetest"
	"github.com/pgdual/mylib/internal/releasetest/traffic"
)

// nextRelease is what release N+1 adds to release N's migration files.
type nextRelease struct {
	// version is release N's latest version.
	version int64
	// added are N+1's files, by name; names lists them in order.
	added map[string]string
	names []string
	// files are N's files and N+1's.
	files fstest.MapFS
}

func newNextRelease(t *testing.T) nextRelease {
	t.Helper()
	paths, err := filepath.Glob("migrations/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	next := nextRelease{files: fstest.MapFS{}}
	for _, p := range paths {
		text, err := os.ReadFile(p)
		require.NoError(t, err)
		next.files[filepath.Base(p)] = &fstest.MapFile{Data: text}
	}
	digits, _, _ := strings.Cut(filepath.Base(paths[len(paths)-1]), "_")
	next.version, err = strconv.ParseInt(digits, 10, 64)
	require.NoError(t, err)
	next.added = map[string]string{
		fmt.Sprintf("%05d_events_source.sql", next.version+1): `-- Events say which part of the application recorded them. Release N never
-- reads the column, and inserts name their columns: it keeps working.

-- +goose Up
ALTER TABLE {{tables.events}} ADD COLUMN source text;

-- +goose Down
ALTER TABLE {{tables.events}} DROP COLUMN source;
`,
		fmt.Sprintf("%05d_events_source_index.sql", next.version+2): `-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_source ON {{tables.events}} (source) WHERE source IS NOT NULL;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS {{schema}}.events_source;
`,
	}
	for name, text := range next.added {
		next.names = append(next.names, name)
		next.files[name] = &fstest.MapFile{Data: []byte(text)}
	}
	slices.Sort(next.names)
	return next
}

// A rolling deploy of release N+1 beside N, a rollback of the binary, a
// rollback of the schema, and a deploy of N+1 again, each step checked as
// an operator would: the calls the running releases make, their log lines,
// the command's output and exit codes, and the events recorded throughout.
func TestReleases_RollForwardAndBack(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds two releases of the library, seconds with a warm build cache and a minute or more without")
	}
	t.Parallel()
	next := newNextRelease(t)
	n := releasetest.Build(t, "N", nil)
	n1 := releasetest.Build(t, "N+1", next.added)
	dsn := pgtest.DSN(t)
	const schema = "rollout"
	versionN := strconv.FormatInt(next.version, 10)
	var reports []traffic.Report

	// The deploy: N serves, N+1 starts beside it and migrates, both serve,
	// then N stops.
	older := n.Start(t, dsn, schema)
	newer := n1.Start(t, dsn, schema)
	require.Regexp(t, `msg="applied migrations" library=\w+ schema=`+schema+` files="\[`+strings.Join(next.names, " ")+`\]"`, newer.Log())
	time.Sleep(200 * time.Millisecond) // both serve
	reports = append(reports, requireServed(t, "N, while N+1 migrated", older.Stop(t)))
	reports = append(reports, requireServed(t, "N+1", newer.Stop(t)))

	// The binary is rolled back: N starts on the schema N+1 left, says so,
	// and serves.
	rolledBack := n.Start(t, dsn, schema)
	require.Regexp(t, fmt.Sprintf(`level=WARN msg="schema is at a newer version than this code knows; [^"]*" library=\w+ schema=%s schema_version=%d code_version=%d unknown_versions="\[%d %d\]"`,
		schema, next.version+2, next.version, next.version+1, next.version+2), rolledBack.Log())
	r := n.Run(t, dsn, "status", "-schema", schema)
	require.Equal(t, 0, r.Code, r)
	for _, v := range []int64{next.version + 1, next.version + 2} {
		require.Regexp(t, fmt.Sprintf(`(?m)^\s+%d\s+\(no file\)\s+applied\s+\S+ \S+\s+newer than this code`, v), r.Stdout)
	}

	// The schema is taken back while N serves: N's command cannot undo what
	// it does not know, N+1's can.
	r = n.Run(t, dsn, "migrate", "-schema", schema, "-to", versionN)
	require.Equal(t, 1, r.Code, r)
	require.Empty(t, r.Stdout, "nothing undone")
	require.Contains(t, r.Stderr, fmt.Sprintf("it is at version %d, which no file of this code has", next.version+2))
	require.Contains(t, r.Stderr, "run the release that applied it to take the schema down first")
	r = n1.Run(t, dsn, "migrate", "-schema", schema, "-to", versionN)
	require.Equal(t, 0, r.Code, r)
	require.Equal(t, fmt.Sprintf("undid %s\nundid %s\nschema %q is at version %s\n", next.names[1], next.names[0], schema, versionN), r.Stdout)
	reports = append(reports, requireServed(t, "N, while the schema was taken back", rolledBack.Stop(t)))

	r = n.Run(t, dsn, "status", "-schema", schema)
	require.Equal(t, 0, r.Code, r)
	require.NotContains(t, r.Stdout, "(no file)")
	require.NotRegexp(t, `pending|changed|invalid`, r.Stdout)
	watch := pgtest.Pool(t, dsn)
	var column, index bool
	require.NoError(t, watch.QueryRow(t.Context(), `SELECT
	EXISTS (SELECT FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'events' AND column_name = 'source'),
	to_regclass($1 || '.events_source') IS NOT NULL`, schema).Scan(&column, &index))
	require.False(t, column, "the Down section dropped the column")
	require.False(t, index, "the Down section dropped the index")

	// N starts on its fast path: no lock (another session holds it the
	// whole time), no warning, nothing applied.
	holder, err := watch.Begin(t.Context())
	require.NoError(t, err)
	defer holder.Rollback(context.Background())
	script, err := mylib.Script(schema, 0)
	require.NoError(t, err)
	_, err = holder.Exec(t.Context(), "SELECT pg_advisory_xact_lock($1)", migratetest.LockKey(t, script))
	require.NoError(t, err)
	again := n.Start(t, dsn, schema, "-start-timeout", "10s")
	require.NotContains(t, again.Log(), "newer version")
	require.NotContains(t, again.Log(), "migrations")
	reports = append(reports, requireServed(t, "N, on the schema taken back", again.Stop(t)))
	require.NoError(t, holder.Rollback(t.Context()))

	requireKept(t, dsn, schema, reports...)

	// Deployed again, N+1 applies its files again.
	r = n1.Run(t, dsn, "migrate", "-schema", schema)
	require.Equal(t, 0, r.Code, r)
	require.Equal(t, fmt.Sprintf("applied %s\napplied %s\nschema %q is up to date\n", next.names[0], next.names[1], schema), r.Stdout)
}

// requireServed checks that a release's host made every kind of call and
// that none failed.
func requireServed(t *testing.T, what string, r traffic.Report) traffic.Report {
	t.Helper()
	require.Zero(t, r.Failed, "%s: calls failed: %s", what, strings.Join(r.Errors, "\n"))
	require.Positive(t, r.Records, what)
	require.Positive(t, r.Lists, what)
	require.Positive(t, r.Purges, what)
	t.Logf("%s: %d records, %d lists, %d purges (%d events purged), none failed; the slowest call took %s",
		what, r.Records, r.Lists, r.Purges, r.Purged, r.Slowest.Round(time.Millisecond))
	return r
}

// requireKept checks that List finds every event the reports recorded to
// stay, under its subject.
func requireKept(t *testing.T, dsn, schema string, reports ...traffic.Report) {
	t.Helper()
	c, err := mylib.New(t.Context(), mylib.WithDSN(dsn), mylib.WithSchema(schema), mylib.WithLogger(quietLogger()))
	require.NoError(t, err)
	defer c.Close()
	kept := 0
	for _, r := range reports {
		for subject, ids := range r.Kept {
			listed := map[int64]bool{}
			for page := (mylib.Page{}); ; {
				page, err = c.List(t.Context(), subject, mylib.MaxPageSize, page.Next)
				require.NoError(t, err)
				for _, ev := range page.Events {
					listed[ev.ID] = true
				}
				if page.Next == nil {
					break
				}
			}
			for _, id := range ids {
				require.True(t, listed[id], "event %d of %s, recorded during the releases, is gone", id, subject)
			}
			kept += len(ids)
		}
	}
	require.Positive(t, kept)
}

// Taking a schema back refuses a file that has no Down section, naming it,
// and changes nothing. In this process: the refusal reads files and the
// schema, whatever binary holds them.
func TestReleases_MigrateToRefusesAFileWithoutDown(t *testing.T) {
	t.Parallel()
	next := newNextRelease(t)
	name := fmt.Sprintf("%05d_notes.sql", next.version+1)
	next.files[name] = &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE {{tables.notes}} (id bigint PRIMARY KEY, body text);\n")}
	delete(next.files, next.names[0])
	delete(next.files, next.names[1])
	opts := []mylib.Option{mylib.WithDSN(migratedDSN(t)), mylib.WithSchema("audit"), mylib.WithMigrationFiles(next.files), mylib.WithLogger(quietLogger())}
	applied, err := mylib.Migrate(t.Context(), opts...)
	require.NoError(t, err)
	require.Equal(t, []string{name}, applied)

	moved, err := mylib.MigrateTo(t.Context(), next.version, opts...)
	require.ErrorIs(t, err, mylib.ErrIrreversible)
	require.ErrorContains(t, err, fmt.Sprintf("%s (version %d) has no Down section, so it cannot be undone; nothing was changed", name, next.version+1))
	require.Empty(t, moved.Undone)
	st, err := mylib.Status(t.Context(), opts...)
	require.NoError(t, err)
	require.Equal(t, mylib.StateApplied, st[len(st)-1].State, "still applied: %+v", st)
	require.Equal(t, name, st[len(st)-1].File)
}

// creatingStatements counts, per Record call (through its context), the
// statements that create a subject when Record finds none.
type creatingStatements struct{}

type creatingCount struct{}

func (creatingStatements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if n, ok := ctx.Value(creatingCount{}).(*int); ok && strings.HasPrefix(data.SQL, "WITH found AS") {
		*n++
	}
	return ctx
}

func (creatingStatements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Under load, release N+1's Purges keep deleting the subjects that release
// N's Records use (every event is older than the cutoff, so every subject
// keeps going empty), and the Records keep creating them again. No Record
// fails, and every event is accounted for: purged, or still there. The load
// runs until Records have seen their subject deleted and created again by
// another Record under them, repeatedly. Those that saw it twice failed
// before, when Record gave up after two runs of the creating statement (2 in
// 5 s of this load, here); the next test makes that happen every time.
func TestReleases_RecordNeverFailsWhilePurgeRemovesItsSubject(t *testing.T) {
	t.Parallel()
	next := newNextRelease(t)
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	n, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithLogger(quietLogger()),
		mylib.WithPoolConfig(func(c *pgxpool.Config) {
			c.ConnConfig.Tracer = creatingStatements{}
			c.MaxConns = 8
		}))
	require.NoError(t, err)
	defer n.Close()
	n1, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithMigrationFiles(next.files),
		mylib.WithLogger(quietLogger()))
	require.NoError(t, err)
	defer n1.Close()

	const subjects, recorders, purgers = 64, 6, 2
	cutoff := time.Now().Add(-time.Hour)
	// retried counts the Records that ran the creating statement twice or
	// more: their subject was deleted and created again under them; and
	// deep those that ran it three times or more, which failed before.
	var recorded, purged, retried, deep atomic.Int64
	var failures sync.Map // error text -> count
	fail := func(err error) {
		v, _ := failures.LoadOrStore(err.Error(), new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// loop calls f until stop closes.
	loop := func(f func()) {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					f()
				}
			}
		})
	}
	for range recorders {
		loop(func() {
			var creating int
			_, err := n.Record(context.WithValue(ctx, creatingCount{}, &creating), mylib.Event{
				Actor: "n", Action: "old", Subject: fmt.Sprintf("subject-%d", rand.IntN(subjects)), At: cutoff.Add(-time.Duration(1+rand.IntN(3600)) * time.Second)})
			if err != nil {
				fail(err)
				return
			}
			recorded.Add(1)
			if creating >= 2 {
				retried.Add(1)
			}
			if creating >= 3 {
				deep.Add(1)
			}
		})
	}
	for range purgers {
		loop(func() {
			// Not cancelled: a batch whose commit is in flight when its
			// context ends may be deleted and not counted.
			deleted, err := n1.Purge(ctx, cutoff)
			purged.Add(deleted)
			if err != nil {
				fail(err)
			}
		})
	}
	began := time.Now()
	for time.Since(began) < 2*time.Second || (retried.Load() < 20 && time.Since(began) < 30*time.Second) {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	var errs []string
	var failed int64
	failures.Range(func(k, v any) bool {
		n := v.(*atomic.Int64).Load()
		failed += n
		errs = append(errs, fmt.Sprintf("%d times: %s", n, k))
		return true
	})
	t.Logf("%d Records in %s: %d of them after their subject was deleted and created again under them (%d twice), %d failed; %d events purged",
		recorded.Load(), time.Since(began).Round(time.Millisecond), retried.Load(), deep.Load(), failed, purged.Load())
	require.Empty(t, errs, "calls failed")
	var left int64
	require.NoError(t, pgtest.Pool(t, dsn).QueryRow(ctx, "SELECT count(*) FROM audit.events").Scan(&left))
	require.Equal(t, recorded.Load(), purged.Load()+left, "every event recorded is purged or still there")
	require.GreaterOrEqual(t, retried.Load(), int64(20), "the load did not provoke the race: too few Records saw their subject deleted and created again")
}

// The race, one step at a time: a Record finds its subject purged, loses its
// creation to a host transaction's RecordTx, a Purge removes that subject
// again, and another transaction creates it again under it. The Record
// records all the same, on the subject that stays.
func TestReleases_RecordOutlastsItsSubjectPurgedAndCreatedAgainTwice(t *testing.T) {
	t.Parallel()
	dsn := migratedDSN(t)
	ctx := context.Background()
	missed, resume := make(chan struct{}), make(chan struct{})
	var resumed sync.Once
	release := func() { resumed.Do(func() { close(resume) }) }
	t.Cleanup(release) // a failing test must not leave the Record waiting
	var creating atomic.Int32
	recorder, _ := hookedClientOn(t, dsn, &hook{end: func(sql string) {
		// The first creating statement of the Record ended, having lost to
		// the first host transaction.
		if strings.HasPrefix(sql, "WITH found AS") && creating.Add(1) == 1 {
			close(missed)
			<-resume
		}
	}})
	hostPool := pgtest.Pool(t, dsn)
	other, err := mylib.New(ctx, mylib.WithManager(host{hostPool, "audit"}))
	require.NoError(t, err)
	defer other.Close()
	old := mylib.Event{Actor: "host", Action: "old", Subject: "doomed", At: purgeLine.Add(-time.Hour)}
	purge := func() {
		t.Helper()
		n, err := other.Purge(ctx, purgeLine)
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
	}
	// begin opens a host transaction that creates the subject, uncommitted.
	begin := func() pgx.Tx {
		t.Helper()
		tx, err := hostPool.Begin(ctx)
		require.NoError(t, err)
		_, err = other.RecordTx(ctx, tx, old)
		require.NoError(t, err)
		return tx
	}

	_, err = other.Record(ctx, old)
	require.NoError(t, err)
	purge() // the subject is gone
	first := begin()
	defer first.Rollback(ctx)
	recorded := make(chan error, 1)
	go func() {
		_, err := recorder.Record(ctx, mylib.Event{Actor: "app", Action: "stays", Subject: "doomed"})
		recorded <- err
	}()
	waitForLockWait(t, hostPool, "the Record's creating statement waits for the host transaction's subject")
	require.NoError(t, first.Commit(ctx))
	<-missed
	purge() // the host transaction's event, and its subject
	second := begin()
	defer second.Rollback(ctx)
	release()
	waitForLockWait(t, hostPool, "the Record's next creating statement waits for the second host transaction's subject")
	require.NoError(t, second.Commit(ctx))
	require.NoError(t, <-recorded)
	require.GreaterOrEqual(t, creating.Load(), int32(3), "the Record ran the creating statement a third time")

	page, err := recorder.List(ctx, "doomed", 10, nil)
	require.NoError(t, err)
	require.Len(t, page.Events, 2, "the second host transaction's event and the Record's")
	require.Equal(t, "stays", page.Events[0].Action)
}

// waitForLockWait waits until a session of pool's database waits for a lock.
func waitForLockWait(t *testing.T, pool *pgxpool.Pool, what string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var waiting bool
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting))
		return waiting
	}, 10*time.Second, 5*time.Millisecond, what)
}
