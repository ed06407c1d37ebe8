package mylib_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// Twenty tenants on a host pool whose connection caches 16 prepared
// statements: every method works, the library keeps at most three quarters
// of the cache, and the host's own prepared statement is never evicted.
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
		c, err := mylib.New(ctx, mylib.WithManager(host{migrating, schema}), mylib.WithLogger(quietLogger()))
		require.NoError(t, err)
		c.Close()
		clients[i], err = mylib.New(ctx, mylib.WithManager(host{pool, schema}))
		require.NoError(t, err)
		t.Cleanup(clients[i].Close)
	}
	const hostSQL = "SELECT $1::int + 1"
	var two int
	require.NoError(t, pool.QueryRow(ctx, hostSQL, 1).Scan(&two))

	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for round := range 2 {
		for i, c := range clients {
			subject := fmt.Sprintf("account:%d", i)
			_, err := c.Record(ctx, mylib.Event{Actor: "a", Action: "open", Subject: subject, At: at,
				Data: json.RawMessage(fmt.Sprintf(`{"round": %d}`, round))})
			require.NoError(t, err)
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			_, err = c.RecordTx(ctx, tx, mylib.Event{Actor: "a", Action: "edit", Subject: subject})
			require.NoError(t, err)
			require.NoError(t, tx.Commit(ctx))

			first, err := c.List(ctx, subject, 1, nil)
			require.NoError(t, err)
			require.Equal(t, "edit", first.Events[0].Action)
			rest, err := c.List(ctx, subject, 10, first.Next)
			require.NoError(t, err)
			require.Len(t, rest.Events, 2*round+1)
			n, err := c.Count(ctx, subject)
			require.NoError(t, err)
			require.EqualValues(t, 2*(round+1), n)
		}
	}
	for _, c := range clients {
		purged, err := c.Purge(ctx, at.Add(time.Second))
		require.NoError(t, err)
		require.EqualValues(t, 2, purged, "the two events at the given time")
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		purged, err = c.PurgeTx(ctx, tx, time.Now().Add(time.Hour))
		require.NoError(t, err)
		require.EqualValues(t, 2, purged)
		require.NoError(t, tx.Commit(ctx))
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
	record := func(schema string) {
		c, err := mylib.New(ctx, mylib.WithManager(host{migrating, schema}), mylib.WithLogger(quietLogger()))
		require.NoError(t, err)
		c.Close()
		c, err = mylib.New(ctx, mylib.WithManager(host{pool, schema}))
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Record(ctx, mylib.Event{Actor: "a", Action: "b", Subject: "c"})
		require.NoError(t, err)
	}
	for i := range 8 {
		record(fmt.Sprintf("tenant_%d", i))
	}
	recordSQL, err := sqltmpl.Render("tenant_7", mylib.RecordSQLText)
	require.NoError(t, err)
	var prepared int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE statement = $1`, recordSQL).Scan(&prepared))
	require.Equal(t, 1, prepared, "the eighth tenant, opened after seven closed, runs prepared")
}
