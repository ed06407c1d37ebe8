// Command host is an application that uses the library, built from one
// release of it by the tests of releases (package releasetest): it opens the
// library on a schema, migrating it as New does, serves traffic (package
// traffic) until its standard input closes, and prints what it did.
//
//	host -schema NAME [-dsn DSN] [-workers N] [-start-timeout D]
//
// -dsn defaults to $DATABASE_URL. Once every worker has made a round of
// calls it prints "serving" on standard output; when its standard input
// closes, the traffic.Report as one line of JSON. The library's log lines go
// to standard error. It exits 1 when New fails, 2 on bad usage.
package main

// The library's own (newlib.manifest): the example domain's release tests,
// which a library made from the template writes for its own domain.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/releasetest/traffic"
)

func main() {
	fs := flag.NewFlagSet("host", flag.ContinueOnError)
	dsn := fs.String("dsn", "", "PostgreSQL DSN (default $DATABASE_URL)")
	schema := fs.String("schema", mylib.DefaultSchema, "the library's schema")
	workers := fs.Int("workers", 4, "goroutines calling the library")
	startTimeout := fs.Duration("start-timeout", time.Minute, "how long New may take")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *dsn == "" {
		*dsn = os.Getenv("DATABASE_URL")
	}
	os.Exit(run(*dsn, *schema, *workers, *startTimeout))
}

func run(dsn, schema string, workers int, startTimeout time.Duration) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema(schema), mylib.WithLogger(log))
	if err != nil {
		fmt.Fprintf(os.Stderr, "host: %v\n", err)
		return 1
	}
	defer c.Close()

	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // until the standard input closes
		close(stop)
	}()
	report := traffic.Serve(c, workers, stop, func() { fmt.Println("serving") })
	if err := json.NewEncoder(os.Stdout).Encode(report); err != nil {
		fmt.Fprintf(os.Stderr, "host: %v\n", err)
		return 1
	}
	return 0
}
