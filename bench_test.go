package mylib_test

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/probe"
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

// histories are the numbers of migration files the start benchmarks run
// with: the probe's (internal/probe), and the probe's followed by tiny
// generated files up to 100 and 300, as a library's history grows over the
// years.
var histories = []int{0, 100, 300}

// history is the probe's migration files, followed by tiny files up to total
// (none when total is 0): each creates a table and comments on it.
func history(t testing.TB, total int) fstest.MapFS {
	t.Helper()
	files := fstest.MapFS{}
	for _, name := range probe.Names() {
		data, err := fs.ReadFile(probe.Files(), name)
		require.NoError(t, err)
		files[name] = &fstest.MapFile{Data: data}
	}
	for v := len(files) + 1; v <= total; v++ {
		files[fmt.Sprintf("%05d_h%d.sql", 1000+v, v)] = &fstest.MapFile{Data: []byte(fmt.Sprintf(
			"-- +goose Up\nCREATE TABLE {{tables.h%[1]d}} (id int);\nCOMMENT ON TABLE {{tables.h%[1]d}} IS 'history %[1]d';\n-- +goose Down\nDROP TABLE {{tables.h%[1]d}};\n", v))}
	}
	return files
}

// historyName names a sub-benchmark by its number of files.
func historyName(files fstest.MapFS) string { return fmt.Sprintf("files=%d", len(files)) }

// BenchmarkWarmStart: New on an up-to-date schema against pgxpool.New + Ping,
// the least a standalone library must do, with the probe's files and with
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
// alone on the same rendered files, with the probe's files and with a
// history of 100 and 300. Both get the empty schema made outside the timer
// (goose cannot make it). Target ≤ 1.0x with the probe's files, ≤ 1.2x at
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
					c, err := mylib.New(ctx, mylib.WithManager(host{pool, state.(string)}), mylib.WithLogger(quiet), mylib.WithProbe)
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
