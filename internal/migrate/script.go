package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	"github.com/pressly/goose/v3/database"
)

// Script returns a psql script that brings schema from version from to the
// latest file, recording each file exactly as Up would: its version row in
// goose's table and its checksum, in the transaction that applies it (files
// marked NO TRANSACTION run outside one, as goose runs them). It holds the
// migration lock while it works, so no Up migrates the schema meanwhile, and
// it refuses a file that is already applied. Run it with
// psql -v ON_ERROR_STOP=1 -f. The Up section of each file is copied as
// written (rendered for schema); psql splits the statements itself.
func (m *Migrations) Script(schema string, from int64) (string, error) {
	if from < 0 {
		return "", fmt.Errorf("the version to start from is %d: give 0 for a new schema, or the schema's applied version", from)
	}
	sf, err := m.forSchema(schema)
	if err != nil {
		return "", err
	}
	var files []*file
	for i := range m.files {
		if m.files[i].version > from {
			files = append(files, &m.files[i])
		}
	}
	key := strconv.FormatInt(lockKey(m.module, schema), 10)
	tag := "$" + m.module + "$"
	timeout := quoteLiteral(DefaultLockTimeout.String())
	var b strings.Builder
	fmt.Fprintf(&b, "-- %s: migrations of schema %q above version %d", m.module, schema, from)
	if len(files) == 0 {
		fmt.Fprintf(&b, ": none; the latest file is version %d.\n", m.Latest())
		return b.String(), nil
	}
	fmt.Fprintf(&b, ": versions %d to %d (%s to %s).\n", files[0].version, files[len(files)-1].version, files[0].name, files[len(files)-1].name)
	fmt.Fprintf(&b, `-- Made by `+"`%[1]s sql -schema %[2]s -from %[3]d`"+`. Run it with: psql -v ON_ERROR_STOP=1 -f <this file>
-- Each file runs in a transaction of its own that holds the library's migration lock and records
-- the file as the library does, in %[4]s and %[2]s.%[5]s, so that the library
-- then finds the schema up to date and holds it to these files.
--
-- Each statement waits at most %[11]s for a lock (lock_timeout), so that the host's queries never
-- queue behind a migration for longer; concurrent index builds wait as long as they must (they
-- block no query, and wait for every older transaction). If a file stops with "canceling
-- statement due to lock timeout", another session held a lock it needs, and nothing of that file
-- was kept (but the statements before the failing one of a file marked NO TRANSACTION): find the
-- session (pg_locks, pg_stat_activity), wait for it to end or end it, and run the script of the
-- files above the applied version again (%[1]s sql -schema %[2]s -from <applied version>).

-- The schema and the tables that track it, where missing.
DO %[6]s BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = %[7]s) THEN
		%[8]s;
	END IF;
END %[6]s;
%[9]s;
INSERT INTO %[4]s (version_id, is_applied) SELECT 0, true WHERE NOT EXISTS (SELECT FROM %[4]s);
%[10]s;
`, m.module, schema, from, sf.versionTable, m.sumTable, tag, quoteLiteral(schema), sf.createSchemaSQL,
		strings.Replace(sf.versionsSQL, "CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1),
		strings.Replace(sf.sumsSQL, "CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1), timeout)
	for _, f := range files {
		refuse := fmt.Sprintf(`DO %[1]s BEGIN
	IF EXISTS (SELECT FROM %[2]s WHERE version_id = %[3]d AND is_applied) THEN
		RAISE EXCEPTION %[4]s;
	END IF;
END %[1]s;
`, tag, sf.versionTable, f.version, quoteLiteral(fmt.Sprintf("%s: %s (version %d) is already applied to schema %s: make the script from the applied version (%s sql -schema %s -from <version>)",
			m.module, f.name, f.version, schema, m.module, schema)))
		record := fmt.Sprintf("INSERT INTO %s (version_id, is_applied) VALUES (%d, true);\nINSERT INTO %s.%s (version_id, checksum) VALUES (%d, %d);\n",
			sf.versionTable, f.version, schema, m.sumTable, f.version, f.checksum)
		up := upSection(string(sf.fsys.files[f.name]))
		if f.noTx {
			fmt.Fprintf(&b, "\n-- %s (version %d), marked NO TRANSACTION: its statements run one by one, as goose runs them,\n-- under the migration lock held by this session.\n", f.name, f.version)
			fmt.Fprintf(&b, "SELECT pg_catalog.pg_advisory_lock(%s);\n%s", key, refuse)
			for _, stmt := range statements(up) {
				limit := timeout
				if concurrentIndexOp(stmt) {
					limit = "0"
				}
				fmt.Fprintf(&b, "SET lock_timeout = %s;\n%s\n", limit, stmt)
			}
			fmt.Fprintf(&b, "RESET lock_timeout;\nBEGIN;\n%sCOMMIT;\nSELECT pg_catalog.pg_advisory_unlock(%s);\n", record, key)
			continue
		}
		fmt.Fprintf(&b, "\n-- %s (version %d)\nBEGIN;\nSET LOCAL lock_timeout = %s;\nSELECT pg_catalog.pg_advisory_xact_lock(%s);\n%s%s\n%sCOMMIT;\n", f.name, f.version, timeout, key, refuse, up, record)
	}
	return b.String(), nil
}

// upSection returns the statements of a goose SQL file's Up section, ended
// with a semicolon.
func upSection(text string) string { return section(text, "up") }

// section returns the lines of a goose SQL file's Up or Down section (which
// is "up" or "down"), trimmed, ended with a semicolon when not empty.
func section(text, which string) string {
	var out []string
	in := false
	for _, line := range strings.Split(text, "\n") {
		switch annotation(line) {
		case "up":
			in = which == "up"
			continue
		case "down":
			in = which == "down"
			continue
		}
		if in {
			out = append(out, line)
		}
	}
	body := strings.TrimSpace(strings.Join(out, "\n"))
	if body != "" && !strings.HasSuffix(body, ";") {
		body += ";"
	}
	return body
}

// statements splits a section into statements as goose does: a statement
// ends with a line that ends with a semicolon (a trailing -- comment
// aside), except between -- +goose StatementBegin and StatementEnd.
func statements(section string) []string {
	var out []string
	var cur []string
	block := false
	for _, line := range strings.Split(section, "\n") {
		marker := strings.ToLower(strings.Join(strings.Fields(line), " "))
		switch marker {
		case "-- +goose statementbegin":
			block = true
			continue
		case "-- +goose statementend":
			block = false
			out = append(out, strings.TrimSpace(strings.Join(cur, "\n")))
			cur = nil
			continue
		}
		cur = append(cur, line)
		code, _, _ := strings.Cut(line, "--")
		if !block && strings.HasSuffix(strings.TrimSpace(code), ";") {
			out = append(out, strings.TrimSpace(strings.Join(cur, "\n")))
			cur = nil
		}
	}
	if rest := strings.TrimSpace(strings.Join(cur, "\n")); hasStatement(rest) {
		out = append(out, rest)
	}
	return out
}

// annotation returns "up" or "down" for goose's section markers.
func annotation(line string) string {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "--")
	if !ok {
		return ""
	}
	rest, ok = strings.CutPrefix(strings.TrimSpace(rest), "+goose")
	if !ok {
		return ""
	}
	switch strings.ToLower(strings.TrimSpace(rest)) {
	case "up":
		return "up"
	case "down":
		return "down"
	}
	return ""
}

// gooseVersionTableDDL is the statement goose runs to create its version
// table, taken from goose's own store so that the two never differ.
func gooseVersionTableDDL(store database.Store) (string, error) {
	var rec recorder
	if err := store.CreateVersionTable(context.Background(), &rec); err != nil {
		return "", err
	}
	if len(rec.sql) != 1 {
		return "", fmt.Errorf("goose's store ran %d statements to create its table, not one", len(rec.sql))
	}
	return rec.sql[0], nil
}

// recorder is a database.DBTxConn that keeps the statements it is given.
type recorder struct{ sql []string }

func (r *recorder) ExecContext(_ context.Context, query string, _ ...any) (sql.Result, error) {
	r.sql = append(r.sql, query)
	return driverResult{}, nil
}

func (r *recorder) QueryContext(context.Context, string, ...any) (*sql.Rows, error) {
	return nil, fmt.Errorf("not a database")
}

func (r *recorder) QueryRowContext(context.Context, string, ...any) *sql.Row { return nil }

type driverResult struct{}

func (driverResult) LastInsertId() (int64, error) { return 0, nil }
func (driverResult) RowsAffected() (int64, error) { return 0, nil }
