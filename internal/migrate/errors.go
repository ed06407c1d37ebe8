package migrate

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Errors a caller can branch on with errors.Is. An error matches every kind
// that is true of it: a lost lock is also retryable.
var (
	// ErrDrift: an applied migration's file has changed since it was applied.
	ErrDrift = errors.New("applied migration changed")
	// ErrOutOfOrder: a file is numbered below a version already applied.
	ErrOutOfOrder = errors.New("migration out of order")
	// ErrUnknownVersion: the schema records a version that no file has, below the newest file.
	ErrUnknownVersion = errors.New("applied version has no migration file")
	// ErrPoolTooSmall: a file marked NO TRANSACTION needs a second connection.
	ErrPoolTooSmall = errors.New("pool too small to migrate")
	// ErrFailed: a migration file's SQL failed; the schema stays at the version before it.
	ErrFailed = errors.New("migration failed")
	// ErrLockLost: the connection holding the migration lock was lost while
	// migrating; what it held uncommitted was rolled back.
	ErrLockLost = errors.New("migration lock lost")
	// ErrRetryable: a fault that starting again fixes: a lost connection, a
	// server restart or failover, a deadlock, a lock wait that timed out.
	ErrRetryable = errors.New("retryable")
	// ErrNotMigrated: the schema is behind the files and this session cannot
	// migrate it: its role may not, or the server is read-only.
	ErrNotMigrated = errors.New("schema not migrated")
	// ErrSchemaClash: a schema the library never migrated already holds a
	// table under a name the migrations create.
	ErrSchemaClash = errors.New("schema holds tables of its own")
	// ErrConnect: no connection could be made: the server is not reachable,
	// or it refused the login.
	ErrConnect = errors.New("cannot connect")
)

// Error is an error of this package: its message, the kinds above that it
// matches, and the error that caused it, if any.
type Error struct {
	msg   string
	kinds []error
	cause error
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the kinds and the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.cause == nil {
		return e.kinds
	}
	return append(e.kinds[:len(e.kinds):len(e.kinds)], e.cause)
}

// newError builds an Error; the cause is part of msg already, and is kept
// for errors.As. A context error of ours (not the caller's) is kept as text
// only: nothing matches context.Canceled unless the caller cancelled.
func newError(ctx context.Context, kinds []error, cause error, format string, args ...any) *Error {
	if cause != nil && ctx.Err() == nil && (errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded)) {
		cause = errors.New(cause.Error())
	}
	return &Error{msg: fmt.Sprintf(format, args...), kinds: kinds, cause: cause}
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
