package main

// The library's own (newlib.manifest): the demo runs the example domain, and a
// library made from the template rewrites it for its own.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtemp"
)

// tenant is the host's Manager: its pool and the schema it lends.
type tenant struct {
	pool   *pgxpool.Pool
	schema string
}

func (t tenant) Pool() *pgxpool.Pool { return t.pool }
func (t tenant) Schema() string      { return t.schema }

// demo runs the library end to end: standalone on its own pool, then
// embedded twice on one host pool in two schemas, and prints what happened.
// With no DSN it starts a throwaway PostgreSQL server from the locally
// installed binaries and stops it at the end.
func demo(ctx context.Context, out io.Writer, dsn string, verbose bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	logOut := io.Discard
	if verbose {
		logOut = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))

	if dsn == "" {
		start := time.Now()
		srv, err := pgtemp.Start(ctx)
		if err != nil {
			return fmt.Errorf("no -dsn given and no throwaway server could start: %w", err)
		}
		defer func() {
			if err := srv.Stop(); err != nil {
				fmt.Fprintln(out, "stopping the throwaway server:", err)
			} else {
				fmt.Fprintln(out, "throwaway server stopped and removed")
			}
		}()
		dsn = srv.DSN()
		fmt.Fprintf(out, "throwaway PostgreSQL started in %s (socket in %s)\n", time.Since(start).Round(time.Millisecond), srv.SocketDir())
	}

	fmt.Fprintln(out, "\n== standalone: the library owns its pool")
	start := time.Now()
	alone, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithLogger(log), mylib.WithPoolConfig(func(c *pgxpool.Config) {
		c.ConnConfig.RuntimeParams["application_name"] = "mylib-standalone"
	}))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "New migrated schema %q in %s\n", alone.Schema(), time.Since(start).Round(time.Millisecond))
	if err := workload(ctx, out, alone, "standalone"); err != nil {
		return err
	}

	fmt.Fprintln(out, "\n== embedded: two tenants share one host pool")
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return err
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["application_name"] = "mylib-host"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	var tenants []*mylib.Client
	for _, schema := range []string{"tenant_a", "tenant_b"} {
		start := time.Now()
		c, err := mylib.New(ctx, mylib.WithManager(tenant{pool, schema}), mylib.WithLogger(log))
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(out, "New migrated schema %q on the host pool in %s\n", c.Schema(), time.Since(start).Round(time.Millisecond))
		tenants = append(tenants, c)
	}
	if err := workload(ctx, out, tenants[0], "tenant_a"); err != nil {
		return err
	}
	n, err := tenants[1].Count(ctx, "order:1")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "tenant_b sees %d events of order:1 (tenant_a wrote them: schemas are isolated)\n", n)

	fmt.Fprintln(out, "\n== what is in the database")
	if err := report(ctx, out, pool); err != nil {
		return err
	}

	alone.Close()
	for _, c := range tenants {
		c.Close()
	}
	var one int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("the host pool should outlive the clients: %w", err)
	}
	fmt.Fprintln(out, "\nclients closed: the standalone pool is closed, the host pool still answers")
	return nil
}

// workload records a few events and reads them back.
func workload(ctx context.Context, out io.Writer, c *mylib.Client, who string) error {
	for i, action := range []string{"create", "pay", "ship"} {
		if _, err := c.Record(ctx, mylib.Event{Actor: who, Action: action, Subject: "order:1", Data: []byte(fmt.Sprintf(`{"step": %d}`, i+1))}); err != nil {
			return err
		}
	}
	page, err := c.List(ctx, "order:1", 2, nil)
	if err != nil {
		return err
	}
	rest, err := c.List(ctx, "order:1", 2, page.Next)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "recorded 3 events of order:1 in %q; newest first, pages of 2:", c.Schema())
	for _, ev := range append(page.Events, rest.Events...) {
		fmt.Fprintf(out, " %s", ev.Action)
	}
	fmt.Fprintln(out)
	return nil
}

// report prints each schema's version table and rows, and the connections used.
func report(ctx context.Context, out io.Writer, pool *pgxpool.Pool) error {
	for _, schema := range []string{mylib.DefaultSchema, "tenant_a", "tenant_b"} {
		var versions []int64
		var events int
		err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT
	(SELECT array_agg(version_id ORDER BY version_id) FROM %s WHERE version_id > 0 AND is_applied),
	(SELECT count(*) FROM %s)`,
			pgx.Identifier{schema, "mylib_goose_db_version"}.Sanitize(), pgx.Identifier{schema, "events"}.Sanitize())).Scan(&versions, &events)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "schema %-9s version table %s.mylib_goose_db_version: versions %v; events: %d\n", schema, schema, versions, events)
	}
	rows, err := pool.Query(ctx, `SELECT application_name, count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'mylib-%' GROUP BY 1 ORDER BY 1`)
	if err != nil {
		return err
	}
	counts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		App string
		N   int
	}])
	if err != nil {
		return err
	}
	for _, c := range counts {
		fmt.Fprintf(out, "connections open by %s: %d\n", c.App, c.N)
	}
	fmt.Fprintln(out, "(mylib-host: ONE pool of at most 4 connections serves both tenants)")
	return nil
}
