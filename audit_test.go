package mylib_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
)

func TestAudit_RecordListCountPurge(t *testing.T) {
	t.Parallel()
	eachModeOn(t, migratedDSN, func(t *testing.T, m mode, dsn string) {
		ctx := context.Background()
		c := mustOpen(t, m, dsn, "audit")
		base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := range 25 {
			ev, err := c.Record(ctx, mylib.Event{Actor: "alice", Action: fmt.Sprintf("edit-%02d", i), Subject: "doc:1",
				Data: json.RawMessage(fmt.Sprintf(`{"n": %d}`, i)), At: base.Add(time.Duration(i) * time.Minute)})
			require.NoError(t, err)
			require.Positive(t, ev.ID)
		}
		_, err := c.Record(ctx, mylib.Event{Actor: "bob", Action: "view", Subject: "doc:2"})
		require.NoError(t, err)

		n, err := c.Count(ctx, "doc:1")
		require.NoError(t, err)
		require.EqualValues(t, 25, n)

		// Pages of 10, newest first, until Next is nil.
		var got []string
		var after *mylib.Cursor
		pages := 0
		for {
			p, err := c.List(ctx, "doc:1", 10, after)
			require.NoError(t, err)
			pages++
			for _, ev := range p.Events {
				require.Equal(t, "doc:1", ev.Subject)
				got = append(got, ev.Action)
			}
			if p.Next == nil {
				break
			}
			after = p.Next
		}
		require.Equal(t, 3, pages)
		require.Len(t, got, 25)
		require.Equal(t, "edit-24", got[0])
		require.Equal(t, "edit-00", got[24])

		first, err := c.List(ctx, "doc:1", 1, nil)
		require.NoError(t, err)
		require.JSONEq(t, `{"n": 24}`, string(first.Events[0].Data))
		require.True(t, first.Events[0].At.Equal(base.Add(24*time.Minute)))

		purged, err := c.Purge(ctx, base.Add(10*time.Minute))
		require.NoError(t, err)
		require.EqualValues(t, 10, purged)
		n, err = c.Count(ctx, "doc:1")
		require.NoError(t, err)
		require.EqualValues(t, 15, n)
	})
}

func TestAudit_EventsWithTheSameTimePageWithoutLossOrRepeat(t *testing.T) {
	t.Parallel()
	dsn := migratedDSN(t)
	ctx := context.Background()
	c := mustOpen(t, modes[0], dsn, "audit")
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for range 7 {
		_, err := c.Record(ctx, mylib.Event{Actor: "a", Action: "tick", Subject: "clock", At: at})
		require.NoError(t, err)
	}
	seen := map[int64]bool{}
	var after *mylib.Cursor
	for {
		p, err := c.List(ctx, "clock", 3, after)
		require.NoError(t, err)
		for _, ev := range p.Events {
			require.False(t, seen[ev.ID], "event %d listed twice", ev.ID)
			seen[ev.ID] = true
		}
		if p.Next == nil {
			break
		}
		after = p.Next
	}
	require.Len(t, seen, 7)
}

func TestAudit_RecordTxCommitsAndRollsBackWithTheHostsWrite(t *testing.T) {
	t.Parallel()
	eachModeOn(t, migratedDSN, func(t *testing.T, m mode, dsn string) {
		ctx := context.Background()
		c := mustOpen(t, m, dsn, "audit")
		hostPool := pgtest.Pool(t, dsn)
		_, err := hostPool.Exec(ctx, "CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
		require.NoError(t, err)

		for _, commit := range []bool{true, false} {
			tx, err := hostPool.Begin(ctx)
			require.NoError(t, err)
			id := map[bool]int{true: 1, false: 2}[commit]
			_, err = tx.Exec(ctx, "INSERT INTO accounts VALUES ($1, 100)", id)
			require.NoError(t, err)
			_, err = c.RecordTx(ctx, tx, mylib.Event{Actor: "host", Action: "open", Subject: fmt.Sprintf("account:%d", id)})
			require.NoError(t, err)
			if commit {
				require.NoError(t, tx.Commit(ctx))
			} else {
				require.NoError(t, tx.Rollback(ctx))
			}
			n, err := c.Count(ctx, fmt.Sprintf("account:%d", id))
			require.NoError(t, err)
			require.EqualValues(t, map[bool]int64{true: 1, false: 0}[commit], n)
		}

		tx, err := hostPool.Begin(ctx)
		require.NoError(t, err)
		purged, err := c.PurgeTx(ctx, tx, time.Now().Add(time.Hour))
		require.NoError(t, err)
		require.EqualValues(t, 1, purged)
		require.NoError(t, tx.Rollback(ctx))
		n, err := c.Count(ctx, "account:1")
		require.NoError(t, err)
		require.EqualValues(t, 1, n, "a rolled back purge deletes nothing")
	})
}

func TestAudit_FullLastPageHasNoNext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := mustOpen(t, modes[0], migratedDSN(t), "audit")
	for range 4 {
		_, err := c.Record(ctx, mylib.Event{Actor: "a", Action: "b", Subject: "four"})
		require.NoError(t, err)
	}
	first, err := c.List(ctx, "four", 2, nil)
	require.NoError(t, err)
	require.Len(t, first.Events, 2)
	require.NotNil(t, first.Next)
	last, err := c.List(ctx, "four", 2, first.Next)
	require.NoError(t, err)
	require.Len(t, last.Events, 2)
	require.Nil(t, last.Next, "a full last page says there is no next one")
}

// Host transactions that record events of the same subjects never wait on
// each other: a subject's row is read, not locked for update.
func TestAudit_RecordTxOnSharedSubjectsNeverBlocks(t *testing.T) {
	t.Parallel()
	dsn := migratedDSN(t)
	ctx := context.Background()
	c := mustOpen(t, modes[0], dsn, "audit")
	for _, s := range []string{"a", "b"} {
		_, err := c.Record(ctx, mylib.Event{Actor: "setup", Action: "create", Subject: s})
		require.NoError(t, err)
	}
	pool := pgtest.Pool(t, dsn)
	tx1, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx1.Rollback(ctx)
	tx2, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx2.Rollback(ctx)

	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }
	record := func(tx pgx.Tx, subject string) error {
		callCtx, cancel := short()
		defer cancel()
		if tx == nil {
			_, err := c.Record(callCtx, mylib.Event{Actor: "x", Action: "y", Subject: subject})
			return err
		}
		_, err := c.RecordTx(callCtx, tx, mylib.Event{Actor: "x", Action: "y", Subject: subject})
		return err
	}
	require.NoError(t, record(tx1, "a"))
	require.NoError(t, record(tx2, "b"))
	require.NoError(t, record(nil, "a"), "a plain Record is not held up by an open host transaction")
	require.NoError(t, record(tx1, "b"))
	require.NoError(t, record(tx2, "a"), "no deadlock between two host transactions")
	require.NoError(t, tx1.Commit(ctx))
	require.NoError(t, tx2.Commit(ctx))
	n, err := c.Count(ctx, "a")
	require.NoError(t, err)
	require.EqualValues(t, 4, n)
}

// Many writers creating the same new subjects at once: every write lands.
func TestAudit_ConcurrentFirstEventsOfOneSubject(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := mustOpen(t, modes[0], migratedDSN(t), "audit")
	var wg sync.WaitGroup
	errs := make(chan error, 80)
	for i := range 80 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Record(ctx, mylib.Event{Actor: "w", Action: "first", Subject: fmt.Sprintf("new:%d", i%4)})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for i := range 4 {
		n, err := c.Count(ctx, fmt.Sprintf("new:%d", i))
		require.NoError(t, err)
		require.EqualValues(t, 20, n)
	}
}

func TestAudit_BadEventsAreRefused(t *testing.T) {
	t.Parallel()
	dsn := migratedDSN(t)
	ctx := context.Background()
	c := mustOpen(t, modes[0], dsn, "audit")
	for name, ev := range map[string]mylib.Event{
		"no actor":     {Action: "a", Subject: "s"},
		"no action":    {Actor: "a", Subject: "s"},
		"no subject":   {Actor: "a", Action: "a"},
		"invalid json": {Actor: "a", Action: "a", Subject: "s", Data: []byte(`{`)},
	} {
		_, err := c.Record(ctx, ev)
		require.ErrorIs(t, err, mylib.ErrInvalidArgument, name)
	}
	_, err := c.RecordTx(ctx, nil, mylib.Event{Actor: "a", Action: "a", Subject: "s"})
	require.ErrorIs(t, err, mylib.ErrInvalidArgument)
	require.ErrorContains(t, err, "nil transaction")
	for _, limit := range []int{0, -1, mylib.MaxPageSize + 1} {
		_, err := c.List(ctx, "s", limit, nil)
		require.ErrorIs(t, err, mylib.ErrInvalidArgument)
		require.ErrorContains(t, err, "out of range")
	}
	_, err = c.Purge(ctx, time.Time{})
	require.ErrorIs(t, err, mylib.ErrInvalidArgument)
	require.ErrorContains(t, err, "zero time")
	n, err := c.Count(ctx, "s")
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestAudit_MethodsAfterCloseReturnErrClosed(t *testing.T) {
	t.Parallel()
	c := mustOpen(t, modes[0], migratedDSN(t), "audit")
	c.Close()
	ctx := context.Background()
	_, err := c.Record(ctx, mylib.Event{Actor: "a", Action: "b", Subject: "c"})
	require.ErrorIs(t, err, mylib.ErrClosed)
	_, err = c.List(ctx, "c", 10, nil)
	require.ErrorIs(t, err, mylib.ErrClosed)
	_, err = c.Count(ctx, "c")
	require.ErrorIs(t, err, mylib.ErrClosed)
	_, err = c.Purge(ctx, time.Now())
	require.ErrorIs(t, err, mylib.ErrClosed)
}

// Every method works on tenants whose statements no longer fit in the host
// pool's statement cache, and so run unnamed (statements_test.go checks the
// cache itself).
func TestAudit_EveryMethodBeyondTheStatementCache(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	pool := pgtest.Pool(t, dsn, func(c *pgxpool.Config) {
		c.MaxConns = 1
		c.ConnConfig.StatementCacheCapacity = 16
	})
	for i := range 4 {
		for range 2 {
			require.NoError(t, everyMethod(t.Context(), pool, fmt.Sprintf("tenant_%d", i)))
		}
	}
}

// Every method works in the query modes a host behind PgBouncer chooses from.
func TestAudit_EveryMethodInExecAndSimpleProtocol(t *testing.T) {
	for _, mode := range []string{"exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			pool := pgtest.Pool(t, pgtest.SetParam(pgtest.DSN(t), "default_query_exec_mode", mode))
			require.NoError(t, everyMethod(t.Context(), pool, "audit"))
		})
	}
}
