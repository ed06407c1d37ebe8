package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtemp"
	"github.com/pgdual/mylib/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// An operator's database, as the demo may meet it: the library at work in
// its default schema, with an event recorded.
func operatorsDatabase(t *testing.T) (dsn string, pool *pgxpool.Pool) {
	t.Helper()
	dsn = pgtest.DSN(t)
	pool = pgtest.Pool(t, dsn)
	c, err := mylib.New(t.Context(), mylib.WithManager(host{pool, mylib.DefaultSchema}), mylib.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	_, err = c.Record(t.Context(), mylib.Event{Actor: "operator", Action: "deploy", Subject: "order:1"})
	require.NoError(t, err)
	c.Close()
	return dsn, pool
}

type host struct {
	pool   *pgxpool.Pool
	schema string
}

func (h host) Pool() *pgxpool.Pool { return h.pool }
func (h host) Schema() string      { return h.schema }

// requireUntouched checks that the database holds what it held before the
// demo: the same catalog, and the operator's one event.
func requireUntouched(t *testing.T, dsn string, pool *pgxpool.Pool, before []string) {
	t.Helper()
	require.Empty(t, pgtest.CatalogChanges(before, pgtest.Catalog(t, dsn)), "the demo changed the database's catalog")
	c, err := mylib.New(t.Context(), mylib.WithManager(host{pool, mylib.DefaultSchema}), mylib.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	defer c.Close()
	n, err := c.Count(t.Context(), "order:1")
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the demo wrote into the library's own schema")
}

// With -dsn the demo works in schemas of its own, named plainly as the
// demo's, and leaves the database exactly as it found it.
func TestDemo_OnADatabaseLeavesItAsItFoundIt(t *testing.T) {
	dsn, pool := operatorsDatabase(t)
	before := pgtest.Catalog(t, dsn)

	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"-dsn", dsn}, &out, &errOut)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", &out, &errOut)
	t.Logf("the demo printed:\n%s", &out)

	require.Regexp(t, `working in new schemas (`+mylib.DefaultSchema+`_demo_[0-9a-f]{8}_\w+(, )?){3}, dropped at the end`, out.String())
	require.NotContains(t, out.String(), "throwaway")
	require.Contains(t, out.String(), "demo schemas dropped")
	requireUntouched(t, dsn, pool, before)
}

// Without -dsn the demo runs on a throwaway server, whatever $DATABASE_URL
// says: an operator who has it set for the deploy command and types the
// README's first command changes nothing in that database.
func TestDemo_NeverReadsDATABASE_URL(t *testing.T) {
	dsn, pool := operatorsDatabase(t)
	before := pgtest.Catalog(t, dsn)
	t.Setenv("DATABASE_URL", dsn)

	var out bytes.Buffer
	err := demo(t.Context(), &out, "", false)
	if errors.Is(err, pgtemp.ErrNoBinaries) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	require.NoError(t, err, out.String())
	require.Contains(t, out.String(), "throwaway PostgreSQL started")
	require.Contains(t, out.String(), "throwaway server stopped and removed")
	requireUntouched(t, dsn, pool, before)
}

// A demo stopped midway (Ctrl-C) still drops its schemas.
func TestDemo_StoppedMidwayDropsItsSchemas(t *testing.T) {
	dsn, pool := operatorsDatabase(t)
	before := pgtest.Catalog(t, dsn)
	ctx, cancel := context.WithCancel(t.Context())
	var out bytes.Buffer
	w := &cancelAfter{w: &out, match: regexp.MustCompile(`New migrated schema "\w+_tenant_a"`), cancel: cancel}

	err := demo(ctx, w, dsn, false)
	require.ErrorIs(t, err, context.Canceled, out.String())
	require.Contains(t, out.String(), "demo schemas dropped")
	requireUntouched(t, dsn, pool, before)
}

// cancelAfter writes to w and cancels once a write matches.
type cancelAfter struct {
	w      *bytes.Buffer
	match  *regexp.Regexp
	cancel context.CancelFunc
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	if c.match.Match(p) {
		defer c.cancel()
	}
	return c.w.Write(p)
}

func TestRun_BadUsageExits2(t *testing.T) {
	for _, args := range [][]string{{"-nope"}, {"extra"}} {
		var out, errOut bytes.Buffer
		require.Equal(t, 2, run(t.Context(), args, &out, &errOut), args)
		require.Contains(t, errOut.String(), "-dsn", "usage names the flags")
	}
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"-dsn", "postgres://u:secret-pw@localhost:1/db?connect_timeout=1"}, &out, &errOut)
	require.Equal(t, 1, code)
	require.NotContains(t, errOut.String()+out.String(), "secret-pw", "no password in any output")
}
