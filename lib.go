// Package mylib is an audit log kept in PostgreSQL, and a template for Go
// libraries that keep their data there.
//
// A library made from it runs in two modes through one code path:
//
//   - standalone: New(ctx, WithDSN(dsn)) builds a pool, owns it, and closes it
//     in Close;
//   - embedded: New(ctx, WithManager(m)) borrows the host's pool and schema and
//     never closes the pool. Many libraries, or many tenants of one library,
//     share one pool, each in its own schema.
//
// In both modes New runs the library's embedded goose migrations inside its
// schema, tracked in the table <schema>.mylib_goose_db_version. Starts on an
// up-to-date schema cost one query; concurrent starts, across processes and
// behind PgBouncer in transaction pooling mode, migrate exactly once.
package mylib

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/redact"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// moduleName names this library in its database objects: the version table
// <schema>.mylib_goose_db_version, the checksum table beside it and the
// migration lock all derive from it. It must equal the last element of the
// module path, and it must never change after a library's first release: a
// new name means a new, empty version table, and every migration would run
// again.
const moduleName = "mylib"

// DefaultSchema is the schema of a standalone library when WithSchema is not given.
const DefaultSchema = moduleName

// Errors a caller can branch on with errors.Is. Every error New returns also
// says what was wrong and what to do.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New(moduleName + ": client is closed")
	// ErrInvalidConfig is wrapped by errors about options and what they carry:
	// the DSN, the manager, pool sizes.
	ErrInvalidConfig = errors.New(moduleName + ": invalid configuration")
	// ErrInvalidSchema is wrapped by errors about a schema name.
	ErrInvalidSchema = sqltmpl.ErrSchemaName
	// ErrMigration is wrapped by every error from running migrations: a file
	// that failed, an applied file that changed (drift), a file numbered below
	// the applied version, a lost migration lock.
	ErrMigration = errors.New(moduleName + ": migrations")
	// ErrDrift is wrapped when an applied migration's file has changed.
	ErrDrift = migrate.ErrDrift
	// ErrOutOfOrder is wrapped when a file is numbered below the applied version.
	ErrOutOfOrder = migrate.ErrOutOfOrder
	// ErrUnknownVersion is wrapped when the schema records a version that no
	// file has: a migration file was deleted or renamed.
	ErrUnknownVersion = migrate.ErrUnknownVersion
	// ErrMigrationFailed is wrapped when a migration file's SQL failed; the
	// schema stays at the version before it. Fix the file.
	ErrMigrationFailed = migrate.ErrFailed
	// ErrLockLost is wrapped when the migration lock's transaction ended while
	// migrating (a terminated backend, a failover, a pooler's timeout). Nothing
	// ran unlocked; starting again is safe.
	ErrLockLost = migrate.ErrLockLost
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
	sql    *sqltmpl.Renderer
	stmts  *statements // how its statements run on the pool (statements.go)
	log    *slog.Logger
	closed atomic.Bool
	// forget removes a standalone pool from the process's registry of pools.
	forget func()
}

// New opens the library: standalone with WithDSN, embedded with WithManager.
// It checks every option before touching the database, then brings the
// schema up to date with the embedded migrations. On error nothing is left
// open, and the database is as it was, except for migrations that completed
// before a failing one.
func New(ctx context.Context, opts ...Option) (*Client, error) {
	var cfg config
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: a nil Option was passed to New", ErrInvalidConfig)
		}
		if err := o.apply(&cfg); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	log := cfg.logger
	if log == nil {
		log = slog.Default()
	}
	set, err := migrations()
	if err != nil {
		return nil, fmt.Errorf("%w: the embedded migrations are unusable: %w", ErrMigration, err)
	}

	c, secrets, err := open(&cfg, log)
	if err != nil {
		return nil, err
	}
	if _, err := set.Up(ctx, c.pool, c.schema, log); err != nil {
		c.Close()
		return nil, redact.Error(startError(err), secrets...)
	}
	return c, nil
}

// startError says which kind of failure stopped New: the server could not be
// reached, the pool cannot migrate, or the migrations themselves.
func startError(err error) error {
	var connect *pgconn.ConnectError
	switch {
	case errors.As(err, &connect):
		return fmt.Errorf(moduleName+": cannot reach the database: check the DSN's host, port, user and password, and that the server is up: %w", connect)
	case errors.Is(err, migrate.ErrPoolTooSmall):
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return fmt.Errorf("%w: %w", ErrMigration, err)
}

// open builds the Client around the host's pool, or around a new pool of its
// own, after checking the schema. It connects to nothing yet.
func open(cfg *config, log *slog.Logger) (*Client, []string, error) {
	if cfg.hasManager {
		pool, schema := cfg.manager.Pool(), cfg.manager.Schema()
		if pool == nil {
			return nil, nil, fmt.Errorf("%w: the manager's Pool() returned nil: open the host's pool with pgxpool.New before passing the manager", ErrInvalidConfig)
		}
		c, err := newClient(pool, false, schema, log)
		if err != nil {
			return nil, nil, fmt.Errorf(moduleName+": the manager's Schema() returned %q: %w", schema, err)
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
		return nil, secrets, fmt.Errorf(moduleName+": WithSchema: %w", err)
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
	c.forget = pools.add(&poolCfg.ConnConfig.Config, log)
	return c, secrets, nil
}

func newClient(pool *pgxpool.Pool, owned bool, schema string, log *slog.Logger) (*Client, error) {
	r, err := sqltmpl.NewRenderer(schema)
	if err != nil {
		return nil, err
	}
	return &Client{pool: pool, owned: owned, schema: schema, sql: r, stmts: newStatements(pool, r), log: log}, nil
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
	c.stmts.release()
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

// pools counts the standalone pools open in this process per server, database
// and user, to warn when a second one opens: each pool holds its own
// connections, and a process should share one (WithManager).
var pools = &poolRegistry{open: make(map[string]int)}

type poolRegistry struct {
	mu   sync.Mutex
	open map[string]int
}

// add records a pool and warns when one to the same server, database and
// user is already open. The key holds no password.
func (r *poolRegistry) add(cc *pgconn.Config, log *slog.Logger) (forget func()) {
	key := cc.Host + "\x00" + strconv.Itoa(int(cc.Port)) + "\x00" + cc.Database + "\x00" + cc.User
	r.mu.Lock()
	r.open[key]++
	n := r.open[key]
	r.mu.Unlock()
	if n > 1 {
		log.LogAttrs(context.Background(), slog.LevelWarn,
			moduleName+": another connection pool to the same database is open in this process; each pool holds its own connections: open one pool in the host and pass it with WithManager",
			slog.String("host", cc.Host), slog.Int("port", int(cc.Port)),
			slog.String("database", cc.Database), slog.String("user", cc.User), slog.Int("pools", n))
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.open[key]--; r.open[key] <= 0 {
				delete(r.open, key)
			}
		})
	}
}
