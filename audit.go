package mylib

// The library's own (newlib.manifest): the example domain, an append-only
// audit log, which a library made from the template replaces with its own, as
// it does the other files the manifest gives the library.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgdual/mylib/internal/sqltmpl"
)

// Event is one entry of the audit log: who (Actor) did what (Action) to what
// (Subject), with details in Data, at a time.
type Event struct {
	ID      int64
	Actor   string
	Action  string
	Subject string
	// Data is a JSON object with details; nil records {}.
	Data json.RawMessage
	// At is when it happened; the zero time records the database's now().
	At time.Time
}

// Cursor marks a position in a subject's events, newest first: the next page
// starts after it.
type Cursor struct {
	At time.Time
	ID int64
}

// Page is one page of a subject's events, newest first. Next is nil on the
// last page, so a loop that follows Next never fetches an empty page.
type Page struct {
	Events []Event
	Next   *Cursor
}

// MaxPageSize is the largest page List returns.
const MaxPageSize = 1000

// Statements are parsed once, here; each Client renders them once for its schema.
//
// The queries of one subject name it, but the events index is on its id:
// they resolve the id first, in a subquery the planner runs once before the
// scan (an InitPlan). Joining subjects instead hides which id is wanted, and
// the planner then scans every newer event of every other subject, or the
// whole table and a sort, the more so with custom plans (exec mode). The
// planner estimates such a subject from the average per subject, which
// migrations/00003_subject_estimates.sql keeps small whatever the mix.
//
// A page's LIMIT and cursor are subqueries too, so that the planner
// estimates them alike in a custom plan (arguments known) and in the generic
// one: a prepared statement then settles on the generic plan, planned once,
// whatever the table holds. With a plain LIMIT $2 the generic plan looks
// costlier when one subject is big, and PostgreSQL plans every call anew
// (1.4x the time of a page).
var (
	// Record's statement for a subject that exists, which is nearly every
	// call: it appends the event under the subject's id. The subject's row is
	// locked FOR KEY SHARE, the lock the foreign key takes anyway: it never
	// waits for another Record or RecordTx, only for a Purge batch deleting
	// that subject, and then finds no row. Unprepared (exec mode, many
	// tenants), it costs a third less to parse and plan than recordNewSQL.
	recordSQL = sqltmpl.Must(`INSERT INTO {{tables.events}} (actor, action, subject_id, data, occurred_at)
SELECT $1, $2, s.id, coalesce($4::jsonb, '{}'), coalesce($5, now())
FROM {{tables.subjects}} s WHERE s.name = $3 FOR KEY SHARE
RETURNING id, occurred_at`)

	// When recordSQL finds no subject: one statement finds it (created
	// meanwhile), or creates it, and appends the event that refers to it.
	// When another transaction creates the same new subject at the same
	// moment, the statement inserts nothing and record runs it again.
	recordNewSQL = sqltmpl.Must(`WITH found AS (
	SELECT id FROM {{tables.subjects}} WHERE name = $3 FOR KEY SHARE
), created AS (
	INSERT INTO {{tables.subjects}} (name) SELECT $3 WHERE NOT EXISTS (SELECT FROM found)
	ON CONFLICT (name) DO NOTHING
	RETURNING id
)
INSERT INTO {{tables.events}} (actor, action, subject_id, data, occurred_at)
SELECT $1, $2, s.id, coalesce($4::jsonb, '{}'), coalesce($5, now())
FROM (SELECT id FROM found UNION ALL SELECT id FROM created) AS s
RETURNING id, occurred_at`)

	listFirstSQL = sqltmpl.Must(`SELECT e.id, e.actor, e.action, e.data, e.occurred_at
FROM {{tables.events}} e
WHERE e.subject_id = (SELECT id FROM {{tables.subjects}} WHERE name = $1)
ORDER BY e.occurred_at DESC, e.id DESC LIMIT (SELECT $2::bigint)`)

	// A separate statement for later pages: the keyset condition is one
	// condition on the index (subject_id, occurred_at DESC, id DESC), so
	// the scan starts at the cursor.
	listAfterSQL = sqltmpl.Must(`SELECT e.id, e.actor, e.action, e.data, e.occurred_at
FROM {{tables.events}} e
WHERE e.subject_id = (SELECT id FROM {{tables.subjects}} WHERE name = $1)
	AND (e.occurred_at, e.id) < (SELECT $3::timestamptz, $4::bigint)
ORDER BY e.occurred_at DESC, e.id DESC LIMIT (SELECT $2::bigint)`)

	countSQL = sqltmpl.Must(`SELECT count(*) FROM {{tables.events}}
WHERE subject_id = (SELECT id FROM {{tables.subjects}} WHERE name = $1)`)

	// PurgeTx: one statement in the caller's transaction.
	purgeSQL = sqltmpl.Must(`DELETE FROM {{tables.events}} WHERE occurred_at < $1`)

	// One batch of Purge: the oldest events before the cutoff ($1), from
	// where the last batch ended ($3), by the index on occurred_at, deleted
	// by their row addresses (a TID scan: no second index lookup; a row's
	// address holds within a statement, and events are never updated). It
	// returns how many it deleted, where it ended, and the subjects of the
	// deleted events.
	//
	// It is planned for its arguments on every call (statements.planned):
	// prepared while the table was small, it kept a generic plan that reads
	// the whole table and compares each row with every address of the batch,
	// 9 s a batch once the table held 200,000 events.
	purgeBatchSQL = sqltmpl.Must(`WITH deleted AS (
	DELETE FROM {{tables.events}} WHERE ctid = ANY(ARRAY(
		SELECT ctid FROM {{tables.events}}
		WHERE occurred_at < $1 AND occurred_at >= coalesce($3::timestamptz, '-infinity')
		ORDER BY occurred_at LIMIT $2))
	RETURNING subject_id, occurred_at
)
SELECT count(*), max(occurred_at), coalesce(array_agg(DISTINCT subject_id), '{}') FROM deleted`)

	// Then, in the same transaction, the subjects left without events: first
	// locked, skipping any that a Record in flight holds, then deleted by a
	// statement whose snapshot is taken after the locks, so it sees every
	// event committed before them and no Record can add one after them.
	lockEmptySubjectsSQL = sqltmpl.Must(`SELECT id FROM {{tables.subjects}} s
WHERE id = ANY($1) AND NOT EXISTS (SELECT FROM {{tables.events}} e WHERE e.subject_id = s.id)
FOR UPDATE SKIP LOCKED`)

	deleteSubjectsSQL = sqltmpl.Must(`DELETE FROM {{tables.subjects}} s
WHERE id = ANY($1) AND NOT EXISTS (SELECT FROM {{tables.events}} e WHERE e.subject_id = s.id)`)
)

// PurgeBatchSize is how many events one transaction of Purge deletes: the
// bound on how long a batch holds its locks and how much WAL it writes at
// once, so that a purge of millions of rows never holds a long transaction
// and autovacuum can reclaim the space while it runs (how the size was
// chosen: BENCHMARKS.md, BenchmarkPurge).
const PurgeBatchSize = 2000

// querier is what a pool and a transaction have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Record appends ev to the log and returns it with its ID and time set.
func (c *Client) Record(ctx context.Context, ev Event) (Event, error) {
	return c.record(ctx, c.pool, ev)
}

// RecordTx is Record inside the caller's transaction, so a host's own write
// and its audit record commit or roll back together. tx must be on the
// library's database; it may come from any pool.
func (c *Client) RecordTx(ctx context.Context, tx pgx.Tx, ev Event) (Event, error) {
	if tx == nil {
		return Event{}, fmt.Errorf("%w: RecordTx is given a nil transaction: pass the pgx.Tx from Begin", ErrInvalidArgument)
	}
	return c.record(ctx, tx, ev)
}

func (c *Client) record(ctx context.Context, q querier, ev Event) (Event, error) {
	if err := c.use(); err != nil {
		return Event{}, err
	}
	if err := ev.check(); err != nil {
		return Event{}, err
	}
	var at any // NULL: the database's now()
	if !ev.At.IsZero() {
		at = ev.At
	}
	// A subject that does not exist yet, or that a Purge just removed, takes
	// the statement that creates it. That one inserts nothing only when
	// another transaction created the subject meanwhile, and then runs again:
	// it sees that subject, unless a Purge removed it too (its events were
	// older than the cutoff). Each miss is another caller's progress, so it
	// goes on until it records, fails or ctx ends.
	err := c.recordOnce(ctx, q, recordSQL, &ev, at)
	for errors.Is(err, pgx.ErrNoRows) {
		err = c.recordOnce(ctx, q, recordNewSQL, &ev, at)
	}
	if err != nil {
		return Event{}, c.fail(err, "recording %s %s on %s", ev.Actor, ev.Action, ev.Subject)
	}
	return ev, nil
}

// recordOnce runs one of Record's statements, setting ev's ID and time.
func (c *Client) recordOnce(ctx context.Context, q querier, st *sqltmpl.Statement, ev *Event, at any) error {
	run := c.stmts.Get(st)
	return q.QueryRow(ctx, run.SQL, run.Args(ev.Actor, ev.Action, ev.Subject, ev.Data, at)...).Scan(&ev.ID, &ev.At)
}

func (ev Event) check() error {
	var missing []string
	for _, f := range []struct{ name, value string }{{"Actor", ev.Actor}, {"Action", ev.Action}, {"Subject", ev.Subject}} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: an event needs %v: set them, e.g. Actor: \"alice\", Action: \"login\", Subject: \"account:42\"", ErrInvalidArgument, missing)
	}
	if ev.Data != nil && !json.Valid(ev.Data) {
		return fmt.Errorf("%w: the event's Data is not valid JSON: pass a JSON object such as {\"ip\": \"10.0.0.1\"}, or nil", ErrInvalidArgument)
	}
	return nil
}

// List returns a page of subject's events, newest first: up to limit of them
// (1 to MaxPageSize), after the cursor (nil for the first page). Pass the
// page's Next to get the following page. A page reads the subject's row and
// the page's rows of the index on (subject_id, occurred_at, id), whatever the
// table holds and however deep the cursor.
func (c *Client) List(ctx context.Context, subject string, limit int, after *Cursor) (Page, error) {
	if err := c.use(); err != nil {
		return Page{}, err
	}
	if limit < 1 || limit > MaxPageSize {
		return Page{}, fmt.Errorf("%w: List limit %d is out of range: pass 1 to %d", ErrInvalidArgument, limit, MaxPageSize)
	}
	var rows pgx.Rows
	var err error
	if after == nil {
		st := c.stmts.Get(listFirstSQL)
		rows, err = c.pool.Query(ctx, st.SQL, st.Args(subject, limit+1)...)
	} else {
		st := c.stmts.Get(listAfterSQL)
		rows, err = c.pool.Query(ctx, st.SQL, st.Args(subject, limit+1, after.At, after.ID)...)
	}
	if err != nil {
		return Page{}, c.fail(err, "listing events of %s", subject)
	}
	events := make([]Event, 0, min(limit+1, 64))
	ev := Event{Subject: subject}
	// jsonb is scanned as bytes: scanning into json.RawMessage would run
	// json.Unmarshal on every row to validate what the server already did.
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&ev.ID, &ev.Actor, &ev.Action, &data, &ev.At}, func() error {
		ev.Data, data = data, nil // the next row scans into a fresh slice
		events = append(events, ev)
		return nil
	})
	if err != nil {
		return Page{}, c.fail(err, "listing events of %s", subject)
	}
	// One row more than asked for says whether there is a next page.
	p := Page{Events: events}
	if len(events) > limit {
		p.Events = events[:limit]
		last := p.Events[limit-1]
		p.Next = &Cursor{At: last.At, ID: last.ID}
	}
	return p, nil
}

// Count returns how many events subject has. It reads that subject's entries
// of the index on (subject_id, occurred_at, id), not the whole table.
func (c *Client) Count(ctx context.Context, subject string) (int64, error) {
	if err := c.use(); err != nil {
		return 0, err
	}
	var n int64
	st := c.stmts.Get(countSQL)
	if err := c.pool.QueryRow(ctx, st.SQL, st.Args(subject)...).Scan(&n); err != nil {
		return 0, c.fail(err, "counting events of %s", subject)
	}
	return n, nil
}

// Purge deletes the events that happened before the given time, and the
// subjects left without events, and returns how many events it deleted. It
// works in batches of PurgeBatchSize events, each its own short transaction,
// oldest first, until a batch finds nothing, so Record, List and Count go on
// meanwhile. Events that another transaction is deleting at the same time (a
// concurrent Purge or PurgeTx) are waited for and left to it.
//
// When ctx ends, Purge stops after rolling back the batch in flight: it
// returns the number of events the finished batches deleted and an error that
// wraps ctx.Err(). Those deletions stay; calling Purge again goes on from
// there.
func (c *Client) Purge(ctx context.Context, before time.Time) (int64, error) {
	if err := c.checkPurge(before); err != nil {
		return 0, err
	}
	var total int64
	var from *time.Time // where the last batch ended: no need to walk past it again
	for {
		if err := ctx.Err(); err != nil {
			return total, c.purgeStopped(err, before, total)
		}
		n, last, err := c.purgeBatch(ctx, before, from)
		total += n
		if err != nil {
			if ctx.Err() != nil {
				return total, c.purgeStopped(ctx.Err(), before, total)
			}
			return total, c.fail(err, "purging events before %s failed after deleting %d (those stay deleted; call Purge again once the cause is fixed)",
				before.Format(time.RFC3339), total)
		}
		// A short batch is not the end: rows another transaction was
		// deleting were skipped, and it may not delete all that follow.
		if n == 0 {
			return total, nil
		}
		from = &last
	}
}

// purgeBatch deletes up to PurgeBatchSize of the oldest events before the
// cutoff, from the time from on (nil: the oldest), and the subjects they leave
// empty. It returns how many events it deleted and the time of the last one.
func (c *Client) purgeBatch(ctx context.Context, before time.Time, from *time.Time) (n int64, last time.Time, err error) {
	err = pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		var end *time.Time
		var subjects []int64
		batch := c.stmts.Planned(purgeBatchSQL)
		if err := tx.QueryRow(ctx, batch.SQL, batch.Args(before, PurgeBatchSize, from)...).Scan(&n, &end, &subjects); err != nil {
			return err
		}
		if end != nil {
			last = *end
		}
		if len(subjects) == 0 {
			return nil
		}
		lock := c.stmts.Get(lockEmptySubjectsSQL)
		rows, _ := tx.Query(ctx, lock.SQL, lock.Args(subjects)...)
		empty, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil || len(empty) == 0 {
			return err
		}
		del := c.stmts.Get(deleteSubjectsSQL)
		_, err = tx.Exec(ctx, del.SQL, del.Args(empty)...)
		return err
	})
	if err != nil {
		return 0, time.Time{}, err
	}
	return n, last, nil
}

func (c *Client) purgeStopped(cause error, before time.Time, total int64) error {
	return c.fail(cause, "purge of events before %s stopped after deleting %d (those stay deleted): call Purge again to go on",
		before.Format(time.RFC3339), total)
}

// PurgeTx deletes the events that happened before the given time inside the
// caller's transaction, as one statement, and returns how many it deleted.
// Unlike Purge it neither batches nor removes subjects left without events:
// its locks last as long as the caller's transaction, and deleting a subject
// there could fail that transaction when a Record reuses the subject
// meanwhile. The subjects it empties stay (Purge removes only those its own
// batches empty): each is one small row, which a later Record reuses.
func (c *Client) PurgeTx(ctx context.Context, tx pgx.Tx, before time.Time) (int64, error) {
	if tx == nil {
		return 0, fmt.Errorf("%w: PurgeTx is given a nil transaction: pass the pgx.Tx from Begin", ErrInvalidArgument)
	}
	if err := c.checkPurge(before); err != nil {
		return 0, err
	}
	st := c.stmts.Get(purgeSQL)
	tag, err := tx.Exec(ctx, st.SQL, st.Args(before)...)
	if err != nil {
		return 0, c.fail(err, "purging events before %s", before.Format(time.RFC3339))
	}
	return tag.RowsAffected(), nil
}

func (c *Client) checkPurge(before time.Time) error {
	if err := c.use(); err != nil {
		return err
	}
	if before.IsZero() {
		return fmt.Errorf("%w: Purge is given the zero time, which would delete nothing: pass a cutoff such as time.Now().AddDate(0, 0, -90)", ErrInvalidArgument)
	}
	return nil
}
