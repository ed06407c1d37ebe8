package mylib_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

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

// path is one way to do the benchmarked thing: prepare readies one
// iteration outside the timer (nil when there is nothing to ready), do is the
// timed work.
type path struct {
	name    string
	prepare func(b *testing.B) any
	do      func(b *testing.B, state any)
}

// compare runs raw and lib as sub-benchmarks of their own, so that one run
// prints both, and then a third, "ratio", that interleaves them iteration by
// iteration: drift in the machine's load hits both alike, so the ratio it
// reports (lib/raw ns, and lib-raw allocs per op) is the figure to read.
func compare(b *testing.B, raw, lib path, target string) {
	for _, p := range []path{raw, lib} {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				state := p.ready(b)
				p.do(b, state)
			}
		})
	}
	b.Run("ratio", func(b *testing.B) {
		var ns [2]time.Duration
		var allocs [2]uint64
		paths := []path{raw, lib}
		for round := 0; b.Loop(); round++ {
			// Each goes first every other round: going second is not the same.
			for k := range 2 {
				i := (k + round) % 2
				p := paths[i]
				state := p.ready(b)
				before := mallocs()
				start := time.Now()
				p.do(b, state)
				ns[i] += time.Since(start)
				allocs[i] += mallocs() - before
			}
		}
		n := float64(b.N)
		ratio := float64(ns[1]) / float64(ns[0])
		delta := (float64(allocs[1]) - float64(allocs[0])) / n
		b.ReportMetric(ratio, lib.name+"/"+raw.name)
		b.ReportMetric(delta, "extra-allocs/op")
		line := fmt.Sprintf("%s: %s/%s = %.2fx (%.0f vs %.0f ns/op), %+.1f allocs/op, over %d interleaved pairs; target %s",
			strings.TrimSuffix(b.Name(), "/ratio"), lib.name, raw.name, ratio, float64(ns[1])/n, float64(ns[0])/n, delta, b.N, target)
		b.Log(line)
	})
}

// ready stops the timer around prepare.
func (p path) ready(b *testing.B) any {
	if p.prepare == nil {
		return nil
	}
	b.StopTimer()
	defer b.StartTimer()
	return p.prepare(b)
}

func mallocs() uint64 {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	return s.Mallocs
}

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

// histories are the numbers of migration files the start benchmarks run
// with: the library's own, and the library's followed by tiny generated files
// up to 100 and 300, as a library's history grows over the years.
var histories = []int{0, 100, 300}

// history is the library's migration files, followed by tiny files up to
// total (none when total is 0): each creates a table and comments on it.
func history(t testing.TB, total int) fstest.MapFS {
	t.Helper()
	files := libraryFiles(t, math.MaxInt64)
	for v := len(files) + 1; v <= total; v++ {
		files[fmt.Sprintf("%05d_h%d.sql", 1000+v, v)] = &fstest.MapFile{Data: []byte(fmt.Sprintf(
			"-- +goose Up\nCREATE TABLE {{tables.h%[1]d}} (id int);\nCOMMENT ON TABLE {{tables.h%[1]d}} IS 'history %[1]d';\n-- +goose Down\nDROP TABLE {{tables.h%[1]d}};\n", v))}
	}
	return files
}

// historyName names a sub-benchmark by its number of files.
func historyName(files fstest.MapFS) string { return fmt.Sprintf("files=%d", len(files)) }

// BenchmarkWarmStart: New on an up-to-date schema against pgxpool.New + Ping,
// the least a standalone library must do, with the library's files and with
// a history of 100 and 300. Target ≤ 1.2x at every size: an up-to-date schema
// is recognised in one query of one row, whatever the history.
func BenchmarkWarmStart(b *testing.B) {
	ctx := context.Background()
	for _, total := range histories {
		files := history(b, total)
		withFiles := mylib.WithMigrationFiles(files)
		b.Run(historyName(files), func(b *testing.B) {
			dsn := pgtest.DSN(b)
			c, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"), withFiles, mylib.WithLogger(quietLogger()))
			require.NoError(b, err)
			c.Close()
			compare(b, path{name: "pgxpool", do: func(b *testing.B, _ any) {
				pool, err := pgxpool.New(ctx, dsn)
				require.NoError(b, err)
				require.NoError(b, pool.Ping(ctx))
				pool.Close()
			}}, path{name: "library", do: func(b *testing.B, _ any) {
				c, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"), withFiles)
				require.NoError(b, err)
				c.Close()
			}}, "≤ 1.2x")
		})
	}
}

// BenchmarkColdStart: migrating an empty schema, against goose's Provider Up
// alone on the same rendered files, with the library's files and with a
// history of 100 and 300. Both get the empty schema made outside the timer
// (goose cannot make it). Target ≤ 1.0x with the library's files, ≤ 1.2x at
// 300.
func BenchmarkColdStart(b *testing.B) {
	ctx := context.Background()
	for _, total := range histories {
		files := history(b, total)
		withFiles := mylib.WithMigrationFiles(files)
		b.Run(historyName(files), func(b *testing.B) {
			pool := pgtest.Pool(b, pgtest.DSN(b))
			db := stdlib.OpenDBFromPool(pool)
			defer db.Close()
			n := 0
			fresh := func() string {
				n++
				return fmt.Sprintf("cold_%d", n)
			}
			type gooseRun struct {
				schema string
				files  fs.FS
			}
			target := "≤ 1.2x"
			if total == 0 {
				target = "≤ 1.0x"
			}
			compare(b, path{name: "goose", prepare: func(b *testing.B) any {
				schema := fresh()
				_, err := pool.Exec(ctx, "CREATE SCHEMA "+schema)
				require.NoError(b, err)
				return gooseRun{schema, rendered(b, files, schema)}
			}, do: func(b *testing.B, state any) {
				r := state.(gooseRun)
				provider, err := goose.NewProvider(goose.DialectPostgres, db, r.files,
					goose.WithTableName(r.schema+".mylib_goose_db_version"), goose.WithDisableGlobalRegistry(true))
				require.NoError(b, err)
				_, err = provider.Up(ctx)
				require.NoError(b, err)
			}}, path{name: "library", prepare: func(b *testing.B) any {
				schema := fresh()
				_, err := pool.Exec(ctx, "CREATE SCHEMA "+schema)
				require.NoError(b, err)
				return schema
			}, do: func(b *testing.B, state any) {
				c, err := mylib.New(ctx, mylib.WithManager(host{pool, state.(string)}), mylib.WithLogger(quietLogger()), withFiles)
				require.NoError(b, err)
				c.Close()
			}}, target)
		})
	}
}

// BenchmarkConcurrentStart: 8 concurrent New on one empty schema against one
// New. Target ≤ 2x: waiters back off briefly and find the work done.
func BenchmarkConcurrentStart(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Pool(b, pgtest.DSN(b), func(c *pgxpool.Config) { c.MaxConns = 16 })
	quiet := slog.New(slog.DiscardHandler)
	n := 0
	fresh := func(*testing.B) any {
		n++
		return fmt.Sprintf("conc_%d", n)
	}
	start := func(clients int) func(b *testing.B, state any) {
		return func(b *testing.B, state any) {
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := mylib.New(ctx, mylib.WithManager(host{pool, state.(string)}), mylib.WithLogger(quiet))
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
	compare(b, path{name: "1", prepare: fresh, do: start(1)}, path{name: "8", prepare: fresh, do: start(8)}, "≤ 2x")
}

// rendered renders files for schema, as the library does, for goose to read
// directly.
func rendered(t testing.TB, files fstest.MapFS, schema string) fs.FS {
	out := fstest.MapFS{}
	for name, f := range files {
		sql, err := sqltmpl.Render(schema, string(f.Data))
		require.NoError(t, err)
		out[name] = &fstest.MapFile{Data: []byte(sql)}
	}
	return out
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
