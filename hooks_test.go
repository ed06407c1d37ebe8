package mylib

// The template's machinery (newlib.manifest): a library made from the
// template keeps this file as it is, and newlib update merges the template's
// later changes into it.

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/pgdual/mylib/internal/probe"
)

// WithMigrationFiles makes New migrate with the files at the root of fsys
// instead of the embedded ones: the machinery's tests give it files of their
// own. Reuse the option: the files are parsed once per option.
var WithMigrationFiles = withFiles

// WithProbe makes New migrate with the probe's files (internal/probe) instead
// of the library's: the machinery's tests run on them, whatever the domain.
var WithProbe = withFiles(probe.Files())

// ProbeInsert adds a row of key to the probe's table and returns its id. It
// runs as the domain's methods run their statements: through c's statement
// cache, on c's pool, or in tx when tx is not nil.
func ProbeInsert(ctx context.Context, c *Client, tx pgx.Tx, key string) (int64, error) {
	if err := c.use(); err != nil {
		return 0, err
	}
	var q interface {
		QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	} = c.pool
	if tx != nil {
		q = tx
	}
	st := c.stmts.Get(probe.Insert)
	var id int64
	if err := q.QueryRow(ctx, st.SQL, st.Args(key)...).Scan(&id); err != nil {
		return 0, c.fail(err, "inserting the probe's row %s", key)
	}
	return id, nil
}

// ProbeCount counts the probe's rows of key, as ProbeInsert runs.
func ProbeCount(ctx context.Context, c *Client, key string) (int64, error) {
	if err := c.use(); err != nil {
		return 0, err
	}
	st := c.stmts.Get(probe.Count)
	var n int64
	if err := c.pool.QueryRow(ctx, st.SQL, st.Args(key)...).Scan(&n); err != nil {
		return 0, c.fail(err, "counting the probe's rows %s", key)
	}
	return n, nil
}

// ProbeGrants is Grants for the probe's table in place of the domain's.
func ProbeGrants(schema, role string) ([]string, error) {
	return grantsFor(schema, role, probe.Privileges)
}
