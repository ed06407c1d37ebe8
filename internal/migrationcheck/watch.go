package migrationcheck

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// watchedConnector gives goose connections on which the watcher sees every
// statement goose runs.
type watchedConnector struct {
	base driver.Connector
	w    *watcher
}

func (c *watchedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := conn.(*stdlib.Conn)
	if !ok {
		_ = conn.Close()
		return nil, fmt.Errorf("migration check: pgx's driver gave a %T, not its own connection", conn)
	}
	return &watchedConn{Conn: sc, w: c.w}, nil
}

func (c *watchedConnector) Driver() driver.Driver { return c.base.Driver() }

// watchedConn is pgx's database/sql connection with goose's statements
// going through the watcher. goose runs a migration's statements with
// ExecContext and nothing else.
type watchedConn struct {
	*stdlib.Conn
	w *watcher
}

func (c *watchedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if c.w.run == nil {
		return c.Conn.ExecContext(ctx, query, args)
	}
	return c.w.run.exec(ctx, c.Conn, query, args)
}

// watcher holds the file being applied.
type watcher struct {
	module string
	run    *fileRun
}

func (w *watcher) start(src *source, pre before) *fileRun {
	w.run = &fileRun{module: w.module, src: src, pre: pre, held: map[uint32]statement{}}
	return w.run
}

func (w *watcher) stop() { w.run = nil }

// fileRun is what the watcher learns while one file is applied.
type fileRun struct {
	module     string
	src        *source
	pre        before
	statements []statement
	findings   [][]finding // per statement
	// held maps each table that existed before the file to the statement
	// that took a lock on it blocking writes, in goose's transaction.
	held    map[uint32]statement
	failure *Problem // the statement that failed, if one did
	err     error    // the check itself failed
}

// exec runs one statement of the file as goose would, and observes it. In
// goose's transaction (a file without NO TRANSACTION) the statement runs
// there. Otherwise it first runs in a transaction of the check's own, which
// behaves as goose's autocommit but lets its locks and scans be seen; a
// statement that cannot run in a transaction block (CREATE INDEX
// CONCURRENTLY, VACUUM, a DO block that commits) then runs on its own, as
// goose runs it, and only the catalog tells what it did.
func (f *fileRun) exec(ctx context.Context, c *stdlib.Conn, query string, args []driver.NamedValue) (driver.Result, error) {
	conn := c.Conn()
	st, err := f.src.locate(query, f.module)
	if err != nil {
		f.err = err
		return nil, err
	}
	held := f.held
	own := conn.PgConn().TxStatus() != 'T'
	if own {
		held = map[uint32]statement{}
		if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
			return nil, f.fail(err)
		}
	}
	b, err := take(ctx, conn, f.pre.tables)
	if err != nil {
		return nil, f.fail(err)
	}
	res, err := c.ExecContext(ctx, query, args)
	watched := true
	if own {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && outsideOnly[pgErr.Code] {
			watched = false
			if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
				return nil, f.fail(err)
			}
			if b, err = take(ctx, conn, f.pre.tables); err != nil {
				return nil, f.fail(err)
			}
			res, err = c.ExecContext(ctx, query, args)
		}
	}
	if err != nil {
		f.failure = f.failed(st, err)
		if own && conn.PgConn().TxStatus() != 'I' {
			_, _ = conn.Exec(ctx, "ROLLBACK")
		}
		return nil, err
	}
	// A statement that ended the transaction itself (a COMMIT of its own)
	// leaves no locks or scan counts to read: only the catalog tells.
	watched = watched && conn.PgConn().TxStatus() == 'T'
	a, err := take(ctx, conn, f.pre.tables)
	if err != nil {
		return nil, f.fail(err)
	}
	f.statements = append(f.statements, st)
	f.findings = append(f.findings, f.observe(st, b, a, watched, held))
	if own && conn.PgConn().TxStatus() == 'T' {
		if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
			return nil, f.fail(err)
		}
	}
	return res, nil
}

// outsideOnly are the SQLSTATEs of statements that refuse to run in a
// transaction block: active_sql_transaction (25001), and
// invalid_transaction_termination (2D000) for a COMMIT in a DO block.
var outsideOnly = map[string]bool{"25001": true, "2D000": true}

// fail records a failure of the check's own queries.
func (f *fileRun) fail(err error) error {
	f.err = fmt.Errorf("migration check: applying %s: %w", f.src.name, err)
	return f.err
}

// failed is the problem of a statement the server refused.
func (f *fileRun) failed(st statement, err error) *Problem {
	return &Problem{File: f.src.name, Line: st.line, Statement: st.first, failed: true,
		What: "fails on a schema where the earlier files are applied and every table holds a few rows, as on an install in use: " + err.Error(),
		Why:  "an install would fail the same way, and stop at the version before this file.",
		Safe: "a NOT NULL column added to a table with rows needs a default; a statement that cannot run in a transaction block (CREATE INDEX CONCURRENTLY) needs a file marked -- +goose NO TRANSACTION.",
	}
}

// problems turns the findings into problems, leaving out what allowances
// allow and the renamed tables whose old name the file left standing (names
// are the relations of the schema after the file), and adds the allowances
// that are wrong.
func (f *fileRun) problems(names []string) []Problem {
	var out []Problem
	for i, st := range f.statements {
		for _, fd := range f.findings[i] {
			if fd.stands != "" && slices.Contains(names, fd.stands) || allowed(st.allows, fd.rule) {
				continue
			}
			out = append(out, Problem{File: f.src.name, Line: st.line, Statement: st.first, Rule: fd.rule,
				What: fd.what, Why: fd.why, Safe: fd.safe,
				Allow: "-- " + f.module + allowPrefix + " " + string(fd.rule) + ": <why no install can be blocked>"})
		}
		for _, a := range st.allows {
			if p, bad := a.problem(f.src.name, f.module); bad {
				out = append(out, p)
			}
		}
	}
	return out
}

// allowed marks the allowances for rule used, and reports whether one with a
// reason allows it.
func allowed(allows []allowance, rule Rule) bool {
	ok := false
	for i := range allows {
		if allows[i].rule == rule {
			allows[i].used = true
			ok = ok || allows[i].reason != ""
		}
	}
	return ok
}
