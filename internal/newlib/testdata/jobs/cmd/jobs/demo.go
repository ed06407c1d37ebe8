package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/acme/jobs"
	"github.com/acme/jobs/internal/pgtemp"
)

// demo enqueues two jobs and claims them, on a throwaway server unless dsn
// is given.
func demo(ctx context.Context, out io.Writer, dsn string, verbose bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	logOut := io.Discard
	if verbose {
		logOut = os.Stderr
	}
	if dsn == "" {
		srv, err := pgtemp.Start(ctx)
		if err != nil {
			return fmt.Errorf("no -dsn given and no throwaway server could start: %w", err)
		}
		defer srv.Stop()
		dsn = srv.DSN()
	}
	c, err := jobs.New(ctx, jobs.WithDSN(dsn), jobs.WithLogger(slog.New(slog.NewTextHandler(logOut, nil))))
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
