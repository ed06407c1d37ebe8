package mylib

// The template's machinery (newlib.manifest): a library made from the
// template keeps this file as it is, and newlib update merges the template's
// later changes into it.

import (
	"context"
	"fmt"
	"time"

	"github.com/pgdual/mylib/internal/grants"
	"github.com/pgdual/mylib/internal/migrate"
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

// Moved says what MigrateTo did.
type Moved struct {
	// Applied lists the files applied, in order.
	Applied []string `json:"applied,omitempty"`
	// Undone lists the files whose Down section ran, newest first.
	Undone []string `json:"undone,omitempty"`
	// Version is the schema's version afterwards.
	Version int64 `json:"version"`
}

// MigrateTo takes the schema to version: up, applying the files up to it, or
// down, running the Down sections of the applied files above it, newest
// first, each in a transaction of its own under the migration lock, as New
// migrates (0 undoes every file). It is how an operator takes a schema back
// before rolling the code back to an older release. Before it changes
// anything, it refuses (ErrIrreversible) when a file to undo has no Down
// section or when the schema holds a version that no file of this code has
// (a newer release's: take the schema down with that release), and as New
// does when a file changed or is out of order. On error, it returns what
// was done before the error.
func MigrateTo(ctx context.Context, version int64, opts ...Option) (Moved, error) {
	c, res, err := startTo(ctx, "MigrateTo", opts, &version)
	if err == nil {
		c.Close()
	}
	return Moved{Applied: res.Applied, Undone: res.Undone, Version: res.Version}, err
}

// The states of a migration in MigrationStatus.State.
const (
	StateApplied = "applied" // applied, and unchanged since (or applied before checksums were recorded)
	StatePending = "pending" // not applied yet
	StateChanged = "changed" // applied, and the file has changed since: New refuses with ErrDrift
	StateInvalid = "invalid" // an invalid index in the schema (MigrationStatus.Index), left by a concurrent build that failed
)

// MigrationStatus is where one migration file, or one applied version that
// no file has, stands in a schema.
type MigrationStatus struct {
	Version int64 `json:"version"`
	// File is the migration file's name; empty for an applied version that
	// no file has (newer than this code, or a file deleted or renamed).
	File string `json:"file,omitempty"`
	// State is StateApplied, StatePending, StateChanged or StateInvalid.
	State string `json:"state"`
	// AppliedAt is when the version was recorded, as goose's table holds it
	// (a timestamp without time zone, in the migrating session's zone).
	AppliedAt time.Time `json:"applied_at,omitzero"`
	// Note says why the state matters, when it does: drift, a file out of
	// order, a version without a file, an invalid index, and what to do.
	Note string `json:"note,omitempty"`
	// Index is the invalid index, schema-qualified, when State is
	// StateInvalid; Version and File are then those of the file that names
	// it, if any.
	Index string `json:"index,omitempty"`
}

// Status reports where the schema stands, one entry per migration file and
// per applied version that no file has, in version order, then one per
// invalid index of the schema (StateInvalid), without changing anything: it takes no lock and creates nothing, not even a missing schema.
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
		out[i] = MigrationStatus{Version: f.Version, File: f.File, State: f.State, AppliedAt: f.AppliedAt, Note: f.Note, Index: f.Index}
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
		return "", &publicError{err: fmt.Errorf("Script: %w", err)}
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
	return grantsFor(schema, role, runtimePrivileges)
}

// grantsFor is Grants for the given tables' privileges: the domain's, or
// those of the machinery's tests.
func grantsFor(schema, role string, tables []grants.Table) ([]string, error) {
	if err := sqltmpl.ValidateSchema(schema); err != nil {
		return nil, &publicError{err: fmt.Errorf("Grants: %w", err)}
	}
	if role == "" {
		return nil, fmt.Errorf("%w: Grants: no role given: name the role the application connects as", ErrInvalidConfig)
	}
	return grants.Statements(schema, role, migrate.ChecksumTable(moduleName), tables), nil
}
