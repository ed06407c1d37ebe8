package mylib_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/probe"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// Twenty tenants on a host pool whose connection caches 16 prepared
// statements: every statement works, the library keeps at most three
// quarters of the cache, and the host's own prepared statement is never
// evicted.
func TestSharedPool_TenantsBeyondTheStatementCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	const tenants, capacity = 20, 16
	pool := pgtest.Pool(t, dsn, func(c *pgxpool.Config) {
		c.MaxConns = 1 // one connection: one statement cache to look at
		c.ConnConfig.StatementCacheCapacity = capacity
	})
	migrating := pgtest.Pool(t, dsn) // migrations need two connections
	clients := make([]*mylib.Client, tenants)
	for i := range clients {
		schema := fmt.Sprintf("tenant_%d", i)
		c, err := mylib.New(ctx, mylib.WithManager(host{migrating, schema}), mylib.WithLogger(quietLogger()), mylib.WithProbe)
		require.NoError(t, err)
		c.Close()
		clients[i], err = mylib.New(ctx, mylib.WithManager(host{pool, schema}), mylib.WithProbe)
		require.NoError(t, err)
		t.Cleanup(clients[i].Close)
	}
	const hostSQL = "SELECT $1::int + 1"
	var two int
	require.NoError(t, pool.QueryRow(ctx, hostSQL, 1).Scan(&two))

	for round := range 2 {
		for i, c := range clients {
			key := fmt.Sprintf("account:%d", i)
			_, err := mylib.ProbeInsert(ctx, c, nil, key)
			require.NoError(t, err)
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			_, err = mylib.ProbeInsert(ctx, c, tx, key)
			require.NoError(t, err)
			require.NoError(t, tx.Commit(ctx))
			n, err := mylib.ProbeCount(ctx, c, key)
			require.NoError(t, err)
			require.EqualValues(t, 2*(round+1), n)
		}
	}

	rows, err := pool.Query(ctx, "SELECT statement FROM pg_prepared_statements")
	require.NoError(t, err)
	prepared, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	var ours int
	for _, sql := range prepared {
		if strings.Contains(sql, `"tenant_`) {
			ours++
		}
	}
	require.True(t, slices.Contains(prepared, hostSQL), "the host's statement is still prepared")
	require.Positive(t, ours)
	require.LessOrEqual(t, ours, capacity*3/4, "the library keeps a quarter of the cache for the host")
}

// Clients that close give their place in the cache back: tenants opened
// later get it.
func TestSharedPool_ClosedTenantsGiveTheirStatementsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	pool := pgtest.Pool(t, dsn, func(c *pgxpool.Config) {
		c.MaxConns = 1
		c.ConnConfig.StatementCacheCapacity = 4 // room for 3 of the library's statements
	})
	migrating := pgtest.Pool(t, dsn)
	insert := func(schema string) {
		c, err := mylib.New(ctx, mylib.WithManager(host{migrating, schema}), mylib.WithLogger(quietLogger()), mylib.WithProbe)
		require.NoError(t, err)
		c.Close()
		c, err = mylib.New(ctx, mylib.WithManager(host{pool, schema}), mylib.WithProbe)
		require.NoError(t, err)
		defer c.Close()
		_, err = mylib.ProbeInsert(ctx, c, nil, "c")
		require.NoError(t, err)
	}
	for i := range 8 {
		insert(fmt.Sprintf("tenant_%d", i))
	}
	insertSQL, err := sqltmpl.Render("tenant_7", probe.Insert.String())
	require.NoError(t, err)
	var prepared int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE statement = $1`, insertSQL).Scan(&prepared))
	require.Equal(t, 1, prepared, "the eighth tenant, opened after seven closed, runs prepared")
}
