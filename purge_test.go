package mylib_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
)

// hook is a pgx tracer that calls its functions around each statement a host
// pool runs, given the statement's SQL, so a test can act between a
// library call's statements.
type hook struct {
	start func(sql string)
	end   func(sql string)
}

type hookSQL struct{}

func (h *hook) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if h.start != nil {
		h.start(data.SQL)
	}
	return context.WithValue(ctx, hookSQL{}, data.SQL)
}

func (h *hook) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if sql, ok := ctx.Value(hookSQL{}).(string); ok && h.end != nil {
		h.end(sql)
	}
}

// hookedClient opens the library on a migrated database through a host pool
// whose statements h sees.
func hookedClient(t *testing.T, h *hook) (*mylib.Client, *pgxpool.Pool) {
	t.Helper()
	return hookedClientOn(t, migratedDSN(t), h)
}

// hookedClientOn is hookedClient on the database of dsn.
func hookedClientOn(t *testing.T, dsn string, h *hook) (*mylib.Client, *pgxpool.Pool) {
	t.Helper()
	pool := pgtest.Pool(t, dsn, func(c *pgxpool.Config) {
		c.ConnConfig.Tracer = h
		c.MaxConns = 4
	})
	c, err := mylib.New(context.Background(), mylib.WithManager(host{pool, "audit"}))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c, pool
}

// purgeLine is where the seeded events end: every event before it is old.
var purgeLine = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// seedOld records n events before purgeLine over 50 subjects old:0 ...
// old:49 that have no other event, and 3 events after it of subject "kept",
// which also has old events.
func seedOld(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO audit.subjects (name) SELECT 'old:' || g FROM generate_series(0, 49) g`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO audit.events (actor, action, subject_id, occurred_at)
		SELECT 'seed', 'old', (SELECT id FROM audit.subjects WHERE name = 'old:' || g % 50), $1::timestamptz - g * interval '1 second'
		FROM generate_series(1, $2::int) g`, purgeLine, n-10)
	require.NoError(t, err)
	c, err := mylib.New(ctx, mylib.WithManager(host{pool, "audit"}))
	require.NoError(t, err)
	defer c.Close()
	for i := range 13 {
		at := purgeLine.Add(-time.Duration(i+1) * time.Hour) // 10 old ones
		if i >= 10 {
			at = purgeLine.Add(time.Duration(i) * time.Hour)
		}
		_, err := c.Record(ctx, mylib.Event{Actor: "seed", Action: "mixed", Subject: "kept", At: at})
		require.NoError(t, err)
	}
}

func subjectNames(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT name FROM audit.subjects ORDER BY name")
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

func countEvents(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM audit.events").Scan(&n))
	return n
}

// Purge of two and a half batches' worth of events commits three
// transactions that delete, and a fourth that finds nothing; it returns the
// total and removes the subjects it left empty.
func TestPurge_DeletesInBatchesAndRemovesEmptySubjects(t *testing.T) {
	t.Parallel()
	var commits atomic.Int32
	c, pool := hookedClient(t, &hook{end: func(sql string) {
		if sql == "commit" {
			commits.Add(1)
		}
	}})
	n := mylib.PurgeBatchSize*5/2 + 10
	seedOld(t, pool, n)

	commits.Store(0)
	deleted, err := c.Purge(context.Background(), purgeLine)
	require.NoError(t, err)
	require.EqualValues(t, n, deleted)
	require.EqualValues(t, 4, commits.Load(), "one transaction per batch of %d, and one that finds nothing", mylib.PurgeBatchSize)
	require.EqualValues(t, 3, countEvents(t, pool), "the events after the cutoff stay")
	require.Equal(t, []string{"kept"}, subjectNames(t, pool), "subjects left without events are gone")

	deleted, err = c.Purge(context.Background(), purgeLine)
	require.NoError(t, err)
	require.Zero(t, deleted, "a second purge finds nothing")
}

// A cancelled Purge returns what it deleted, with an error that wraps the
// context's; those deletions stay, the batch in flight is rolled back, and
// the next Purge goes on.
func TestPurge_StopsCleanlyWhenCancelled(t *testing.T) {
	t.Parallel()
	for _, when := range []string{"between batches", "during a batch"} {
		t.Run(when, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var armed atomic.Bool
			var batches atomic.Int32
			h := &hook{}
			h.start = func(sql string) {
				if armed.Load() && strings.HasPrefix(sql, "WITH deleted AS") {
					if batches.Add(1) == 2 && when == "during a batch" {
						cancel()
					}
				}
			}
			h.end = func(sql string) {
				if armed.Load() && sql == "commit" && when == "between batches" {
					cancel()
				}
			}
			c, pool := hookedClient(t, h)
			n := mylib.PurgeBatchSize*2 + 10
			seedOld(t, pool, n)

			armed.Store(true)
			deleted, err := c.Purge(ctx, purgeLine)
			armed.Store(false)
			require.ErrorIs(t, err, context.Canceled)
			require.ErrorContains(t, err, fmt.Sprintf("after deleting %d", mylib.PurgeBatchSize))
			require.EqualValues(t, mylib.PurgeBatchSize, deleted, "the first batch's count")
			require.EqualValues(t, n+3-mylib.PurgeBatchSize, countEvents(t, pool), "the first batch is deleted, nothing of the second")

			rest, err := c.Purge(context.Background(), purgeLine)
			require.NoError(t, err)
			require.EqualValues(t, n-mylib.PurgeBatchSize, rest)
			require.Equal(t, []string{"kept"}, subjectNames(t, pool))
		})
	}
}

// A Record that reuses a subject Purge is deleting waits for that batch (a
// few milliseconds), then creates the subject again: its event is kept.
func TestPurge_RecordOfASubjectBeingDeletedKeepsItsEvent(t *testing.T) {
	t.Parallel()
	locked, resume := make(chan struct{}), make(chan struct{})
	var resumed sync.Once
	release := func() { resumed.Do(func() { close(resume) }) }
	t.Cleanup(release) // a failing test must not leave the purge waiting
	var armed atomic.Bool
	c, pool := hookedClient(t, &hook{end: func(sql string) {
		// Purge holds the subjects it found empty, not yet deleted.
		if armed.Load() && strings.Contains(sql, "FOR UPDATE SKIP LOCKED") && strings.Contains(sql, "subjects") {
			armed.Store(false)
			close(locked)
			<-resume
		}
	}})
	ctx := context.Background()
	for range 3 {
		_, err := c.Record(ctx, mylib.Event{Actor: "a", Action: "old", Subject: "doomed", At: purgeLine.Add(-time.Hour)})
		require.NoError(t, err)
	}

	armed.Store(true)
	purged := make(chan error, 1)
	go func() {
		n, err := c.Purge(ctx, purgeLine)
		if err == nil && n != 3 {
			err = fmt.Errorf("purged %d events, want 3", n)
		}
		purged <- err
	}()
	<-locked
	recorded := make(chan error, 1)
	go func() {
		_, err := c.Record(ctx, mylib.Event{Actor: "a", Action: "new", Subject: "doomed"})
		recorded <- err
	}()
	waitForLockWait(t, pool, "the Record waits for the purge's batch")
	release()
	require.NoError(t, <-purged)
	require.NoError(t, <-recorded)

	n, err := c.Count(ctx, "doomed")
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the new event is kept, under the subject created again")
	page, err := c.List(ctx, "doomed", 10, nil)
	require.NoError(t, err)
	require.Equal(t, "new", page.Events[0].Action)
}

// A subject that a host transaction is recording to (RecordTx, not yet
// committed) is skipped by Purge, which neither waits for the transaction
// nor fails it.
func TestPurge_SkipsSubjectsOfOpenHostTransactions(t *testing.T) {
	t.Parallel()
	c, pool := hookedClient(t, &hook{})
	ctx := context.Background()
	_, err := c.Record(ctx, mylib.Event{Actor: "a", Action: "old", Subject: "busy", At: purgeLine.Add(-time.Hour)})
	require.NoError(t, err)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = c.RecordTx(ctx, tx, mylib.Event{Actor: "host", Action: "new", Subject: "busy"})
	require.NoError(t, err)

	// A guard against a hang, not a speed check: Purge must not wait for tx.
	guard, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	deleted, err := c.Purge(guard, purgeLine)
	require.NoError(t, err)
	require.EqualValues(t, 1, deleted)
	require.NoError(t, tx.Commit(ctx))

	n, err := c.Count(ctx, "busy")
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	require.Equal(t, []string{"busy"}, subjectNames(t, pool))
}

// PurgeTx is one statement in the host's transaction: it deletes the events,
// keeps the subjects, and its work commits or rolls back with the host's.
func TestPurgeTx_OneStatementThatKeepsSubjects(t *testing.T) {
	t.Parallel()
	var statements atomic.Int32
	c, pool := hookedClient(t, &hook{start: func(string) { statements.Add(1) }})
	ctx := context.Background()
	seedOld(t, pool, 100)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	statements.Store(0)
	deleted, err := c.PurgeTx(ctx, tx, purgeLine)
	require.NoError(t, err)
	require.EqualValues(t, 100, deleted)
	require.EqualValues(t, 1, statements.Load())
	require.NoError(t, tx.Commit(ctx))
	require.EqualValues(t, 3, countEvents(t, pool))
	require.Len(t, subjectNames(t, pool), 51, "PurgeTx keeps subjects left without events")

	_, err = c.PurgeTx(ctx, nil, purgeLine)
	require.ErrorContains(t, err, "nil transaction")
	_, err = c.PurgeTx(ctx, tx, time.Time{})
	require.ErrorContains(t, err, "zero time")
}

// A Purge that meets rows a host's PurgeTx (with an earlier cutoff) is
// deleting waits for that transaction, leaves those rows to it, and still
// deletes everything else before its own cutoff.
func TestPurge_GoesOnPastRowsAnotherTransactionDeletes(t *testing.T) {
	t.Parallel()
	c, pool := hookedClient(t, &hook{})
	ctx := context.Background()
	n := mylib.PurgeBatchSize + 500
	seedOld(t, pool, n)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	// The seeded events are one a second before purgeLine, the oldest ten
	// hours before it: this cutoff takes those and 90 more.
	early, err := c.PurgeTx(ctx, tx, purgeLine.Add(-time.Duration(n-10-90)*time.Second))
	require.NoError(t, err)
	require.EqualValues(t, 100, early)

	purged := make(chan error, 1)
	var deleted int64
	go func() {
		var err error
		deleted, err = c.Purge(ctx, purgeLine)
		purged <- err
	}()
	require.Eventually(t, func() bool {
		var waiting bool
		require.NoError(t, pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting))
		return waiting
	}, 10*time.Second, 5*time.Millisecond, "the Purge waits for the host's transaction")
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, <-purged)
	require.EqualValues(t, n-100, deleted)
	require.EqualValues(t, 3, countEvents(t, pool), "only the events after the cutoff are left")
}
