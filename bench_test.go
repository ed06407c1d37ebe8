package mylib_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// Every benchmark here pairs the library's path with the raw pgx or goose path
// it wraps, measured in the same run, and logs their ratio: these machines
// are shared and noisy, so only ratios mean anything.

// pair runs the raw and the library sub-benchmarks and logs the ratio of
// their ns/op (and the difference of their allocs/op).
type pair struct {
	b     *testing.B
	names [2]string
	ns    [2]float64
	alloc [2]float64
}

func (p *pair) run(i int, name string, f func(b *testing.B)) {
	p.names[i] = name
	p.b.Run(name, func(b *testing.B) {
		b.ReportAllocs()
		var before, after runtimeMem
		before.read()
		f(b)
		after.read()
		if n := b.N; n > 0 {
			p.ns[i] = float64(b.Elapsed().Nanoseconds()) / float64(n)
			p.alloc[i] = float64(after.mallocs-before.mallocs) / float64(n)
		}
	})
}

func (p *pair) report(target string) {
	if p.ns[0] == 0 || p.ns[1] == 0 {
		return
	}
	line := fmt.Sprintf("%s: %s/%s = %.2fx ns/op (%.0f vs %.0f ns/op), %+.1f allocs/op; target %s",
		p.b.Name(), p.names[1], p.names[0], p.ns[1]/p.ns[0], p.ns[1], p.ns[0], p.alloc[1]-p.alloc[0], target)
	p.b.Log(line)
	fmt.Fprintln(os.Stderr, line)
}

// BenchmarkOverhead: the domain's hot write and hot read (record an event,
// list a page of a subject's events) through the library and through the raw
// pool with the same SQL, names qualified by hand. Target: mylib ≤ 1.05x pgx,
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
	recordSQL := render(`WITH s AS (
	INSERT INTO {{tables.subjects}} AS s (name, last_event_at) VALUES ($3, coalesce($5, now()))
	ON CONFLICT (name) DO UPDATE SET last_event_at = greatest(s.last_event_at, excluded.last_event_at)
	RETURNING id
)
INSERT INTO {{tables.events}} (actor, action, subject_id, data, occurred_at)
SELECT $1, $2, s.id, coalesce($4::jsonb, '{}'), coalesce($5, now()) FROM s
RETURNING id, occurred_at`)
	listSQL := render(`SELECT e.id, e.actor, e.action, s.name, e.data, e.occurred_at
FROM {{tables.events}} e JOIN {{tables.subjects}} s ON s.id = e.subject_id
WHERE s.name = $1
ORDER BY e.occurred_at DESC, e.id DESC LIMIT $2`)
	data := []byte(`{"ip": "192.0.2.1"}`)

	p := &pair{b: b}
	p.run(0, "pgx", func(b *testing.B) {
		for b.Loop() {
			var ev mylib.Event
			var at any
			if err := pool.QueryRow(ctx, recordSQL, "bench", "write", "bench", data, at).Scan(&ev.ID, &ev.At); err != nil {
				b.Fatal(err)
			}
			rows, err := pool.Query(ctx, listSQL, "bench", 20)
			if err != nil {
				b.Fatal(err)
			}
			events := make([]mylib.Event, 0, 20)
			_, err = pgx.ForEachRow(rows, []any{&ev.ID, &ev.Actor, &ev.Action, &ev.Subject, &ev.Data, &ev.At}, func() error {
				events = append(events, ev)
				ev.Data = nil
				return nil
			})
			if err != nil || len(events) != 20 {
				b.Fatal(err, len(events))
			}
		}
	})
	p.run(1, "mylib", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Record(ctx, mylib.Event{Actor: "bench", Action: "write", Subject: "bench", Data: data}); err != nil {
				b.Fatal(err)
			}
			page, err := c.List(ctx, "bench", 20, nil)
			if err != nil || len(page.Events) != 20 {
				b.Fatal(err, len(page.Events))
			}
		}
	})
	p.report("≤ 1.05x, ≤ +2 allocs/op")
}

// BenchmarkWarmStart: New on an up-to-date schema against pgxpool.New + Ping,
// the least a standalone library must do. Target ≤ 1.3x.
func BenchmarkWarmStart(b *testing.B) {
	ctx := context.Background()
	dsn := migratedDSN(b)
	p := &pair{b: b}
	p.run(0, "pgxpool", func(b *testing.B) {
		for b.Loop() {
			pool, err := pgxpool.New(ctx, dsn)
			require.NoError(b, err)
			require.NoError(b, pool.Ping(ctx))
			pool.Close()
		}
	})
	p.run(1, "mylib", func(b *testing.B) {
		for b.Loop() {
			c, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"))
			require.NoError(b, err)
			c.Close()
		}
	})
	p.report("≤ 1.3x")
}

// BenchmarkColdStart: migrating an empty schema, against goose's Provider Up
// alone on the same rendered files (goose does not create the schema, so that
// runs outside its timer; the library's count includes creating it).
// Target ≤ 1.1x.
func BenchmarkColdStart(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Pool(b, pgtest.DSN(b))
	n := 0
	fresh := func() string {
		n++
		return fmt.Sprintf("cold_%d", n)
	}
	p := &pair{b: b}
	p.run(0, "goose", func(b *testing.B) {
		db := stdlib.OpenDBFromPool(pool)
		defer db.Close()
		for b.Loop() {
			b.StopTimer()
			schema := fresh()
			files := renderedMigrations(b, schema)
			_, err := pool.Exec(ctx, "CREATE SCHEMA "+schema)
			require.NoError(b, err)
			b.StartTimer()
			provider, err := goose.NewProvider(goose.DialectPostgres, db, files,
				goose.WithTableName(schema+".mylib_goose_db_version"), goose.WithDisableGlobalRegistry(true))
			require.NoError(b, err)
			_, err = provider.Up(ctx)
			require.NoError(b, err)
		}
	})
	p.run(1, "mylib", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			schema := fresh()
			b.StartTimer()
			c, err := mylib.New(ctx, mylib.WithManager(host{pool, schema}))
			require.NoError(b, err)
			c.Close()
		}
	})
	p.report("≤ 1.1x")
}

// BenchmarkConcurrentStart: 8 concurrent New on one empty schema against one
// New. Target ≤ 2x: waiters back off briefly and find the work done.
func BenchmarkConcurrentStart(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Pool(b, pgtest.DSN(b), func(c *pgxpool.Config) { c.MaxConns = 16 })
	n := 0
	start := func(b *testing.B, clients int) {
		for b.Loop() {
			n++
			schema := fmt.Sprintf("conc_%d", n)
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := mylib.New(ctx, mylib.WithManager(host{pool, schema}))
					if err == nil {
						c.Close()
					}
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(b, err)
			}
		}
	}
	p := &pair{b: b}
	p.run(0, "1", func(b *testing.B) { start(b, 1) })
	p.run(1, "8", func(b *testing.B) { start(b, 8) })
	p.report("≤ 2x")
}

// renderedMigrations renders migrations/ for schema, as the library does,
// for goose to read directly.
func renderedMigrations(t testing.TB, schema string) fs.FS {
	out := fstest.MapFS{}
	entries, err := os.ReadDir("migrations")
	require.NoError(t, err)
	for _, e := range entries {
		text, err := os.ReadFile("migrations/" + e.Name())
		require.NoError(t, err)
		sql, err := sqltmpl.Render(schema, string(text))
		require.NoError(t, err)
		out[e.Name()] = &fstest.MapFile{Data: []byte(sql)}
	}
	return out
}

// runtimeMem reads the process's allocation count.
type runtimeMem struct{ mallocs uint64 }

func (m *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.mallocs = s.Mallocs
}
