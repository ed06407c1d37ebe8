package mylib_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/probe"
)

// A host that opens many tenants at once on a small pool: every New migrates
// a new schema, and none holds a connection while it waits for another, so
// all complete. Among the probe's files is a concurrent index build, which
// cannot run in a transaction and waits for every older transaction of the
// database: no migrator keeps one open while it runs. The bound is a deadline that
// fails the test instead of hanging it, with room for a loaded machine.
func TestNew_ConcurrentStartsOnManySchemasNeverExhaustThePool(t *testing.T) {
	const schemas, atOnce = 200, 16
	for _, size := range []int32{1, 2, 4} {
		t.Run(fmt.Sprintf("pool of %d", size), func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.DSN(t)
			pool := pgtest.Pool(t, dsn, func(c *pgxpool.Config) { c.MaxConns = size })
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()

			errs := make([]error, schemas)
			slots := make(chan struct{}, atOnce)
			var wg sync.WaitGroup
			for i := range schemas {
				slots <- struct{}{}
				wg.Go(func() {
					defer func() { <-slots }()
					c, err := mylib.New(ctx, mylib.WithManager(host{pool, fmt.Sprintf("tenant_%03d", i)}), mylib.WithLogger(quietLogger()),
						mylib.WithProbe)
					if err == nil {
						_, err = mylib.ProbeInsert(ctx, c, nil, "tenant")
						c.Close()
					}
					errs[i] = err
				})
			}
			wg.Wait()
			for i, err := range errs {
				require.NoError(t, err, "tenant_%03d", i)
			}
			var migrated, locks int
			require.NoError(t, pool.QueryRow(ctx, `SELECT
	(SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'mylib_goose_checksums'),
	(SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'
		AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))`).Scan(&migrated, &locks))
			require.Equal(t, schemas, migrated, "every schema migrated")
			require.Zero(t, locks, "no migration lock left")
			require.Len(t, appliedVersions(t, dsn, "tenant_199"), probeFiles)
			var valid int
			require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
WHERE c.relname = $1 AND i.indisvalid`, probe.Index).Scan(&valid))
			require.Equal(t, schemas, valid, "every schema has its valid concurrent index")
		})
	}
}
