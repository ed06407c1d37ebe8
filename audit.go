package mylib

// The example domain: an append-only audit log. This file and migrations/ are
// what a library made from this template replaces; everything else it keeps.

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
var (
	// One statement uses both tables: it finds the subject, or creates it,
	// and appends the event that refers to it. An existing subject's row is
	// only read, never updated or locked for update, so host transactions
	// recording events of the same subjects (RecordTx) never wait on each
	// other. When another transaction creates the same new subject at the
	// same moment, the statement inserts nothing and record runs it again.
	recordSQL = sqltmpl.Must(`WITH found AS (
	SELECT id FROM {{tables.subjects}} WHERE name = $3
), created AS (
	INSERT INTO {{tables.subjects}} (name) SELECT $3 WHERE NOT EXISTS (SELECT FROM found)
	ON CONFLICT (name) DO NOTHING
	RETURNING id
)
INSERT INTO {{tables.events}} (actor, action, subject_id, data, occurred_at)
SELECT $1, $2, s.id, coalesce($4::jsonb, '{}'), coalesce($5, now())
FROM (SELECT id FROM found UNION ALL SELECT id FROM created) AS s
RETURNING id, occurred_at`)

	listFirstSQL = sqltmpl.Must(`SELECT e.id, e.actor, e.action, s.name, e.data, e.occurred_at
FROM {{tables.events}} e JOIN {{tables.subjects}} s ON s.id = e.subject_id
WHERE s.name = $1
ORDER BY e.occurred_at DESC, e.id DESC LIMIT $2`)

	// A separate statement for later pages keeps the keyset condition plain,
	// so the index on (subject_id, occurred_at DESC, id DESC) seeks to it.
	listAfterSQL = sqltmpl.Must(`SELECT e.id, e.actor, e.action, s.name, e.data, e.occurred_at
FROM {{tables.events}} e JOIN {{tables.subjects}} s ON s.id = e.subject_id
WHERE s.name = $1 AND (e.occurred_at, e.id) < ($3, $4)
ORDER BY e.occurred_at DESC, e.id DESC LIMIT $2`)

	countSQL = sqltmpl.Must(`SELECT count(*) FROM {{tables.events}} e JOIN {{tables.subjects}} s ON s.id = e.subject_id WHERE s.name = $1`)

	purgeSQL = sqltmpl.Must(`DELETE FROM {{tables.events}} WHERE occurred_at < $1`)
)

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
		return Event{}, errors.New(moduleName + ": RecordTx is given a nil transaction: pass the pgx.Tx from Begin")
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
	var err error
	// A second run sees the subject another transaction created meanwhile.
	for range 2 {
		err = q.QueryRow(ctx, c.sql.SQL(recordSQL), ev.Actor, ev.Action, ev.Subject, ev.Data, at).Scan(&ev.ID, &ev.At)
		if !errors.Is(err, pgx.ErrNoRows) {
			break
		}
	}
	if err != nil {
		return Event{}, c.fail(err, "recording %s %s on %s", ev.Actor, ev.Action, ev.Subject)
	}
	return ev, nil
}

func (ev Event) check() error {
	var missing []string
	for _, f := range []struct{ name, value string }{{"Actor", ev.Actor}, {"Action", ev.Action}, {"Subject", ev.Subject}} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf(moduleName+": an event needs %v: set them, e.g. Actor: \"alice\", Action: \"login\", Subject: \"account:42\"", missing)
	}
	if ev.Data != nil && !json.Valid(ev.Data) {
		return errors.New(moduleName + ": the event's Data is not valid JSON: pass a JSON object such as {\"ip\": \"10.0.0.1\"}, or nil")
	}
	return nil
}

// List returns a page of subject's events, newest first: up to limit of them
// (1 to MaxPageSize), after the cursor (nil for the first page). Pass the
// page's Next to get the following page.
func (c *Client) List(ctx context.Context, subject string, limit int, after *Cursor) (Page, error) {
	if err := c.use(); err != nil {
		return Page{}, err
	}
	if limit < 1 || limit > MaxPageSize {
		return Page{}, fmt.Errorf(moduleName+": List limit %d is out of range: pass 1 to %d", limit, MaxPageSize)
	}
	var rows pgx.Rows
	var err error
	if after == nil {
		rows, err = c.pool.Query(ctx, c.sql.SQL(listFirstSQL), subject, limit+1)
	} else {
		rows, err = c.pool.Query(ctx, c.sql.SQL(listAfterSQL), subject, limit+1, after.At, after.ID)
	}
	if err != nil {
		return Page{}, c.fail(err, "listing events of %s", subject)
	}
	events := make([]Event, 0, min(limit+1, 64))
	var ev Event
	// jsonb is scanned as bytes: scanning into json.RawMessage would run
	// json.Unmarshal on every row to validate what the server already did.
	var data []byte
	_, err = pgx.ForEachRow(rows, []any{&ev.ID, &ev.Actor, &ev.Action, &ev.Subject, &data, &ev.At}, func() error {
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

// Count returns how many events subject has.
func (c *Client) Count(ctx context.Context, subject string) (int64, error) {
	if err := c.use(); err != nil {
		return 0, err
	}
	var n int64
	if err := c.pool.QueryRow(ctx, c.sql.SQL(countSQL), subject).Scan(&n); err != nil {
		return 0, c.fail(err, "counting events of %s", subject)
	}
	return n, nil
}

// Purge deletes the events that happened before the given time and returns
// how many it deleted.
func (c *Client) Purge(ctx context.Context, before time.Time) (int64, error) {
	return c.purge(ctx, c.pool, before)
}

// PurgeTx is Purge inside the caller's transaction.
func (c *Client) PurgeTx(ctx context.Context, tx pgx.Tx, before time.Time) (int64, error) {
	if tx == nil {
		return 0, errors.New(moduleName + ": PurgeTx is given a nil transaction: pass the pgx.Tx from Begin")
	}
	return c.purge(ctx, tx, before)
}

func (c *Client) purge(ctx context.Context, q querier, before time.Time) (int64, error) {
	if err := c.use(); err != nil {
		return 0, err
	}
	if before.IsZero() {
		return 0, errors.New(moduleName + ": Purge is given the zero time, which would delete nothing: pass a cutoff such as time.Now().AddDate(0, 0, -90)")
	}
	tag, err := q.Exec(ctx, c.sql.SQL(purgeSQL), before)
	if err != nil {
		return 0, c.fail(err, "purging events before %s", before.Format(time.RFC3339))
	}
	return tag.RowsAffected(), nil
}
