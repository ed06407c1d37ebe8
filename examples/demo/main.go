// Command demo runs the library end to end, and leaves nothing behind:
// standalone on a pool of its own, then embedded, two tenants on one host
// pool, printing what happened.
//
//	go run ./examples/demo              # on a throwaway PostgreSQL, started here and removed at the end
//	go run ./examples/demo -dsn "$DSN"  # on a database of yours, in schemas of its own, dropped at the end
//
// It never reads $DATABASE_URL: a database of yours is used only when named
// with -dsn, and then only in new schemas named <library>_demo_<random>_...,
// which it drops when it ends, on an error or Ctrl-C too. The throwaway
// server needs PostgreSQL's server binaries (internal/pgtemp finds them).
//
// It is a program of its own, not a command of cmd/mylib, so that the
// command a deploy step installs carries no test server.
package main

// The library's own (newlib.manifest): the demo of the example domain, which a
// library made from the template writes for its own.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtemp"
	"github.com/pgdual/mylib/internal/redact"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args and returns the exit code: 0 done, 1 an
// error, 2 bad usage.
func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(errOut)
	dsn := fs.String("dsn", "", "a PostgreSQL DSN to run on, in schemas of the demo's own that it drops at the end\n(default: a throwaway server; $DATABASE_URL is never read)")
	verbose := fs.Bool("v", false, "show the library's log lines")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(errOut, "demo: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	if err := demo(ctx, out, *dsn, *verbose); err != nil {
		fmt.Fprintf(errOut, "demo: %v\n", redact.Error(err, redact.Secrets(*dsn)...))
		return 1
	}
	return 0
}

// tenant is the host's Manager: its pool and the schema it lends.
type tenant struct {
	pool   *pgxpool.Pool
	schema string
}

func (t tenant) Pool() *pgxpool.Pool { return t.pool }
func (t tenant) Schema() string      { return t.schema }

// demo runs the library on dsn, or on a throwaway server when dsn is empty,
// in three schemas of its own, and drops them at the end.
func demo(ctx context.Context, out io.Writer, dsn string, verbose bool) (err error) {
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
			if stopErr := srv.Stop(); stopErr != nil {
				err = errors.Join(err, fmt.Errorf("stopping the throwaway server: %w", stopErr))
				return
			}
			fmt.Fprintln(out, "throwaway server stopped and removed")
		}()
		dsn = srv.DSN()
		fmt.Fprintf(out, "throwaway PostgreSQL started in %s (socket in %s)\n", time.Since(start).Round(time.Millisecond), srv.SocketDir())
	}

	schemas, err := demoSchemas()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "working in new schemas %s, dropped at the end\n", strings.Join(schemas[:], ", "))
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return errors.New("-dsn is not a valid connection string (postgres://user@host:5432/database or host=... dbname=...)")
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["application_name"] = "demo-host"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := requireNew(ctx, pool, schemas[:]); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, drop(pool, schemas[:], out)) }()

	fmt.Fprintln(out, "\n== standalone: the library owns its pool")
	start := time.Now()
	alone, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema(schemas[0]), mylib.WithLogger(log),
		mylib.WithPoolConfig(func(c *pgxpool.Config) { c.ConnConfig.RuntimeParams["application_name"] = "demo-standalone" }))
	if err != nil {
		return err
	}
	defer alone.Close()
	fmt.Fprintf(out, "New migrated schema %q in %s\n", alone.Schema(), time.Since(start).Round(time.Millisecond))
	if err := workload(ctx, out, alone); err != nil {
		return err
	}

	fmt.Fprintln(out, "\n== embedded: two tenants share one host pool")
	var tenants []*mylib.Client
	for _, schema := range schemas[1:] {
		start := time.Now()
		c, err := mylib.New(ctx, mylib.WithManager(tenant{pool, schema}), mylib.WithLogger(log))
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(out, "New migrated schema %q on the host pool in %s\n", c.Schema(), time.Since(start).Round(time.Millisecond))
		tenants = append(tenants, c)
	}
	if err := workload(ctx, out, tenants[0]); err != nil {
		return err
	}
	n, err := tenants[1].Count(ctx, "order:1")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s sees %d events of order:1 (%s wrote them: schemas are isolated)\n", tenants[1].Schema(), n, tenants[0].Schema())

	fmt.Fprintln(out, "\n== what is in the database")
	if err := report(ctx, out, pool, schemas[:]); err != nil {
		return err
	}

	alone.Close()
	for _, c := range tenants {
		c.Close()
	}
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("the host pool should outlive the clients: %w", err)
	}
	fmt.Fprintln(out, "\nclients closed: the standalone pool is closed, the host pool still answers")
	return nil
}

// demoSchemas names the demo's schemas: the library's default schema, then
// _demo_ and a random part, so that they are new, and plainly the demo's.
func demoSchemas() ([3]string, error) {
	random := make([]byte, 4)
	if _, err := rand.Read(random); err != nil {
		return [3]string{}, err
	}
	prefix := mylib.DefaultSchema + "_demo_" + hex.EncodeToString(random) + "_"
	return [3]string{prefix + "standalone", prefix + "tenant_a", prefix + "tenant_b"}, nil
}

// requireNew refuses to run in a schema that exists: the demo drops its
// schemas at the end, and must never drop one it did not create.
func requireNew(ctx context.Context, pool *pgxpool.Pool, schemas []string) error {
	var taken []string
	if err := pool.QueryRow(ctx, "SELECT coalesce(array_agg(nspname), '{}') FROM pg_catalog.pg_namespace WHERE nspname = ANY($1)", schemas).Scan(&taken); err != nil {
		return err
	}
	if len(taken) > 0 {
		return fmt.Errorf("schema %s exists already; run the demo again (it picks new random names)", strings.Join(taken, ", "))
	}
	return nil
}

// drop drops the demo's schemas and all they hold, with a context of its
// own: the demo's may have ended (Ctrl-C).
func drop(pool *pgxpool.Pool, schemas []string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quoted := make([]string, len(schemas))
	for i, s := range schemas {
		quoted[i] = pgx.Identifier{s}.Sanitize()
	}
	if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+strings.Join(quoted, ", ")+" CASCADE"); err != nil {
		return fmt.Errorf("dropping the demo's schemas (drop them yourself: DROP SCHEMA %s CASCADE): %w", strings.Join(quoted, ", "), err)
	}
	fmt.Fprintln(out, "\ndemo schemas dropped")
	return nil
}

// workload records a few events and reads them back.
func workload(ctx context.Context, out io.Writer, c *mylib.Client) error {
	for i, action := range []string{"create", "pay", "ship"} {
		ev := mylib.Event{Actor: "demo", Action: action, Subject: "order:1", Data: []byte(fmt.Sprintf(`{"step": %d}`, i+1))}
		if _, err := c.Record(ctx, ev); err != nil {
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

// report prints each schema's applied migrations and events, and the
// connections each pool holds.
func report(ctx context.Context, out io.Writer, pool *pgxpool.Pool, schemas []string) error {
	for _, schema := range schemas {
		st, err := mylib.Status(ctx, mylib.WithManager(tenant{pool, schema}))
		if err != nil {
			return err
		}
		var applied []int64
		for _, m := range st {
			if m.State == mylib.StateApplied {
				applied = append(applied, m.Version)
			}
		}
		var events int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "events"}.Sanitize()).Scan(&events); err != nil {
			return err
		}
		fmt.Fprintf(out, "schema %s: migrations applied %v, events %d\n", schema, applied, events)
	}
	rows, err := pool.Query(ctx, `SELECT application_name, count(*) FROM pg_catalog.pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'demo-%' GROUP BY 1 ORDER BY 1`)
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
	fmt.Fprintln(out, "(demo-host: ONE pool of at most 4 connections serves both tenants)")
	return nil
}
