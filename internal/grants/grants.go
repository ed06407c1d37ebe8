// Package grants writes the statements that give a runtime role what a
// library needs at run time in its schema, and nothing that lets it create,
// alter or drop.
package grants

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Table is what a library's methods need on one of its tables.
type Table struct {
	Name       string
	Privileges []string // as GRANT writes them: SELECT, INSERT, UPDATE (id), ...
}

// Statements gives role USAGE on schema, SELECT on the checksum table (which
// a start's fast path reads), the privileges of tables, and default
// privileges so that tables and sequences that later migrations create (run
// by the role that executes these statements, the schema's owner) are
// covered too.
func Statements(schema, role, checksumTable string, tables []Table) []string {
	s, r := pgx.Identifier{schema}.Sanitize(), pgx.Identifier{role}.Sanitize()
	stmts := []string{
		fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s", s, r),
		fmt.Sprintf("GRANT SELECT ON %s TO %s", pgx.Identifier{schema, checksumTable}.Sanitize(), r),
	}
	for _, t := range tables {
		stmts = append(stmts, fmt.Sprintf("GRANT %s ON %s TO %s", strings.Join(t.Privileges, ", "), pgx.Identifier{schema, t.Name}.Sanitize(), r))
	}
	return append(stmts,
		fmt.Sprintf("ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %s", s, r),
		fmt.Sprintf("ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT USAGE ON SEQUENCES TO %s", s, r),
	)
}
