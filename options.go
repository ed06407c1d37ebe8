package mylib

// The template's machinery (newlib.manifest): a library made from the
// template keeps this file as it is, and newlib update merges the template's
// later changes into it.

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib/internal/migrate"
)

// Manager is what a host application lends the library in embedded mode: its
// pool and the schema the library keeps its tables in. Any type with these two
// methods will do; the host imports nothing of this package to write one.
//
// The library borrows the pool and never closes it. Give each library, and
// each tenant of one library, its own schema.
type Manager interface {
	// Pool returns the host's pool. It must not be nil.
	Pool() *pgxpool.Pool
	// Schema returns the schema lent to the library; see WithSchema for the rules.
	Schema() string
}

// Option configures New. Options check their own argument; New checks how
// they combine.
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

// config is what the options say, before New checks it as a whole.
type config struct {
	dsn         *string
	manager     Manager
	schema      *string
	logger      *slog.Logger
	poolConfigs []func(*pgxpool.Config)
	lockTimeout time.Duration
	files       func() (*migrate.Migrations, error) // migrations other than the embedded ones: tests of the machinery
}

// WithDSN makes the library standalone: it parses dsn with
// pgxpool.ParseConfig, builds its own pool, and closes it in Close. The DSN is
// a URL (postgres://user:password@host:5432/db?sslmode=disable) or key=value
// pairs. Its password never appears in an error or a log line.
func WithDSN(dsn string) Option {
	return optionFunc(func(c *config) error {
		if c.dsn != nil {
			return errors.New("WithDSN is given twice: pass one DSN")
		}
		if dsn == "" {
			return errors.New("WithDSN is given an empty DSN: pass a URL such as postgres://user@localhost:5432/app, or use WithManager to share the host's pool")
		}
		c.dsn = &dsn
		return nil
	})
}

// WithManager makes the library embedded: it borrows m.Pool() and m.Schema()
// and never closes the pool. Many libraries, or many tenants of one library,
// can share one pool this way, each in its own schema.
func WithManager(m Manager) Option {
	return optionFunc(func(c *config) error {
		if c.manager != nil {
			return errors.New("WithManager is given twice: pass one manager")
		}
		if isNil(m) {
			return errors.New("WithManager is given a nil manager: pass a value whose Pool() returns the host's *pgxpool.Pool")
		}
		c.manager = m
		return nil
	})
}

// WithSchema sets the schema of a standalone library (default: DefaultSchema,
// the library's name). Schema names are lowercase identifiers matching
// ^[a-z_][a-z0-9_]{0,62}$, not starting with pg_ and not information_schema.
// With WithManager it is an error: the host's manager decides the schema.
func WithSchema(name string) Option {
	return optionFunc(func(c *config) error {
		if c.schema != nil {
			return errors.New("WithSchema is given twice: pass one schema")
		}
		c.schema = &name
		return nil
	})
}

// WithLogger sets where the library logs: migrations applied, a schema newer
// than the code, a second pool to one database. The default is slog.Default().
// Every line carries the attribute "library", the library's name (its default
// schema, DefaultSchema), so that the lines of several libraries sharing one
// logger can be told apart.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) error {
		if l == nil {
			return errors.New("WithLogger is given a nil logger: omit the option to log to slog.Default()")
		}
		c.logger = l
		return nil
	})
}

// WithLockTimeout sets the lock_timeout of every statement of the
// library's migrations (default 100 ms). A migration that changes a table
// waits for the table's lock behind the host's open transactions, and every
// later query of the host on that table waits behind the migration: this
// bounds that wait. A statement that runs out of it is rolled back with its
// file, which is tried again after a short pause until New's context ends,
// so the host's queries run between tries. Concurrent index builds are not
// bounded by it: they block no query, and they wait for every older
// transaction of the database.
func WithLockTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < time.Millisecond {
			return fmt.Errorf("WithLockTimeout is given %v: give at least 1ms (100ms is the default)", d)
		}
		c.lockTimeout = d
		return nil
	})
}

// withFiles makes New migrate with the migration files at the root of fsys
// instead of the embedded ones: tests of the machinery give it files of
// their own (export_test.go). The files are parsed once per option, as the
// embedded ones are once per process: reuse the option.
func withFiles(fsys fs.FS) Option {
	load := sync.OnceValues(func() (*migrate.Migrations, error) { return migrate.Load(moduleName, fsys) })
	return optionFunc(func(c *config) error {
		c.files = load
		return nil
	})
}

// WithPoolConfig adjusts the pool a standalone library builds, after the DSN
// is parsed and before the pool is created: pool sizes, a tracer, hooks. With
// WithManager it is an error: the host configures its own pool.
func WithPoolConfig(fn func(*pgxpool.Config)) Option {
	return optionFunc(func(c *config) error {
		if fn == nil {
			return errors.New("WithPoolConfig is given a nil function")
		}
		c.poolConfigs = append(c.poolConfigs, fn)
		return nil
	})
}

// check refuses combinations no single option can see.
func (c *config) check() error {
	switch {
	case c.dsn == nil && c.manager == nil:
		return errors.New("no database given: pass WithDSN(dsn) to run standalone, or WithManager(m) to share the host's pool")
	case c.dsn != nil && c.manager != nil:
		return errors.New("both WithDSN and WithManager are given: pass WithDSN to let the library own a pool, or WithManager to borrow the host's, not both")
	case c.manager != nil && c.schema != nil:
		return fmt.Errorf("WithSchema(%q) is given with WithManager: the host's manager decides the schema, so drop WithSchema and return the schema from the manager's Schema()", *c.schema)
	case c.manager != nil && len(c.poolConfigs) > 0:
		return errors.New("WithPoolConfig is given with WithManager: the host configures its own pool, so drop WithPoolConfig")
	}
	return nil
}

// isNil reports whether m is nil or a typed nil pointer, map, func... held in
// the interface, on which calling Pool() would panic or mean nothing.
func isNil(m Manager) bool {
	if m == nil {
		return true
	}
	v := reflect.ValueOf(m)
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Interface, reflect.Slice, reflect.Chan:
		return v.IsNil()
	}
	return false
}
