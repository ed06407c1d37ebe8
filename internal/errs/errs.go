// Package errs defines, once, the errors a caller of the library branches on
// with errors.Is. The root package re-exports them under its own names, and
// the machinery's errors match them directly: an error matches every one
// that is true of it (a lost lock is also retryable).
//
// Each text starts with the library's name (moduleName in lib.go; a test
// keeps the two equal), as every error of the library does.
package errs

import (
	"errors"
	"fmt"
)

var (
	// Closed: a method of a Client called after Close.
	Closed = errors.New("mylib: client is closed")
	// InvalidConfig: options and what they carry (the DSN, the manager,
	// pool sizes, a timeout).
	InvalidConfig = errors.New("mylib: invalid configuration")
	// InvalidSchema: a name that is not a valid schema name, or a schema
	// the library has never migrated that already holds tables under the
	// names its migrations create.
	InvalidSchema = errors.New("mylib: invalid schema")
	// InvalidArgument: a method given what it cannot use (an empty event, a
	// page size out of range, a nil transaction).
	InvalidArgument = errors.New("mylib: invalid argument")
	// Migration: anything that stopped the schema from being brought up to
	// date.
	Migration = errors.New("mylib: migrations")
	// Drift: an applied migration's file has changed since it was applied.
	Drift = errors.New("mylib: applied migration changed")
	// OutOfOrder: a file is numbered below a version already applied.
	OutOfOrder = errors.New("mylib: migration out of order")
	// UnknownVersion: the schema records a version that no file has, below
	// the newest file.
	UnknownVersion = errors.New("mylib: applied version has no migration file")
	// MigrationFailed: a migration file's SQL failed; the schema stays at
	// the version before it.
	MigrationFailed = errors.New("mylib: migration failed")
	// LockLost: the migration lock was lost while migrating.
	LockLost = errors.New("mylib: migration lock lost")
	// Retryable: a fault that starting again fixes.
	Retryable = errors.New("mylib: retryable")
	// NotMigrated: the schema is behind the files and this session cannot
	// migrate it: its role may not, or the server is read-only.
	NotMigrated = errors.New("mylib: schema not migrated")
	// Irreversible: a move down would undo a file that has no Down section,
	// or a version that no file has.
	Irreversible = errors.New("mylib: migration cannot be undone")
	// Connect: no connection could be made: the server is not reachable, or
	// it refused the login. It is not a migration's error, and not
	// exported: a caller branches on Retryable.
	Connect = errors.New("mylib: cannot connect")
)

// Error is an error of the library: its message, the errors above that it
// matches, and the error that caused it, if any (for errors.As).
type Error struct {
	msg   string
	kinds []error
	cause error
}

// New returns an Error that says format with args, matches kinds, and wraps
// cause (whose text, if any, format already holds).
func New(kinds []error, cause error, format string, args ...any) *Error {
	return &Error{msg: fmt.Sprintf(format, args...), kinds: kinds, cause: cause}
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the kinds and the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.cause == nil {
		return e.kinds
	}
	return append(e.kinds[:len(e.kinds):len(e.kinds)], e.cause)
}
