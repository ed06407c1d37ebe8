// Command demo enqueues two jobs and claims them, on a throwaway server
// unless -dsn is given.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/acme/jobs"
	"github.com/acme/jobs/internal/pgtemp"
)

func main() {
	dsn := flag.String("dsn", "", "a database to use (default: a throwaway server)")
	flag.Parse()
	if err := demo(context.Background(), os.Stdout, *dsn); err != nil {
		log.Fatal(err)
	}
}

func demo(ctx context.Context, out io.Writer, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if dsn == "" {
		srv, err := pgtemp.Start(ctx)
		if err != nil {
			return fmt.Errorf("no -dsn given and no throwaway server could start: %w", err)
		}
		defer srv.Stop()
		dsn = srv.DSN()
	}
	c, err := jobs.New(ctx, jobs.WithDSN(dsn), jobs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return err
	}
	defer c.Close()
	for _, kind := range []string{"send-email", "resize-image"} {
		if _, err := c.Enqueue(ctx, kind, nil); err != nil {
			return err
		}
	}
	for {
		job, ok, err := c.Claim(ctx)
		if err != nil || !ok {
			return err
		}
		fmt.Fprintf(out, "claimed job %d: %s\n", job.ID, job.Kind)
	}
}
