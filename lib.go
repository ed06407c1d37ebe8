package mylib

// The template's machinery (newlib.manifest): a library made from the
// template keeps this file as it is, and newlib update merges the template's
// later changes into it.

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib/internal/errs"
	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/poolreg"
	"github.com/pgdual/mylib/internal/redact"
	"github.com/pgdual/mylib/internal/sqltmpl"
	"github.com/pgdual/mylib/internal/stmtcache"
)

// moduleName names this library in its database objects: the version table
// <schema>.mylib_goose_db_version, the checksum table beside it and the
// migration lock all derive from it. It must equal the last element of the
// module path, and it must never change after a library's first release: a
// new name means a new, empty version table, and every migration would run
// again.
const moduleName = "mylib"

// DefaultSchema is the schema of a standalone library when WithSchema is not
// given: the library's name, which is also moduleName (a test keeps the two
// equal).
const DefaultSchema = "mylib"

// Errors a caller can branch on with errors.Is. Every error New returns also
// says what was wrong and what to do; an error matches every sentinel that is
// true of it (a lost lock is also retryable). Each is defined once, in
// internal/errs, and the machinery's errors match them directly.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errs.Closed
	// ErrInvalidConfig is wrapped by errors about options and what they carry:
	// the DSN, the manager, pool sizes.
	ErrInvalidConfig = errs.InvalidConfig
	// ErrInvalidSchema is wrapped by errors about the schema: a name that is
	// not a valid schema name, or a schema the library has never migrated
	// that already holds tables under the names its migrations create.
	// Nothing is created in the database.
	ErrInvalidSchema = errs.InvalidSchema
	// ErrMigration is wrapped by every error from bringing the schema up to
	// date, whatever stopped it.
	ErrMigration = errs.Migration
	// ErrDrift is wrapped when an applied migration's file has changed.
	// Restore the file; add a new one for the change.
	ErrDrift = errs.Drift
	// ErrOutOfOrder is wrapped when a file is numbered below the applied version.
	ErrOutOfOrder = errs.OutOfOrder
	// ErrUnknownVersion is wrapped when the schema records a version that no
	// file has: a migration file was deleted or renamed.
	ErrUnknownVersion = errs.UnknownVersion
	// ErrMigrationFailed is wrapped when a migration file's SQL failed; the
	// schema stays at the version before it. Fix the file.
	ErrMigrationFailed = errs.MigrationFailed
	// ErrLockLost is wrapped when the migration lock was lost while
	// migrating: the connection holding it was lost (a terminated backend, a
	// restart, a failover), or the migrator stopped talking for longer than
	// the lease (frozen, partitioned) and another took over. What it held
	// uncommitted was rolled back: nothing ran unlocked. It is retryable.
	ErrLockLost = errs.LockLost
	// ErrRetryable is wrapped by faults that starting again fixes, with the
	// database as it was or consistently further along: a lost connection, a
	// server restart or failover, a lost lock, a deadlock or serialization
	// conflict, a server out of connections, a server that cannot be
	// reached, and, with the caller's context error, a lock the host held
	// until the deadline (the error names the session that held it).
	ErrRetryable = errs.Retryable
	// ErrNotMigrated is wrapped when the schema is behind this code and the
	// session cannot migrate it: the role may not create in the schema (a
	// runtime role), or the server is read-only (a standby). Nothing is
	// created or changed. Run the migrations with the schema owner's role on
	// the primary (a deploy step), then start again.
	ErrNotMigrated = errs.NotMigrated
	// ErrIrreversible is wrapped when MigrateTo would have to undo a file
	// that has no Down section, or an applied version that no file of this
	// code has. Nothing is changed.
	ErrIrreversible = errs.Irreversible
	// ErrInvalidArgument is wrapped when a method is given what it cannot
	// use: an event without an actor, a page size out of range, a nil
	// transaction. Nothing is changed.
	ErrInvalidArgument = errs.InvalidArgument
)

//go:embed migrations/*.sql
var embedded embed.FS

// migrations are parsed once per process, on the first New.
var migrations = sync.OnceValues(func() (*migrate.Migrations, error) {
	sub, err := fs.Sub(embedded, "migrations")
	if err != nil {
		return nil, err
	}
	return migrate.Load(moduleName, sub)
})

// Client is the library's handle on its schema. It is safe for concurrent use.
// Its schema is fixed for its life: open one Client per schema.
type Client struct {
	pool   *pgxpool.Pool
	owned  bool // the Client built the pool, so Close closes it
	schema string
	stmts  *stmtcache.Statements // how its statements run on the pool
	log    *slog.Logger
	// migration is how it migrates: its logger and lock_timeout.
	migration migrate.Config
	closed    atomic.Bool
	// forget removes a standalone pool from the process's registry of pools.
	forget func()
}

// New opens the library: standalone with WithDSN, embedded with WithManager.
// It checks every option before touching the database, then brings the
// schema up to date with the embedded migrations. On error nothing is left
// open, and the database is as it was, except for migrations that completed
// before a failing one.
func New(ctx context.Context, opts ...Option) (*Client, error) {
	c, _, err := start(ctx, "New", opts)
	return c, err
}

// start opens the Client and brings its schema up to date: New, and Migrate.
func start(ctx context.Context, caller string, opts []Option) (*Client, migrate.Result, error) {
	return startTo(ctx, caller, opts, nil)
}

// startTo is start, taking the schema to version target when it is not nil.
func startTo(ctx context.Context, caller string, opts []Option, target *int64) (*Client, migrate.Result, error) {
	c, set, secrets, err := prepare(caller, opts)
	if err != nil {
		return nil, migrate.Result{}, err
	}
	var res migrate.Result
	if target == nil {
		res, err = set.Up(ctx, c.pool, c.schema, c.migration)
	} else {
		res, err = set.To(ctx, c.pool, c.schema, *target, c.migration)
	}
	if err != nil {
		if ctx.Err() != nil {
			// Closing waits for the connections the deadline broke, which
			// pgx ends with a cancel request over a new connection: return
			// now and let the pool close behind.
			go c.Close()
		} else {
			c.Close()
		}
		return nil, res, redact.Error(startError(err), secrets...)
	}
	return c, res, nil
}

// prepare checks the options and builds the Client around its pool. It
// connects to nothing yet. secrets are what errors must not show.
func prepare(caller string, opts []Option) (c *Client, set *migrate.Migrations, secrets []string, err error) {
	var cfg config
	for _, o := range opts {
		if o == nil {
			return nil, nil, nil, fmt.Errorf("%w: a nil Option was passed to %s", ErrInvalidConfig, caller)
		}
		if err := o.apply(&cfg); err != nil {
			return nil, nil, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	if err := cfg.check(); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	log := cfg.logger
	if log == nil {
		log = slog.Default()
	}
	// Every line says whose it is: several libraries may share one logger.
	log = log.With(slog.String("library", moduleName))
	load := migrations
	if cfg.files != nil {
		load = cfg.files
	}
	if set, err = load(); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: the embedded migrations are unusable: %w", ErrMigration, err)
	}
	c, secrets, err = open(&cfg, log)
	if c != nil {
		c.migration = migrate.Config{Log: log, LockTimeout: cfg.lockTimeout}
	}
	return c, set, secrets, err
}

// startError gives an error of the migrations the library's prefix, and
// ErrMigration unless no connection could be made.
func startError(err error) error {
	if errors.Is(err, errs.Connect) {
		return &publicError{err: err}
	}
	return &publicError{err: err, is: []error{ErrMigration}}
}

// publicError is an error of the machinery as a caller sees it: prefixed with
// the library's name, matching the sentinels its own error matches and is.
type publicError struct {
	err error
	is  []error
}

func (e *publicError) Error() string { return moduleName + ": " + e.err.Error() }

func (e *publicError) Unwrap() []error { return append(e.is[:len(e.is):len(e.is)], e.err) }

// open builds the Client around the host's pool, or around a new pool of its
// own, after checking the schema. It connects to nothing yet.
func open(cfg *config, log *slog.Logger) (*Client, []string, error) {
	if cfg.manager != nil {
		pool, schema := cfg.manager.Pool(), cfg.manager.Schema()
		if pool == nil {
			return nil, nil, fmt.Errorf("%w: the manager's Pool() returned nil: open the host's pool with pgxpool.New before passing the manager", ErrInvalidConfig)
		}
		c, err := newClient(pool, false, schema, log)
		if err != nil {
			return nil, nil, &publicError{err: fmt.Errorf("the manager's Schema() returned %q: %w", schema, err)}
		}
		return c, nil, nil
	}

	schema := DefaultSchema
	if cfg.schema != nil {
		schema = *cfg.schema
	}
	secrets := redact.Secrets(*cfg.dsn)
	poolCfg, err := pgxpool.ParseConfig(*cfg.dsn)
	if err != nil {
		return nil, secrets, fmt.Errorf("%w: the DSN cannot be parsed: %s; pass a URL such as postgres://user:password@host:5432/db or key=value pairs such as \"host=localhost dbname=app\"",
			ErrInvalidConfig, redact.String(err.Error(), secrets...))
	}
	secrets = append(secrets, poolCfg.ConnConfig.Password)
	for _, fn := range cfg.poolConfigs {
		fn(poolCfg)
	}
	if err := sqltmpl.ValidateSchema(schema); err != nil {
		return nil, secrets, &publicError{err: fmt.Errorf("WithSchema: %w", err)}
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), poolCfg)
	if err != nil {
		return nil, secrets, redact.Error(fmt.Errorf("%w: building the pool: %w", ErrInvalidConfig, err), secrets...)
	}
	c, err := newClient(pool, true, schema, log)
	if err != nil {
		pool.Close()
		return nil, secrets, err
	}
	c.forget = poolreg.Add(&poolCfg.ConnConfig.Config, log,
		moduleName+": another connection pool to the same database is open in this process; each pool holds its own connections: open one pool in the host and pass it with WithManager")
	return c, secrets, nil
}

func newClient(pool *pgxpool.Pool, owned bool, schema string, log *slog.Logger) (*Client, error) {
	r, err := sqltmpl.NewRenderer(schema)
	if err != nil {
		return nil, err
	}
	return &Client{pool: pool, owned: owned, schema: schema, stmts: stmtcache.New(pool, r), log: log}, nil
}

// Schema returns the schema the Client keeps its tables in.
func (c *Client) Schema() string { return c.schema }

// Close releases the Client. It closes the pool only when the Client built it
// (WithDSN), after the queries in flight finish; a borrowed pool stays open
// for its host. A second call does nothing. Methods called after Close return
// ErrClosed.
func (c *Client) Close() {
	if c.closed.Swap(true) {
		return
	}
	c.stmts.Release()
	if c.owned {
		c.pool.Close()
		c.forget()
	}
}

// use returns ErrClosed once Close has been called.
func (c *Client) use() error {
	if c.closed.Load() {
		return ErrClosed
	}
	return nil
}

// fail wraps an error of a call for the caller: it says what the call was
// doing and, when Close ran while the call was in flight, also matches ErrClosed.
func (c *Client) fail(err error, format string, args ...any) error {
	err = fmt.Errorf(moduleName+": "+format+": %w", append(args, err)...)
	if c.closed.Load() {
		return errors.Join(ErrClosed, err)
	}
	return err
}
