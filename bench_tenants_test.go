package mylib_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
)

// poolSetting is one way a host configures its pool.
type poolSetting struct {
	name string
	cfg  func(*pgxpool.Config)
}

// tenantSettings are the host settings BenchmarkTenants compares: pgx's
// defaults (a cache of 512 prepared statements per connection), unnamed
// statements (exec mode, what the README recommends behind PgBouncer), and a
// statement cache large enough for every tenant's statements.
var tenantSettings = []poolSetting{
	{"defaults", func(*pgxpool.Config) {}},
	{"exec", func(c *pgxpool.Config) { c.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec }},
	{"cache8192", func(c *pgxpool.Config) { c.ConnConfig.StatementCacheCapacity = 8192 }},
}

// openTenants migrates n schemas tenant_0 ... tenant_<n-1> on dsn and opens a
// Client for each on every pool. The pools are the host's: one per setting.
func openTenants(b *testing.B, dsn string, n int, pools []*pgxpool.Pool) [][]*mylib.Client {
	ctx := context.Background()
	quiet := mylib.WithLogger(slog.New(slog.DiscardHandler))
	clients := make([][]*mylib.Client, len(pools))
	for p := range pools {
		clients[p] = make([]*mylib.Client, n)
	}
	// Migrations need two connections each: a pool of their own, four at a time.
	setup := pgtest.Pool(b, dsn, func(c *pgxpool.Config) { c.MaxConns = 8 })
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				schema := fmt.Sprintf("tenant_%d", i)
				c, err := mylib.New(ctx, mylib.WithManager(host{setup, schema}), quiet, mylib.WithProbe)
				if err != nil {
					errs <- err
					return
				}
				c.Close()
				for p, pool := range pools {
					if clients[p][i], err = mylib.New(ctx, mylib.WithManager(host{pool, schema}), quiet, mylib.WithProbe); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
	b.Cleanup(func() {
		for _, cs := range clients {
			for _, c := range cs {
				c.Close()
			}
		}
	})
	return clients
}

// BenchmarkTenants: the probe's insert (a library's hot write) round robin
// over 1 to 2,000 tenants, each a schema of its own on one host pool, under
// each host setting, interleaved call by call. It reports each setting's time
// per insert and its ratio to the fastest setting at that size. Target: at
// 1,500 tenants, pgx's defaults cost at most 1.2x the fastest setting.
func BenchmarkTenants(b *testing.B) {
	ctx := context.Background()
	dsn := pgtest.DSN(b)
	pools := make([]*pgxpool.Pool, len(tenantSettings))
	for i, s := range tenantSettings {
		pools[i] = pgtest.Pool(b, dsn, s.cfg)
	}
	sizes := []int{1, 100, 1000, 1500, 2000}
	catalog := catalogBytes(b, pools[0])
	clients := openTenants(b, dsn, slices.Max(sizes), pools)
	var schemaBytes int64
	require.NoError(b, pools[0].QueryRow(ctx, `SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tenant_0' AND c.relkind = 'r'`).Scan(&schemaBytes))
	perSchema := fmt.Sprintf("per schema: %.0f KB of system catalogs, %.0f KB of empty tables and indexes",
		float64(catalogBytes(b, pools[0])-catalog)/float64(slices.Max(sizes))/1024, float64(schemaBytes)/1024)
	key := "account:1"
	record := func(b *testing.B, c *mylib.Client) {
		if _, err := mylib.ProbeInsert(ctx, c, nil, key); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			// Two rounds first: every connection's caches and the server's
			// catalog caches are as warm as they get.
			for range 2 {
				for i := range n {
					for p := range pools {
						record(b, clients[p][i])
					}
				}
			}
			ns := make([]time.Duration, len(pools))
			for round := 0; b.Loop(); round++ {
				i := round % n
				for k := range pools {
					p := (k + round) % len(pools) // each setting goes first in turn
					start := time.Now()
					record(b, clients[p][i])
					ns[p] += time.Since(start)
				}
			}
			best := slices.Min(ns)
			b.Log(perSchema)
			for p, s := range tenantSettings {
				caches, plans := backendMemory(b, pools[p])
				b.Logf("%d tenants, %s: a backend holds %.1f MB of catalog caches and %.1f MB of prepared statements",
					n, s.name, float64(caches)/(1<<20), float64(plans)/(1<<20))
			}
			var line strings.Builder
			fmt.Fprintf(&line, "%d tenants, %d inserts each:", n, b.N)
			for p, s := range tenantSettings {
				perOp := float64(ns[p]) / float64(b.N)
				b.ReportMetric(perOp/1e3, s.name+"-µs/op")
				fmt.Fprintf(&line, " %s %.0f µs (%.2fx)", s.name, perOp/1e3, float64(ns[p])/float64(best))
			}
			b.Log(line.String())
		})
	}
}

// catalogBytes is the size of the system catalogs (tables and indexes).
func catalogBytes(b *testing.B, pool *pgxpool.Pool) int64 {
	var n int64
	require.NoError(b, pool.QueryRow(context.Background(), `SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pg_catalog' AND c.relkind = 'r'`).Scan(&n))
	return n
}

// backendMemory returns the most memory any of pool's server backends holds
// in its catalog caches (CacheMemoryContext: relcache, catcache) and in
// prepared statements' plans (the CachedPlan contexts).
func backendMemory(b *testing.B, pool *pgxpool.Pool) (caches, plans int64) {
	ctx := context.Background()
	for _, conn := range pool.AcquireAllIdle(ctx) {
		var c, p int64
		err := conn.QueryRow(ctx, `SELECT
			coalesce(sum(total_bytes) FILTER (WHERE name = 'CacheMemoryContext' OR parent = 'CacheMemoryContext' AND name NOT LIKE 'CachedPlan%'), 0),
			coalesce(sum(total_bytes) FILTER (WHERE name LIKE 'CachedPlan%'), 0)
			FROM pg_backend_memory_contexts`).Scan(&c, &p)
		conn.Release()
		require.NoError(b, err)
		caches, plans = max(caches, c), max(plans, p)
	}
	return caches, plans
}
