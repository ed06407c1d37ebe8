package mylib_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib"
)

// queryCounter is a pgx.QueryTracer that counts the queries run on a pool. A
// tracer from an OpenTelemetry package for pgx is set the same way, and the
// library needs no dependency of its own for it.
type queryCounter struct{ queries atomic.Int64 }

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.queries.Add(1)
	return ctx
}

func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// WithPoolConfig adjusts the pool a standalone library builds: here a tracer
// that sees every query the library runs, and the pool's size.
func ExampleWithPoolConfig() {
	ctx := context.Background()
	counter := &queryCounter{}
	client, err := mylib.New(ctx, mylib.WithDSN(os.Getenv("DATABASE_URL")), mylib.WithSchema("example_tracing"),
		mylib.WithPoolConfig(func(cfg *pgxpool.Config) {
			cfg.ConnConfig.Tracer = counter
			cfg.MaxConns = 4
		}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	// The first event of a subject also creates the subject: count from the second.
	if _, err := client.Record(ctx, mylib.Event{Actor: "alice", Action: "login", Subject: "account:42"}); err != nil {
		fmt.Println(err)
		return
	}
	before := counter.queries.Load()
	if _, err := client.Record(ctx, mylib.Event{Actor: "alice", Action: "logout", Subject: "account:42"}); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := client.Count(ctx, "account:42"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("queries traced for a Record and a Count:", counter.queries.Load()-before)
	// Output:
	// queries traced for a Record and a Count: 2
}
