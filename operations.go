package mylib

// The template's machinery (newlib.manifest): a library made from the
// template keeps this file as it is, and newlib update merges the template's
// later changes into it.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdual/mylib/internal/redact"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// Migrate brings the schema up to date, as New does and through the same
// code, and returns the files it applied (none when the schema was up to
// date). It is the deploy step of a host whose application runs with a role
// that cannot change the schema: run it with the schema owner's role.
func Migrate(ctx context.Context, opts ...Option) (applied []string, err error) {
	c, res, err := start(ctx, "Migrate", opts)
	if err != nil {
		return res.Applied, err
	}
	c.Close()
	return res.Applied, nil
}

// The states of a migration in MigrationStatus.State.
const (
	StateApplied = "applied" // applied, and unchanged since (or applied before checksums were recorded)
	StatePending = "pending" // not applied yet
	StateChanged = "changed" // applied, and the file has changed since: New refuses with ErrDrift
)

// MigrationStatus is where one migration file, or one applied version that
// no file has, stands in a schema.
type MigrationStatus struct {
	Version int64 `json:"version"`
	// File is the migration file's name; empty for an applied version that
	// no file has (newer than this code, or a file deleted or renamed).
	File string `json:"file,omitempty"`
	// State is StateApplied, StatePending or StateChanged.
	State string `json:"state"`
	// AppliedAt is when the version was recorded, as goose's table holds it
	// (a timestamp without time zone, in the migrating session's zone).
	AppliedAt time.Time `json:"applied_at,omitzero"`
	// Note says why the state matters, when it does: drift, a file out of
	// order, a version without a file.
	Note string `json:"note,omitempty"`
}

// Status reports where the schema stands, one entry per migration file and
// per applied version that no file has, in version order, without changing
// anything: it takes no lock and creates nothing, not even a missing schema.
// When New would refuse the schema (an applied file changed, a file numbered
// below the applied version, an applied version whose file is gone), Status
// returns the entries and an error that wraps ErrDrift, ErrOutOfOrder or
// ErrUnknownVersion.
func Status(ctx context.Context, opts ...Option) ([]MigrationStatus, error) {
	c, set, secrets, err := prepare("Status", opts)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	files, err := set.Status(ctx, c.pool, c.schema)
	out := make([]MigrationStatus, len(files))
	for i, f := range files {
		out[i] = MigrationStatus{Version: f.Version, File: f.File, State: f.State, AppliedAt: f.AppliedAt, Note: f.Note}
	}
	if err != nil {
		return out, redact.Error(startError(err), secrets...)
	}
	return out, nil
}

// Script returns the SQL that brings schema from version from (0 for a new
// schema) to the latest migration file, for a DBA to review or to run with
// psql -v ON_ERROR_STOP=1 -f. It creates the schema if missing, the version
// and checksum tables, and applies each file in a transaction of its own
// that holds the library's migration lock, recording its version and its
// checksum exactly as New does: afterwards New finds the schema up to date
// and holds it to these files. It refuses to apply a file already applied.
func Script(schema string, from int64) (string, error) {
	if err := sqltmpl.ValidateSchema(schema); err != nil {
		return "", &publicError{err: fmt.Errorf("Script: %w", err), is: []error{ErrInvalidSchema}}
	}
	set, err := migrations()
	if err != nil {
		return "", fmt.Errorf("%w: the embedded migrations are unusable: %w", ErrMigration, err)
	}
	sql, err := set.Script(schema, from)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return sql, nil
}

// Grants returns the statements that give role what the library needs at
// run time in schema, and nothing that lets it create, alter or drop: USAGE
// on the schema, SELECT on the checksum table that New's fast path reads,
// the privileges the library's methods need on its tables, and default
// privileges so that tables and sequences later migrations create (run by
// the role that executes these statements, the schema's owner) are covered
// too. With such a role, New starts on an up-to-date schema and every method
// works; on a schema behind the code, New fails with ErrNotMigrated.
func Grants(schema, role string) ([]string, error) {
	if err := sqltmpl.ValidateSchema(schema); err != nil {
		return nil, &publicError{err: fmt.Errorf("Grants: %w", err), is: []error{ErrInvalidSchema}}
	}
	if role == "" {
		return nil, fmt.Errorf("%w: Grants: no role given: name the role the application connects as", ErrInvalidConfig)
	}
	s, r := pgx.Identifier{schema}.Sanitize(), pgx.Identifier{role}.Sanitize()
	stmts := []string{
		fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s", s, r),
		fmt.Sprintf("GRANT SELECT ON %s TO %s", pgx.Identifier{schema, moduleName + "_goose_checksums"}.Sanitize(), r),
	}
	for _, p := range runtimePrivileges {
		stmts = append(stmts, fmt.Sprintf("GRANT %s ON %s TO %s", strings.Join(p.privileges, ", "), pgx.Identifier{schema, p.table}.Sanitize(), r))
	}
	return append(stmts,
		fmt.Sprintf("ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %s", s, r),
		fmt.Sprintf("ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT USAGE ON SEQUENCES TO %s", s, r),
	), nil
}
