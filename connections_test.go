package mylib_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
)

// The shared-pool pattern's whole promise, measured: five libraries embedded
// on one host pool of 10 use at most 10 server connections, however hard they
// work; the same five standalone open five pools of their own.
func TestConnections_SharedPoolAgainstStandalone(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	const libraries = 5
	busy := func(clients []*mylib.Client) {
		var wg sync.WaitGroup
		for _, c := range clients {
			for range 8 { // more goroutines than a pool has connections
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 20 {
						_, err := mylib.ProbeInsert(ctx, c, nil, "c")
						require.NoError(t, err)
					}
				}()
			}
		}
		wg.Wait()
	}

	hostPool := pgtest.Pool(t, withApp(t, dsn, "conn_shared"), func(c *pgxpool.Config) { c.MaxConns = 10 })
	var shared []*mylib.Client
	for i := range libraries {
		c, err := mylib.New(ctx, mylib.WithManager(host{hostPool, fmt.Sprintf("shared_%d", i)}), mylib.WithProbe)
		require.NoError(t, err)
		t.Cleanup(c.Close)
		shared = append(shared, c)
	}
	busy(shared)
	sharedBackends := backends(t, dsn, "conn_shared")

	var alone []*mylib.Client
	for i := range libraries {
		c, err := mylib.New(ctx, mylib.WithDSN(withApp(t, dsn, "conn_standalone")), mylib.WithSchema(fmt.Sprintf("alone_%d", i)),
			mylib.WithLogger(quietLogger()), mylib.WithProbe)
		require.NoError(t, err)
		t.Cleanup(c.Close)
		alone = append(alone, c)
	}
	busy(alone)
	aloneBackends := backends(t, dsn, "conn_standalone")

	t.Logf("%d libraries: embedded on one host pool of 10: %d server connections; standalone, %d pools: %d server connections",
		libraries, sharedBackends, libraries, aloneBackends)
	require.LessOrEqual(t, sharedBackends, 10, "embedded libraries use no connection beyond the host pool")
	require.Greater(t, aloneBackends, sharedBackends, "each standalone library holds connections of its own")
}
