package mylib_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/migratetest"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/probe"
)

// viaBouncer puts a PgBouncer in transaction mode in front of dsn's database
// and returns a DSN through it with the query mode PgBouncer before 1.21
// needs.
func viaBouncer(t *testing.T, dsn string, opts ...pgtest.BouncerOption) string {
	t.Helper()
	return pgtest.SetParam(pgtest.Bouncer(t, dsn, opts...), "default_query_exec_mode", "exec")
}

// The query modes a DSN behind PgBouncer before 1.21 must choose from: the
// library's statements, migrations included, work in both, directly and
// through PgBouncer (internal/fleettest runs fleets of processes there).
func TestQueryModes_TheLibraryWorksInExecAndSimpleProtocol(t *testing.T) {
	for _, target := range []string{"direct", "pgbouncer"} {
		for _, mode := range []string{"exec", "simple_protocol"} {
			t.Run(target+"/"+mode, func(t *testing.T) {
				t.Parallel()
				dsn := pgtest.DSN(t)
				if target == "pgbouncer" {
					dsn = viaBouncer(t, dsn, pgtest.BouncerPoolSize(4))
				}
				dsn = pgtest.SetParam(dsn, "default_query_exec_mode", mode)
				ctx := t.Context()

				c, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithLogger(quietLogger()), mylib.WithProbe)
				require.NoError(t, err, "New on an empty schema migrates it")
				defer c.Close()
				for range 6 {
					_, err := mylib.ProbeInsert(ctx, c, nil, "doc:1")
					require.NoError(t, err)
				}
				n, err := mylib.ProbeCount(ctx, c, "doc:1")
				require.NoError(t, err)
				require.EqualValues(t, 6, n)

				// A host's transaction, on a pool of its own: the row goes with it.
				hostPool := pgtest.Pool(t, dsn)
				for _, commit := range []bool{false, true} {
					tx, err := hostPool.Begin(ctx)
					require.NoError(t, err)
					_, err = mylib.ProbeInsert(ctx, c, tx, "doc:2")
					require.NoError(t, err)
					if commit {
						require.NoError(t, tx.Commit(ctx))
					} else {
						require.NoError(t, tx.Rollback(ctx))
					}
				}
				n, err = mylib.ProbeCount(ctx, c, "doc:2")
				require.NoError(t, err)
				require.EqualValues(t, 1, n, "the rolled back row is gone, the committed one stays")

				// Up to date: the fast path, standalone and embedded.
				again, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithLogger(quietLogger()), mylib.WithProbe)
				require.NoError(t, err)
				again.Close()
				embedded, err := mylib.New(ctx, mylib.WithManager(host{hostPool, "tenant"}), mylib.WithLogger(quietLogger()), mylib.WithProbe)
				require.NoError(t, err)
				embedded.Close()
				migratetest.RequireMigratedOnce(t, pgtest.Pool(t, dsn), "audit", probeFiles)
				migratetest.RequireMigratedOnce(t, pgtest.Pool(t, dsn), "tenant", probeFiles)
			})
		}
	}
}

// A host pool of 16 connections on a server pool of 4: PgBouncer queues the
// host's transactions, and nothing is lost or fails.
func TestPgBouncer_WorkloadOnAHostPoolLargerThanTheServerPool(t *testing.T) {
	t.Parallel()
	const workers, writes, keys = 32, 20, 4
	dsn := pgtest.DSN(t)
	hostPool := pgtest.Pool(t, viaBouncer(t, dsn, pgtest.BouncerPoolSize(4)), func(c *pgxpool.Config) { c.MaxConns = 16 })
	ctx := t.Context()
	c, err := mylib.New(ctx, mylib.WithManager(host{hostPool, "audit"}), mylib.WithLogger(quietLogger()), mylib.WithProbe)
	require.NoError(t, err)
	defer c.Close()

	var acked [keys]atomic.Int64
	var failures atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			fail := func(err error) {
				failures.Add(1)
				firstErr.Do(func() { t.Errorf("worker %d: %v", w, err) })
			}
			for i := range writes {
				k := (w + i) % keys
				key := fmt.Sprintf("account:%d", k)
				if _, err := mylib.ProbeInsert(ctx, c, nil, key); err != nil {
					fail(err)
					continue
				}
				acked[k].Add(1)
				if _, err := mylib.ProbeCount(ctx, c, key); err != nil {
					fail(err)
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, failures.Load(), "no call should fail")

	var total int64
	for k := range keys {
		n, err := mylib.ProbeCount(ctx, c, fmt.Sprintf("account:%d", k))
		require.NoError(t, err)
		require.Equal(t, acked[k].Load(), n, "account:%d: stored rows == acknowledged writes", k)
		total += n
	}
	require.EqualValues(t, workers*writes, total)
	var rows int64
	require.NoError(t, pgtest.Pool(t, dsn).QueryRow(ctx, `SELECT count(*) FROM audit.`+probe.Table).Scan(&rows))
	require.Equal(t, total, rows)
}
