package migrate

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgdual/mylib/internal/errs"
)

// The errors of the library that this package's errors match (see
// internal/errs), under the names this package's code and tests use.
var (
	ErrDrift          = errs.Drift
	ErrOutOfOrder     = errs.OutOfOrder
	ErrUnknownVersion = errs.UnknownVersion
	ErrFailed         = errs.MigrationFailed
	ErrLockLost       = errs.LockLost
	ErrRetryable      = errs.Retryable
	ErrNotMigrated    = errs.NotMigrated
	ErrSchemaClash    = errs.InvalidSchema
	ErrConnect        = errs.Connect
	ErrIrreversible   = errs.Irreversible
)

// newError builds an error of the library; the cause is part of the message
// already, and is kept for errors.As. A context error of ours (not the caller's) is kept as text
// only: nothing matches context.Canceled unless the caller cancelled.
func newError(ctx context.Context, kinds []error, cause error, format string, args ...any) *errs.Error {
	if cause != nil && ctx.Err() == nil && (errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded)) {
		cause = errors.New(cause.Error())
	}
	return errs.New(kinds, cause, format, args...)
}

// interrupted says that the caller's context ended what was doing, and wraps
// the context's error (its cause, if one was given).
func interrupted(ctx context.Context, doing string) error {
	return fmt.Errorf("%s was interrupted: %w", doing, context.Cause(ctx))
}

// fault is what a failed database call means when it is not the SQL's own
// fault: the caller's context ended, the connection was lost, the server
// refused for a reason that is not the statement's (read-only, a privilege,
// a timeout setting). It returns nil when err is none of these: the statement
// itself failed. doing says what was being done, for the message; conn, if
// not nil, is the connection the call ran on.
func fault(ctx context.Context, conn *pgconn.PgConn, err error, doing string) error {
	if ctx.Err() != nil {
		return interrupted(ctx, doing)
	}
	var connectErr *pgconn.ConnectError
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &connectErr) && errors.As(err, &pgErr) && pgErr.Code != "57P03" && !strings.HasPrefix(pgErr.Code, "53"):
		return newError(ctx, []error{ErrConnect}, err,
			"cannot reach the database: the server refused the connection (%v): check the DSN's user, password and database", err)
	case errors.As(err, &connectErr):
		return newError(ctx, []error{ErrConnect, ErrRetryable}, err,
			"cannot reach the database (%v): check the DSN's host and port, and that the server is up; start again once it is", err)
	case errors.As(err, &pgErr):
		return serverFault(ctx, pgErr, err, doing)
	}
	if lostConnection(conn, err) {
		return newError(ctx, []error{ErrRetryable}, err,
			"%s: the connection was lost (%v): the server restarted, failed over or ended the session; start again", doing, err)
	}
	return nil
}

// serverFault classifies an error the server sent.
func serverFault(ctx context.Context, pgErr *pgconn.PgError, err error, doing string) error {
	code := pgErr.Code
	switch {
	case code == "57P01" || code == "57P02" || code == "57P03" || strings.HasPrefix(code, "08"):
		return newError(ctx, []error{ErrRetryable}, err,
			"%s: the server ended the session (%v): it was shut down, restarted or failed over, or the backend was terminated; start again", doing, err)
	case code == "40001" || code == "40P01":
		return newError(ctx, []error{ErrRetryable}, err,
			"%s: the server rolled the transaction back to resolve a conflict with another session (%v); start again", doing, err)
	case code == "55P03":
		return newError(ctx, []error{ErrRetryable}, err,
			"%s: a lock wait ran out of lock_timeout (%v): another session holds a lock the migration needs; start again when it is done, or raise lock_timeout for the migrating role", doing, err)
	case strings.HasPrefix(code, "53"):
		return newError(ctx, []error{ErrRetryable}, err,
			"%s: the server is out of a resource (%v); start again when it has room", doing, err)
	case code == "57014":
		return newError(ctx, nil, err,
			"%s: the server cancelled a statement (%v): statement_timeout ended it, or another session called pg_cancel_backend; if it is statement_timeout, raise it for the role or split the file; then start again", doing, err)
	case code == "25006":
		return newError(ctx, []error{ErrNotMigrated}, err,
			"%s: the server is read-only (%v): migrate on the primary (a DSN with target_session_attrs=read-write)", doing, err)
	case code == "42501":
		return newError(ctx, []error{ErrNotMigrated}, err,
			"%s: the role lacks a privilege (%v): migrate with the role that owns the schema", doing, err)
	}
	return nil
}

// lostConnection reports whether err means the connection is gone.
func lostConnection(conn *pgconn.PgConn, err error) bool {
	if conn != nil && conn.IsClosed() {
		return true
	}
	var netErr net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &netErr)
}

// stateOf reads the rows of a state query (version, checksum) sent in the
// simple protocol, as text.
func stateOf(res *pgconn.Result) (state, error) {
	if res.Err != nil {
		return nil, res.Err
	}
	st := make(state, len(res.Rows))
	for _, row := range res.Rows {
		if len(row) != 2 {
			return nil, fmt.Errorf("unexpected reply to a state query: %d columns", len(row))
		}
		v, err := strconv.ParseInt(string(row[0]), 10, 64)
		if err != nil {
			return nil, err
		}
		sum, err := strconv.ParseInt(string(row[1]), 10, 64)
		if err != nil {
			return nil, err
		}
		st[v] = sum
	}
	return st, nil
}

// fileError says what a file that did not apply means: the caller's context
// ended, the lock or a connection was lost, a setting or privilege of the
// session stopped it, or its SQL failed.
func (r *holder) fileError(ctx context.Context, conn *pgconn.PgConn, f *file, cause error) error {
	doing := fmt.Sprintf("applying %s to schema %q", f.name, r.sf.schema)
	kept := fmt.Sprintf("the schema stays at version %d and nothing of the file was kept", r.res.Version)
	if f.noTx {
		kept = fmt.Sprintf("the schema stays at version %d, and the file is marked NO TRANSACTION, so its statements before the failing one were kept: undo or finish them by hand", r.res.Version)
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w; %s: give it a longer deadline and start again", interrupted(ctx, doing), kept)
	case r.h.pg().IsClosed():
		return r.m.lockedFault(ctx, r.h, conn, cause, doing)
	}
	var pgErr *pgconn.PgError
	if errors.As(cause, &pgErr) && pgErr.Code == "57014" && r.pre.statementTimeout != "0" {
		return newError(ctx, nil, cause,
			"%s: statement_timeout, which is %s for role %q, cancelled a statement (%v): raise it for the migrating role (ALTER ROLE %s SET statement_timeout = ...) or split the file, then start again; %s",
			doing, r.pre.statementTimeout, r.pre.role, cause, r.pre.role, kept)
	}
	if flt := fault(ctx, conn, cause, doing); flt != nil {
		return newError(ctx, nil, flt, "%v; %s", flt, kept)
	}
	return newError(ctx, []error{ErrFailed}, cause, "%s in schema %q: %v; %s; fix the file and start again",
		f.name, r.sf.schema, cause, kept)
}

// commitError says why a transaction of the holder did not commit, or why
// taking the lock for the next file failed after it did.
func (r *holder) commitError(ctx context.Context, err error, applied *file, committed bool) error {
	if err == nil {
		return nil
	}
	if committed {
		return r.m.lockedFault(ctx, r.h, nil, err, "taking the migration lock for the next file")
	}
	doing := "committing the migration lock's transaction"
	if applied != nil {
		doing = fmt.Sprintf("committing %s", applied.name)
	}
	var pgErr *pgconn.PgError
	if ctx.Err() != nil && errors.As(err, &pgErr) {
		// The server answered with an error before COMMIT, which it skipped.
		return fmt.Errorf("%w; nothing of it was committed, and the schema stays at version %d: give it a longer deadline and start again", interrupted(ctx, doing), r.res.Version)
	}
	if r.h.pg().IsClosed() {
		// The reply to COMMIT is lost: it may or may not have happened.
		if ctx.Err() != nil {
			return fmt.Errorf("%w; it may or may not have been committed: start again, which applies only what is missing", interrupted(ctx, doing))
		}
		return newError(ctx, []error{ErrLockLost, ErrRetryable}, err,
			"%s: migration lock lost: the connection holding it failed (%v) before the reply to COMMIT came, so the file may or may not have been committed with its version; nothing ran unlocked; start again, which applies only what is missing",
			doing, err)
	}
	if applied != nil {
		// A check deferred to COMMIT failed: it is the file's.
		return r.fileError(ctx, r.h.pg(), applied, err)
	}
	return r.m.lockedFault(ctx, r.h, nil, err, doing)
}

// lockedFault says what an error while holding the lock means. A lost lock
// connection is a lost lock, whichever connection noticed first.
func (m *Migrations) lockedFault(ctx context.Context, h *held, conn *pgconn.PgConn, err error, doing string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: give it a longer deadline and start again", interrupted(ctx, doing))
	}
	if h.pg().IsClosed() {
		return newError(ctx, []error{ErrLockLost, ErrRetryable}, err,
			"%s: migration lock lost: the connection holding it failed (%v): its backend was terminated, the server restarted or failed over, or a pooler closed it; its transaction was rolled back, and nothing ran unlocked; start again",
			doing, err)
	}
	if f := fault(ctx, conn, err, doing); f != nil {
		return f
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// refuse fails closed, before anything is created, when this session cannot
// migrate the schema (a read-only server, a role without CREATE) or the schema
// holds tables under the library's names that the library did not make.
func (m *Migrations) refuse(ctx context.Context, sf *schemaFiles, pre probe, fast plan) error {
	behind := fmt.Sprintf("schema %q is behind this code (pending: %s)", sf.schema, m.names(fast.pending))
	if len(fast.pending) == 0 {
		behind = fmt.Sprintf("schema %q has applied files whose checksums are not recorded yet", sf.schema)
	}
	migrate := fmt.Sprintf("`%s migrate -schema %s`", m.module, sf.schema)
	switch {
	case pre.readOnly:
		why := "default_transaction_read_only is on for this session"
		if pre.inRecovery {
			why = "it is a hot standby, in recovery"
		}
		return newError(ctx, []error{ErrNotMigrated}, nil,
			"%s, and the server is read-only (%s): migrate on the primary: run %s with the primary's DSN, or add target_session_attrs=read-write to the DSN",
			behind, why, migrate)
	case !pre.canCreate && !pre.schemaExists:
		return newError(ctx, []error{ErrNotMigrated}, nil,
			"schema %q does not exist, and role %q may not create it (permission denied: it has no CREATE on the database): run %s with a role that may, or create the schema for the role that will own it (CREATE SCHEMA %s AUTHORIZATION <role>)",
			sf.schema, pre.role, migrate, sf.schema)
	case !pre.canCreate:
		return newError(ctx, []error{ErrNotMigrated}, nil,
			"%s, and role %q cannot migrate it (permission denied: it has no CREATE on the schema): run %s with the schema owner's DSN (a deploy step), then start again",
			behind, pre.role, migrate)
	}
	if slices.Contains(pre.existing, m.versionTable) {
		return nil
	}
	var clash []string
	for _, t := range pre.existing {
		if slices.Contains(m.tables, t) {
			clash = append(clash, sf.schema+"."+t)
		}
	}
	if len(clash) > 0 {
		return newError(ctx, []error{ErrSchemaClash}, nil,
			"schema %q already holds %s, which the library's migrations create, but the library has never migrated it (there is no %s.%s): lend the library a schema of its own; nothing was created",
			sf.schema, strings.Join(clash, ", "), sf.schema, m.versionTable)
	}
	return nil
}

// blockage is what a statement that ran out of lock_timeout waited for: the
// sessions that held locks in the schema when it gave up. A migrator has one
// connection, so it cannot ask pg_blocking_pids while it waits; the sessions
// holding locks on the schema's tables just after are, in practice, what
// pg_blocking_pids would name (a long transaction that read or wrote them).
type blockage struct {
	what     string // a file, or the holder's own work
	timeout  time.Duration
	sessions []string
}

// blockersSQL lists the other sessions holding locks on relations of a
// schema, longest transaction first.
const blockersSQL = `SELECT a.pid::text, coalesce(a.application_name, ''), coalesce(a.state, ''),
	coalesce(round(extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start)::numeric, 1)::text, ''),
	pg_catalog.string_agg(DISTINCT l.mode || ' on ' || c.relname, ', ')
FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_class c ON c.oid = l.relation
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid() AND c.relkind NOT IN ('i', 'I')
AND c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %s)
GROUP BY a.pid, a.application_name, a.state, a.xact_start ORDER BY a.xact_start LIMIT 5`

// blockers rolls back what the lock wait left (the lock's transaction, so
// the lock goes too) and reads who holds locks in the schema.
func (r *holder) blockers(ctx context.Context, what string) (*blockage, error) {
	sql := fmt.Sprintf(blockersSQL, quoteLiteral(r.sf.schema))
	if r.h.pg().TxStatus() != 'I' {
		sql = "ROLLBACK; " + sql
	}
	results, err := r.h.pg().Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	b := &blockage{what: what, timeout: r.cfg.LockTimeout}
	for _, row := range results[len(results)-1].Rows {
		s := "pid " + string(row[0])
		var about []string
		if app := string(row[1]); app != "" {
			about = append(about, "application_name "+strconv.Quote(app))
		}
		if state := string(row[2]); state != "" {
			about = append(about, state)
		}
		if open := string(row[3]); open != "" {
			about = append(about, "transaction open "+open+"s")
		}
		about = append(about, "holding "+string(row[4]))
		b.sessions = append(b.sessions, s+" ("+strings.Join(about, ", ")+")")
	}
	return b, nil
}

// explain adds to err, when the caller's context ended while the holder
// waited to try again, what it was waiting for.
func (p *pause) explain(ctx context.Context, schema string, err error) error {
	if p == nil || ctx.Err() == nil {
		return err
	}
	switch {
	case p.blocked != nil:
		who := "a session that had ended by the time it looked"
		if len(p.blocked.sessions) > 0 {
			who = strings.Join(p.blocked.sessions, "; ")
		}
		return newError(ctx, []error{ErrRetryable}, err,
			"%v; until then, every try of %s ran out of lock_timeout (%v) waiting for a lock, and was rolled back so that the host's queries could go on: it was blocked by %s; start again once that transaction ends, or end it (SELECT pg_catalog.pg_terminate_backend(pid)), or give the migration a longer deadline",
			err, p.blocked.what, p.blocked.timeout, who)
	case p.conflict != nil:
		return newError(ctx, []error{ErrRetryable}, err,
			"%v; until then, the server ended a try of the migration to resolve a deadlock or serialization conflict with another session (%v), and it was tried again; start again",
			err, p.conflict)
	case p.lease != nil:
		return newError(ctx, []error{ErrRetryable}, err,
			"%v: another migrator is applying version %d of schema %q, a file marked NO TRANSACTION, under the migration lease (it renews it before each statement; if it stopped, the lease lapses in %v); start again when it is done, or give the migration a longer deadline",
			err, p.lease.version, schema, max(p.lease.left, 0).Round(time.Millisecond))
	}
	return err
}

// qualified quotes a name of schema for SQL.
func qualified(schema, name string) string {
	return `"` + strings.ReplaceAll(schema, `"`, `""`) + `"."` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

var _ = slices.Contains[[]string]
