// Package migrationcheck refuses migration files that would block an install
// in use: statements that hold a lock blocking reads or writes of a table
// for longer than a moment, and renames and drops of what the release before
// still uses.
//
// # How it decides
//
// It does not read the SQL for keywords, which a comment or a string literal
// could fool. It applies the files, in version order, to a scratch schema of
// a test database, the way the library applies them: goose parses each file
// and runs its statements, all in one transaction unless the file is marked
// NO TRANSACTION. Before each file, every table holds a few rows, as on an
// install in use. Around each statement the check reads the server's own
// account of what the statement did to the tables that existed before the
// file:
//
//   - a table's relfilenode changed: it was rewritten;
//   - an index appeared on it, or an index's relfilenode changed, inside a
//     transaction: it was built without CONCURRENTLY (a concurrent build
//     cannot run in a transaction block, so a statement of a NO TRANSACTION
//     file is first tried in one: SQLSTATE 25001 proves it concurrent);
//   - it was scanned (pg_stat_get_xact_numscans) while this transaction held
//     a lock on it of mode SHARE or stronger (pg_locks), which blocks writes:
//     a validation (SET NOT NULL, a foreign key or check without NOT VALID),
//     or rows read under a lock that an earlier statement took;
//   - its name, or a column's name (by oid and attnum), changed, or it or a
//     column is gone.
//
// Tables created in the same file are exempt: no install has rows in them yet.
//
// # Allowances
//
// A statement that breaks a rule but cannot block anyone is allowed by a
// whole-line comment right above it that names the rule and says why:
//
//	-- mylib:allow rewrite: the table is empty in every install
//
// An allowance without a reason, for an unknown rule, or that allows nothing
// is refused. The library's checksums ignore such lines, so an applied file
// can be given one without drift.
package migrationcheck

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/pgdual/mylib/internal/redact"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// Files names a library's migration files.
type Files struct {
	// FS holds the files, e.g. the library's embedded FS.
	FS fs.FS
	// Dir is the directory of FS that holds them, as *.sql goose files;
	// messages name files by it, e.g. "migrations".
	Dir string
	// Module is the library's name, with which allowances start:
	// "-- <module>:allow rule: reason".
	Module string
}

// schema is the scratch schema the files are applied to.
const schema = "migrationcheck"

// sampleRows is how many rows each table holds before each file.
const sampleRows = 2

// Check applies files to a scratch schema of the database at dsn (a test
// database of its own: the schema is dropped and made again) and returns nil
// when no statement breaks a rule or each that does is allowed, a *Refusal
// that names each statement that breaks one, and another error when the check
// could not run. A file that fails to apply on tables holding rows is a
// Refusal too: an install in use would fail the same way. It needs a role
// that may create a schema, and statistics (track_counts, on by default).
func Check(ctx context.Context, dsn string, files Files) error {
	if err := sqltmpl.ValidateSchema(files.Module); err != nil {
		return fmt.Errorf("migration check: the module name %q cannot start allowances: %w", files.Module, err)
	}
	names, err := fileNames(files)
	if err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("migration check: %w", redact.Error(err, redact.Secrets(dsn)...))
	}
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("migration check: connecting: %w", redact.Error(err, redact.Secrets(dsn)...))
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if err := prepareSchema(ctx, admin); err != nil {
		return err
	}
	w := &watcher{module: files.Module}
	db := sql.OpenDB(&watchedConnector{base: stdlib.GetConnector(*cfg), w: w})
	db.SetMaxOpenConns(1)
	defer db.Close()

	var problems []Problem
	for _, name := range names {
		found, err := checkFile(ctx, admin, db, w, files, name)
		if err != nil {
			return err
		}
		problems = append(problems, found...)
		if len(found) > 0 && found[len(found)-1].failed {
			break // the files after it cannot be applied
		}
	}
	if _, err := admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
		return fmt.Errorf("migration check: dropping the scratch schema %s: %w", schema, err)
	}
	if len(problems) > 0 {
		return &Refusal{Problems: problems}
	}
	return nil
}

// fileNames lists the *.sql files of files.Dir in version order.
func fileNames(files Files) ([]string, error) {
	paths, err := fs.Glob(files.FS, path.Join(files.Dir, "*.sql"))
	if err != nil {
		return nil, fmt.Errorf("migration check: listing %s: %w", files.Dir, err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("migration check: no migration files (*.sql) in %s", files.Dir)
	}
	versions := make(map[string]int64, len(paths))
	names := make([]string, 0, len(paths))
	for _, p := range paths {
		name := path.Base(p)
		v, err := goose.NumericComponent(name)
		if err != nil {
			return nil, fmt.Errorf("migration check: %s: name it NNNNN_description.sql: %w", p, err)
		}
		versions[name] = v
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(versions[a], versions[b]) })
	return names, nil
}

func prepareSchema(ctx context.Context, admin *pgx.Conn) error {
	var counts string
	if err := admin.QueryRow(ctx, "SELECT pg_catalog.current_setting('track_counts')").Scan(&counts); err != nil {
		return fmt.Errorf("migration check: %w", err)
	}
	if counts != "on" {
		return errors.New("migration check: the server runs with track_counts = off, so it counts no scans: turn it on (the default) for the test database")
	}
	if _, err := admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE; CREATE SCHEMA "+schema); err != nil {
		return fmt.Errorf("migration check: making the scratch schema %s: %w", schema, err)
	}
	return nil
}

// checkFile applies one file through goose, with w watching each statement,
// and returns its problems; then it gives the tables the file created a few
// rows, for the files after it.
func checkFile(ctx context.Context, admin *pgx.Conn, db *sql.DB, w *watcher, files Files, name string) ([]Problem, error) {
	shown := path.Join(files.Dir, name)
	text, err := fs.ReadFile(files.FS, shown)
	if err != nil {
		return nil, fmt.Errorf("migration check: reading %s: %w", shown, err)
	}
	rendered, err := sqltmpl.Render(schema, string(text))
	if err != nil {
		return nil, fmt.Errorf("migration check: %s: %w", shown, err)
	}
	pre, err := existing(ctx, admin)
	if err != nil {
		return nil, err
	}
	run := w.start(newSource(shown, string(text), rendered), pre)
	defer w.stop()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, fstest.MapFS{name: {Data: []byte(rendered)}},
		goose.WithDisableVersioning(true), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("migration check: goose cannot read %s: %w", shown, err)
	}
	_, upErr := provider.Up(ctx)
	switch {
	case run.err != nil:
		return nil, run.err
	case run.failure != nil:
		return append(run.problems(nil), *run.failure), nil
	case upErr != nil:
		return nil, fmt.Errorf("migration check: goose cannot apply %s: %w", shown, upErr)
	}
	rows, err := admin.Query(ctx, "SELECT relname::text FROM pg_catalog.pg_class WHERE relnamespace = $1::regnamespace", schema)
	if err != nil {
		return nil, fmt.Errorf("migration check: after %s: %w", shown, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("migration check: after %s: %w", shown, err)
	}
	return run.problems(names), fillTables(ctx, admin, shown, pre.tables)
}

// Refusal is the error Check returns when statements break the rules.
type Refusal struct {
	Problems []Problem
}

// Error lists every problem, each a lesson: what the statement does, why it
// blocks, the safe way, and how to allow it.
func (r *Refusal) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "migration check: %d problem(s): statements that would block an install's reads or writes for longer than a moment, or break the release before them, and bad allowances (see \"Writing safe migrations\" in the README)", len(r.Problems))
	for _, p := range r.Problems {
		b.WriteString("\n\n")
		b.WriteString(p.String())
	}
	return b.String()
}
