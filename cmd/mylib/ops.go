package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/redact"
)

const defaultSchema = mylib.DefaultSchema

// target is the database and schema a command works on.
type target struct {
	dsn, schema string
	timeout     time.Duration
	verbose     bool
}

func (t *target) define(fs *flag.FlagSet) {
	fs.StringVar(&t.dsn, "dsn", "", "PostgreSQL DSN (default $DATABASE_URL)")
	fs.StringVar(&t.schema, "schema", defaultSchema, "the library's schema")
	fs.DurationVar(&t.timeout, "timeout", 0, "give up after this long (default: no limit; Ctrl-C stops)")
}

// defineLogged is define for a command that opens the library, which logs.
func (t *target) defineLogged(fs *flag.FlagSet) {
	t.define(fs)
	fs.BoolVar(&t.verbose, "v", false, "show the library's log lines")
}

// options are the library's options for t, or a usage error.
func (t *target) options(errOut io.Writer, cmd string) ([]mylib.Option, bool) {
	t.dsn = dsnOrEnv(t.dsn)
	if t.dsn == "" {
		fmt.Fprintf(errOut, "%s %s: no database: pass -dsn, or set DATABASE_URL\n", progName, cmd)
		return nil, false
	}
	level := slog.LevelWarn
	if t.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level}))
	return []mylib.Option{mylib.WithDSN(t.dsn), mylib.WithSchema(t.schema), mylib.WithLogger(log)}, true
}

// dsnOrEnv is dsn, or $DATABASE_URL when it is empty. The flag's default is
// not the variable itself: usage would print its password.
func dsnOrEnv(dsn string) string {
	if dsn == "" {
		return os.Getenv("DATABASE_URL")
	}
	return dsn
}

func (t *target) context(ctx context.Context) (context.Context, context.CancelFunc) {
	if t.timeout > 0 {
		return context.WithTimeout(ctx, t.timeout)
	}
	return context.WithCancel(ctx)
}

// fail prints err for cmd and returns its exit code: bad input is bad usage.
func fail(errOut io.Writer, cmd string, err error) int {
	fmt.Fprintf(errOut, "%s %s: %v\n", progName, cmd, err)
	if errors.Is(err, mylib.ErrInvalidConfig) || errors.Is(err, mylib.ErrInvalidSchema) {
		return exitUsage
	}
	return exitError
}

func migrateCmd(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) int {
	var t target
	t.defineLogged(fs)
	to := fs.String("to", "", "take the schema to this version: up, or down through the files' Down sections (0 undoes every file)")
	lockTimeout := fs.Duration("lock-timeout", 0, "each migration statement's lock_timeout (default 100ms); a statement that runs out of it gives way and is tried again")
	return func(ctx context.Context, out, errOut io.Writer) int {
		opts, ok := t.options(errOut, "migrate")
		if !ok {
			return exitUsage
		}
		if *lockTimeout != 0 {
			opts = append(opts, mylib.WithLockTimeout(*lockTimeout))
		}
		ctx, cancel := t.context(ctx)
		defer cancel()
		if *to == "" {
			applied, err := mylib.Migrate(ctx, opts...)
			for _, f := range applied {
				fmt.Fprintf(out, "applied %s\n", f)
			}
			if err != nil {
				return fail(errOut, "migrate", err)
			}
			fmt.Fprintf(out, "schema %q is up to date\n", t.schema)
			return exitOK
		}
		version, err := strconv.ParseInt(*to, 10, 64)
		if err != nil || version < 0 {
			fmt.Fprintf(errOut, "%s migrate: -to %q is not a version: give a file's number, or 0 to undo every file\n", progName, *to)
			return exitUsage
		}
		moved, err := mylib.MigrateTo(ctx, version, opts...)
		for _, f := range moved.Applied {
			fmt.Fprintf(out, "applied %s\n", f)
		}
		for _, f := range moved.Undone {
			fmt.Fprintf(out, "undid %s\n", f)
		}
		if err != nil {
			return fail(errOut, "migrate", err)
		}
		fmt.Fprintf(out, "schema %q is at version %d\n", t.schema, moved.Version)
		return exitOK
	}
}

func statusCmd(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) int {
	var t target
	t.defineLogged(fs)
	asJSON := fs.Bool("json", false, "print JSON: {schema, migrations: [{version, file, state, applied_at, note}], refused}")
	return func(ctx context.Context, out, errOut io.Writer) int {
		opts, ok := t.options(errOut, "status")
		if !ok {
			return exitUsage
		}
		ctx, cancel := t.context(ctx)
		defer cancel()
		st, err := mylib.Status(ctx, opts...)
		refused := errors.Is(err, mylib.ErrDrift) || errors.Is(err, mylib.ErrOutOfOrder) || errors.Is(err, mylib.ErrUnknownVersion)
		if err != nil && !refused {
			return fail(errOut, "status", err)
		}
		pending := false
		for _, m := range st {
			pending = pending || m.State == mylib.StatePending
		}
		if *asJSON {
			report := struct {
				Schema     string                  `json:"schema"`
				Migrations []mylib.MigrationStatus `json:"migrations"`
				Refused    string                  `json:"refused,omitempty"`
			}{Schema: t.schema, Migrations: st}
			if err != nil {
				report.Refused = err.Error()
			}
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			if err := enc.Encode(report); err != nil {
				return fail(errOut, "status", err)
			}
		} else {
			printStatus(out, t.schema, st)
		}
		switch {
		case refused:
			fmt.Fprintf(errOut, "%s status: refused: %v\n", progName, err)
			return exitRefused
		case pending:
			return exitPending
		}
		return exitOK
	}
}

// printStatus prints one line per migration, aligned.
func printStatus(out io.Writer, schema string, st []mylib.MigrationStatus) {
	fmt.Fprintf(out, "schema %q\n", schema)
	width := len("(no file)")
	for _, m := range st {
		width = max(width, len(m.File))
	}
	for _, m := range st {
		file, at := m.File, "-"
		if file == "" {
			file = "(no file)"
		}
		if !m.AppliedAt.IsZero() {
			at = m.AppliedAt.Format("2006-01-02 15:04:05")
		}
		line := fmt.Sprintf("%6d  %-*s  %-7s  %s", m.Version, width, file, m.State, at)
		if m.Note != "" {
			line += "  " + m.Note
		}
		fmt.Fprintln(out, line)
	}
}

func sqlCmd(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) int {
	schema := fs.String("schema", defaultSchema, "the library's schema")
	from := fs.Int64("from", 0, "the schema's applied version: the script holds the files above it")
	return func(_ context.Context, out, errOut io.Writer) int {
		script, err := mylib.Script(*schema, *from)
		if err != nil {
			return fail(errOut, "sql", err)
		}
		fmt.Fprint(out, script)
		return exitOK
	}
}

func grantCmd(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) int {
	var t target
	t.define(fs)
	role := fs.String("role", "", "the role the application connects as (required)")
	return func(ctx context.Context, out, errOut io.Writer) int {
		if *role == "" {
			fmt.Fprintf(errOut, "%s grant: -role is required: name the role the application connects as\n", progName)
			fs.Usage()
			return exitUsage
		}
		if t.dsn = dsnOrEnv(t.dsn); t.dsn == "" {
			fmt.Fprintf(errOut, "%s grant: no database: pass -dsn with the schema owner's role, or set DATABASE_URL\n", progName)
			return exitUsage
		}
		stmts, err := mylib.Grants(t.schema, *role)
		if err != nil {
			return fail(errOut, "grant", err)
		}
		ctx, cancel := t.context(ctx)
		defer cancel()
		if err := execAll(ctx, t.dsn, stmts); err != nil {
			return fail(errOut, "grant", redact.Error(err, redact.Secrets(t.dsn)...))
		}
		for _, s := range stmts {
			fmt.Fprintf(out, "%s;\n", s)
		}
		return exitOK
	}
}

// execAll runs stmts in one transaction on dsn.
func execAll(ctx context.Context, dsn string, stmts []string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(context.Background())
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%s: %w (run grant with the DSN of the role that owns the schema)", s, err)
			}
		}
		return nil
	})
}
