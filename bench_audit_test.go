package mylib_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// The example domain's benchmarks, each a pair of paths compared as
// bench_test.go says.

// BenchmarkOverhead: the domain's hot write and hot read (record an event,
// list a page of a subject's events) through the library and through the raw
// pool with the same SQL, names qualified by hand. Target: the library ≤ 1.05x pgx,
// at most 2 more allocs/op.
func BenchmarkOverhead(b *testing.B) {
	ctx := context.Background()
	dsn := migratedDSN(b)
	pool := pgtest.Pool(b, dsn)
	c, err := mylib.New(ctx, mylib.WithManager(host{pool, "audit"}))
	require.NoError(b, err)
	defer c.Close()
	for i := range 50 { // a subject with history to page through
		_, err := c.Record(ctx, mylib.Event{Actor: "seed", Action: fmt.Sprint(i), Subject: "bench"})
		require.NoError(b, err)
	}
	// The raw twin: the library's own statements, rendered by hand.
	render := func(s string) string { out, err := sqltmpl.Render("audit", s); require.NoError(b, err); return out }
	recordSQL, listSQL := render(mylib.RecordSQLText), render(mylib.ListFirstSQLText)
	data := json.RawMessage(`{"ip": "192.0.2.1"}`)

	// Both paths get their values from variables, as real callers do (a
	// constant boxed into an interface costs no allocation; a variable does).
	in := mylib.Event{Actor: "bench", Action: "write", Subject: "bench", Data: data}
	subject, limit := "bench", 20
	compare(b, path{name: "pgx", do: func(b *testing.B, _ any) {
		ev := in
		var at any
		if err := pool.QueryRow(ctx, recordSQL, ev.Actor, ev.Action, ev.Subject, ev.Data, at).Scan(&ev.ID, &ev.At); err != nil {
			b.Fatal(err)
		}
		rows, err := pool.Query(ctx, listSQL, subject, limit+1) // one more says if there is a next page
		if err != nil {
			b.Fatal(err)
		}
		events := make([]mylib.Event, 0, limit+1)
		ev.Subject = subject
		_, err = pgx.ForEachRow(rows, []any{&ev.ID, &ev.Actor, &ev.Action, &ev.Data, &ev.At}, func() error {
			events = append(events, ev)
			ev.Data = nil
			return nil
		})
		if err != nil || len(events) != limit+1 {
			b.Fatal(err, len(events))
		}
	}}, path{name: "library", do: func(b *testing.B, _ any) {
		if _, err := c.Record(ctx, in); err != nil {
			b.Fatal(err)
		}
		page, err := c.List(ctx, subject, limit, nil)
		if err != nil || len(page.Events) != 20 {
			b.Fatal(err, len(page.Events))
		}
	}}, "≤ 1.05x, ≤ +2 allocs/op")
}

// BenchmarkQuietSubject: a quiet subject's List (first page of 20) and Count
// in a schema where another subject has 20,000 events, against the same in a
// schema without them, in pgx's default mode (prepared statements, generic
// plans after five runs) and in exec mode (custom plans). Target ≤ 1.2x: a
// query costs what it reads, not what the table holds.
func BenchmarkQuietSubject(b *testing.B) {
	ctx := context.Background()
	dsn := migratedDSN(b)
	for _, m := range []poolSetting{tenantSettings[0], tenantSettings[1]} {
		b.Run(m.name, func(b *testing.B) {
			pool := pgtest.Pool(b, dsn, m.cfg)
			// No other subject: what the planner knows of the big one
			// weighs on its estimates most.
			open := func(schema string, big int) *mylib.Client {
				c, err := mylib.New(ctx, mylib.WithManager(host{pool, schema}), mylib.WithLogger(quietLogger()))
				require.NoError(b, err)
				b.Cleanup(c.Close)
				seedSkewed(b, pool, schema, big, 0)
				return c
			}
			even, skewed := open("even_"+m.name, 0), open("skewed_"+m.name, 20_000)
			list := func(c *mylib.Client) path {
				return path{do: func(b *testing.B, _ any) {
					p, err := c.List(ctx, "quiet", 20, nil)
					if err != nil || len(p.Events) != 20 {
						b.Fatal(err, len(p.Events))
					}
				}}
			}
			count := func(c *mylib.Client) path {
				return path{do: func(b *testing.B, _ any) {
					n, err := c.Count(ctx, "quiet")
					if err != nil || n != quietEvents {
						b.Fatal(err, n)
					}
				}}
			}
			for _, q := range []struct {
				name string
				path func(*mylib.Client) path
			}{{"List", list}, {"Count", count}} {
				b.Run(q.name, func(b *testing.B) {
					without, with := q.path(even), q.path(skewed)
					without.name, with.name = "without", "with"
					compare(b, without, with, "≤ 1.2x")
				})
			}
		})
	}
}

// BenchmarkPurge: deleting 20,000 events of 100 subjects in batches of
// PurgeBatchSize (Purge, which also removes the emptied subjects) against
// one DELETE statement in one transaction (PurgeTx): what bounded
// transactions cost. Informational: no target.
func BenchmarkPurge(b *testing.B) {
	ctx := context.Background()
	dsn := migratedDSN(b)
	pool := pgtest.Pool(b, dsn)
	c, err := mylib.New(ctx, mylib.WithManager(host{pool, "audit"}))
	require.NoError(b, err)
	defer c.Close()
	const events = 20_000
	seed := func(b *testing.B) any {
		_, err := pool.Exec(ctx, `INSERT INTO audit.subjects (name) SELECT 'p:' || g FROM generate_series(0, 99) g ON CONFLICT DO NOTHING`)
		require.NoError(b, err)
		_, err = pool.Exec(ctx, `INSERT INTO audit.events (actor, action, subject_id, occurred_at)
			SELECT 'seed', 'old', (SELECT id FROM audit.subjects WHERE name = 'p:' || g % 100), $1::timestamptz - g * interval '1 second'
			FROM generate_series(1, $2::int) g`, purgeLine, events)
		require.NoError(b, err)
		// As autovacuum would between two daily purges: the last run's dead
		// rows are not this run's work.
		_, err = pool.Exec(ctx, `VACUUM ANALYZE audit.events, audit.subjects`)
		require.NoError(b, err)
		return nil
	}
	compare(b, path{name: "statement", prepare: seed, do: func(b *testing.B, _ any) {
		tx, err := pool.Begin(ctx)
		require.NoError(b, err)
		n, err := c.PurgeTx(ctx, tx, purgeLine)
		require.NoError(b, err)
		require.NoError(b, tx.Commit(ctx))
		require.EqualValues(b, events, n)
	}}, path{name: "batches", prepare: seed, do: func(b *testing.B, _ any) {
		n, err := c.Purge(ctx, purgeLine)
		require.NoError(b, err)
		require.EqualValues(b, events, n)
	}}, "none")
}
