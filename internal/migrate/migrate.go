// Package migrate runs a library's embedded goose migrations inside one
// schema, tracked in a version table named after the library's module, under
// a lock keyed on (module, schema), with a checksum recorded for every applied
// file so that an edited migration is refused.
//
// A start on an up-to-date schema costs one query: the versions and checksums
// the database holds are compared with the embedded files before any lock is
// taken or any goose Provider is built.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
)

// Errors a caller can branch on with errors.Is.
var (
	// ErrDrift: an applied migration's file has changed since it was applied.
	ErrDrift = errors.New("applied migration changed")
	// ErrOutOfOrder: a file is numbered below a version already applied.
	ErrOutOfOrder = errors.New("migration out of order")
	// ErrUnknownVersion: the schema records a version that no file has, below the newest file.
	ErrUnknownVersion = errors.New("applied version has no migration file")
	// ErrPoolTooSmall: migrating needs two connections from the pool.
	ErrPoolTooSmall = errors.New("pool too small to migrate")
	// ErrFailed: a migration file failed; the schema stays at the version before it.
	ErrFailed = errors.New("migration failed")
)

// Migrations is a library's set of migration files, parsed once, ready to run
// against any schema.
type Migrations struct {
	module       string
	versionTable string // module + "_goose_db_version"
	sumTable     string // module + "_goose_checksums"
	base         fs.FS
	files        []file
	byVersion    map[int64]*file

	mu       sync.Mutex
	rendered map[string]*schemaFiles
}

// schemaFiles is the set rendered for one schema, with the statements used to
// inspect it.
type schemaFiles struct {
	fsys            *renderedFS
	versionTable    string // schema.table as goose pastes it, unquoted
	stateSQL        string
	fastSQL         string
	versionsSQL     string
	recordSQL       string
	schemaExistsSQL string
	createSchemaSQL string
	sumsSQL         string
}

// Load parses the migration files at the root of fsys for the library named
// module. It checks names, versions and placeholders: every error names the file.
func Load(module string, fsys fs.FS) (*Migrations, error) {
	files, err := loadFiles(fsys)
	if err != nil {
		return nil, err
	}
	m := &Migrations{
		module:       module,
		versionTable: VersionTable(module),
		sumTable:     ChecksumTable(module),
		base:         fsys,
		files:        files,
		byVersion:    make(map[int64]*file, len(files)),
		rendered:     make(map[string]*schemaFiles),
	}
	for i := range m.files {
		m.byVersion[m.files[i].version] = &m.files[i]
	}
	return m, nil
}

// VersionTable is the goose version table of the library named module.
func VersionTable(module string) string { return module + "_goose_db_version" }

// ChecksumTable is the table beside the version table that records the checksum
// of every applied migration file.
func ChecksumTable(module string) string { return module + "_goose_checksums" }

// Latest returns the highest version among the files.
func (m *Migrations) Latest() int64 { return m.files[len(m.files)-1].version }

func (m *Migrations) forSchema(schema string) (*schemaFiles, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.rendered[schema]; ok {
		return s, nil
	}
	fsys, err := renderFiles(m.base, m.files, schema)
	if err != nil {
		return nil, err
	}
	versions := pgx.Identifier{schema, m.versionTable}.Sanitize()
	sums := pgx.Identifier{schema, m.sumTable}.Sanitize()
	s := &schemaFiles{
		fsys:         fsys,
		versionTable: schema + "." + m.versionTable,
		fastSQL:      `SELECT version_id, checksum FROM ` + sums,
		versionsSQL:  `SELECT version_id, 0::bigint FROM ` + versions + ` WHERE is_applied AND version_id > 0`,
		stateSQL: `SELECT v.version_id, coalesce(c.checksum, 0) FROM ` + versions + ` v LEFT JOIN ` + sums +
			` c USING (version_id) WHERE v.is_applied AND v.version_id > 0`,
		// Asked with the lock, after it is taken: the schema is created only
		// when missing, since CREATE SCHEMA IF NOT EXISTS needs CREATE on the
		// database even when the schema exists, which a role that owns only
		// its schema does not have.
		schemaExistsSQL: `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = ` + quoteLiteral(schema) + `)`,
		createSchemaSQL: `CREATE SCHEMA ` + pgx.Identifier{schema}.Sanitize(),
		// Runs in the lock's transaction, which began before the schema was
		// created: the first statement locks pg_namespace, which makes the
		// backend take in the catalog changes committed since (else a cached
		// "no such schema" from an earlier query on this connection stands).
		// Fixed-width columns only: no TOAST table, so it is cheap to create.
		sumsSQL: `SELECT FROM pg_catalog.pg_namespace WHERE false; CREATE TABLE IF NOT EXISTS ` + sums + ` (
	version_id bigint PRIMARY KEY,
	checksum bigint NOT NULL,
	recorded_at timestamptz NOT NULL DEFAULT now()
)`,
		// Numbers only, inlined, so that it travels with the COMMIT.
		recordSQL: `INSERT INTO ` + sums + ` (version_id, checksum)
SELECT f.version_id, f.checksum FROM unnest('{` + m.list(func(f file) int64 { return f.version }) + `}'::bigint[], '{` +
			m.list(func(f file) int64 { return f.checksum }) + `}'::bigint[]) AS f(version_id, checksum)
WHERE f.version_id IN (SELECT version_id FROM ` + versions + ` WHERE is_applied)
ON CONFLICT (version_id) DO NOTHING`,
	}
	m.rendered[schema] = s
	return s, nil
}

// Result says what Up did.
type Result struct {
	// Applied lists the files applied by this call, in order.
	Applied []string
	// Version is the schema's version afterwards.
	Version int64
}

// Up brings schema up to date: it creates the schema when missing and applies
// pending files, each in its own transaction (unless marked NO TRANSACTION).
// Several processes may call it at once on one schema: one migrates, the others
// wait without holding a connection and then find nothing to do.
func (m *Migrations) Up(ctx context.Context, pool *pgxpool.Pool, schema string, log *slog.Logger) (Result, error) {
	sf, err := m.forSchema(schema)
	if err != nil {
		return Result{}, err
	}
	// Fast path: one query of one table, no lock. The checksum table holds a
	// row for every version the library applied (it records only versions
	// goose's table holds, in the lock's transaction), so when it has every
	// file with its checksum, the schema is up to date. Anything else, a
	// version goose applied but not yet recorded included, takes the locked
	// path, which reads goose's own table. Reading one table instead of two
	// saves a fresh connection most of the cost of the query.
	st, err := m.query(ctx, pool, sf.fastSQL)
	if err == nil {
		p, err := m.plan(st, schema)
		if err != nil {
			return Result{}, err
		}
		if p.upToDate() {
			p.warnNewer(log, schema, m.Latest())
			return Result{Version: p.version}, nil
		}
	} else if !isMissing(err) {
		return Result{}, fmt.Errorf("reading the migration state of schema %q: %w", schema, err)
	}
	return m.upLocked(ctx, pool, schema, sf, log)
}

func (m *Migrations) upLocked(ctx context.Context, pool *pgxpool.Pool, schema string, sf *schemaFiles, log *slog.Logger) (res Result, err error) {
	// The holder uses one connection for the lock and one for goose.
	if n := pool.Config().MaxConns; n < 2 {
		return Result{}, fmt.Errorf("%w: migrating schema %q needs 2 connections (one holds the migration lock, one runs the migrations) but the pool's MaxConns is %d: raise it to at least 2", ErrPoolTooSmall, schema, n)
	}
	// While another migrator holds the lock, a waiter looks between attempts
	// whether it is done (the fast path's query), and leaves without taking
	// the lock when it is.
	var p plan
	h, err := lock{pool: pool, key: lockKey(m.module, schema), probe: sf.schemaExistsSQL}.acquire(ctx, func(ctx context.Context) (bool, error) {
		st, err := m.query(ctx, pool, sf.fastSQL)
		if err != nil {
			return false, nil // not there yet, or a passing error: the next attempt tells
		}
		p, err = m.plan(st, schema)
		return err == nil && p.upToDate(), err
	})
	if err != nil {
		return Result{}, err
	}
	if h == nil {
		p.warnNewer(log, schema, m.Latest())
		return Result{Version: p.version}, nil
	}
	commit, recordSQL := false, ""
	defer func() {
		if rerr := h.release(ctx, commit, recordSQL); rerr != nil && err == nil {
			err = fmt.Errorf("releasing the migration lock of schema %q (checksums of applied files are recorded on release): %w", schema, rerr)
		}
	}()
	// Under the lock nobody else creates the schema: CREATE SCHEMA IF NOT
	// EXISTS alone races (duplicate key on pg_namespace). A schema created
	// here is empty: there is no state to read.
	var st state
	if !h.probed {
		if _, err := pool.Exec(ctx, sf.createSchemaSQL, pgx.QueryExecModeSimpleProtocol); err != nil {
			return Result{}, fmt.Errorf("creating schema %q (the role needs CREATE on the database; or a host creates the schema and lets the role own it): %w", schema, err)
		}
	}
	// The lock's transaction creates the checksum table while this goroutine
	// goes on: it is only needed at release. It then keeps the transaction
	// busy, and cancels the work if the transaction ends.
	lockedCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := h.keepAlive(lockedCtx, cancel, sf.sumsSQL)
	defer func() {
		if lost := stop(); lost != nil {
			err = errors.Join(fmt.Errorf("migrating schema %q: %w", schema, lost), err)
			commit = false
		}
	}()
	ctx = lockedCtx

	if h.probed {
		if st, err = m.readState(ctx, pool, sf); err != nil && !isMissing(err) {
			return Result{}, fmt.Errorf("reading the migration state of schema %q: %w", schema, err)
		}
	}
	if p, err = m.plan(st, schema); err != nil {
		return Result{}, err
	}
	res.Version = p.version
	if len(p.pending) > 0 {
		res, err = m.run(ctx, pool, h, sf, schema, p.version, log)
	}
	// Record checksums of whatever is applied now, even after a failure: the
	// files that did apply are the ones to hold the schema to.
	commit, recordSQL = true, sf.recordSQL
	if err == nil {
		p.warnNewer(log, schema, m.Latest())
	}
	return res, err
}

// run applies the pending files with goose; version is the schema's version before.
func (m *Migrations) run(ctx context.Context, pool *pgxpool.Pool, h *held, sf *schemaFiles, schema string, version int64, log *slog.Logger) (Result, error) {
	start := time.Now()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	// The store checks the lock before each version is recorded.
	store, err := newFencedStore(sf.versionTable, h)
	if err != nil {
		return Result{}, fmt.Errorf("preparing migrations for schema %q: %w", schema, err)
	}
	provider, err := goose.NewProvider(goose.DialectCustom, db, sf.fsys,
		goose.WithStore(store),
		goose.WithDisableGlobalRegistry(true), // a host's own goose registrations stay out
	)
	if err != nil {
		return Result{}, fmt.Errorf("preparing migrations for schema %q: %w", schema, err)
	}
	results, upErr := provider.Up(ctx)

	var res Result
	var partial *goose.PartialError
	if errors.As(upErr, &partial) {
		results = partial.Applied
	}
	for _, r := range results {
		res.Applied = append(res.Applied, r.Source.Path)
		version = max(version, r.Source.Version)
	}
	res.Version = version
	switch {
	case partial != nil && (errors.Is(partial.Err, ErrLockLost) || errors.Is(context.Cause(ctx), ErrLockLost)):
		// Stopped by the lost lock (the fence, or the heartbeat's cancel,
		// whose error the caller adds), not by the file: no ErrFailed.
		return res, fmt.Errorf("migrating schema %q, %s: %w", schema, partial.Failed.Source.Path, partial.Err)
	case partial != nil && (errors.Is(context.Cause(ctx), context.DeadlineExceeded) || errors.Is(context.Cause(ctx), context.Canceled)):
		// The caller's deadline or cancel stopped the file, not its SQL.
		return res, fmt.Errorf("migrating schema %q: %s was interrupted (%w); the schema stays at version %d: give New a longer deadline and start again",
			schema, partial.Failed.Source.Path, context.Cause(ctx), res.Version)
	case partial != nil:
		f := m.byVersion[partial.Failed.Source.Version]
		kept := "nothing of it was kept; fix the file and start again"
		if f.noTx {
			kept = "it is marked NO TRANSACTION, so its statements before the failing one were kept: undo or finish them by hand, fix the file and start again"
		}
		return res, fmt.Errorf("%w: %s in schema %q: %v; the schema stays at version %d and %s",
			ErrFailed, f.name, schema, partial.Err, res.Version, kept)
	case upErr != nil:
		return res, fmt.Errorf("migrating schema %q: %w", schema, upErr)
	}
	log.LogAttrs(ctx, slog.LevelInfo, "applied migrations",
		slog.String("schema", schema), slog.Any("files", res.Applied),
		slog.Int64("version", res.Version), slog.Duration("took", time.Since(start)))
	return res, nil
}

// list joins a number of every file with commas, for an array literal.
func (m *Migrations) list(of func(file) int64) string {
	parts := make([]string, len(m.files))
	for i, f := range m.files {
		parts[i] = strconv.FormatInt(of(f), 10)
	}
	return strings.Join(parts, ",")
}

// state is what the database says is applied: version -> checksum (0 when
// none was recorded, e.g. a schema first migrated by plain goose).
type state map[int64]int64

// readState reads the applied versions and their checksums. When the
// checksum table is missing (a schema migrated by plain goose, or by a release
// without checksums; and, under the lock, before the table's creation commits)
// it reads the versions alone, with no checksum recorded.
func (m *Migrations) readState(ctx context.Context, pool *pgxpool.Pool, sf *schemaFiles) (state, error) {
	st, err := m.query(ctx, pool, sf.stateSQL)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // a table, not the schema: look for the versions alone

		st, err = m.query(ctx, pool, sf.versionsSQL)
	}
	return st, err
}

// query runs a state query. Simple protocol: one round trip, and no prepared
// statement left in every connection's cache for a query run once per start.
func (m *Migrations) query(ctx context.Context, pool *pgxpool.Pool, sql string) (state, error) {
	rows, err := pool.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, err
	}
	st := make(state, len(m.files))
	var version, sum int64
	_, err = pgx.ForEachRow(rows, []any{&version, &sum}, func() error {
		st[version] = sum
		return nil
	})
	return st, err
}

// isMissing reports whether err says the schema or a table is not there yet.
func isMissing(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")
}

type plan struct {
	pending  []int64
	backfill bool  // applied files without a recorded checksum
	version  int64 // highest applied version
	newer    []int64
}

func (p plan) upToDate() bool { return len(p.pending) == 0 && !p.backfill }

func (p plan) warnNewer(log *slog.Logger, schema string, latest int64) {
	if len(p.newer) == 0 {
		return
	}
	log.LogAttrs(context.Background(), slog.LevelWarn,
		"schema is at a newer version than this code knows; not migrating down (expected during a rolling deploy, otherwise deploy the newer code)",
		slog.String("schema", schema), slog.Int64("schema_version", p.version),
		slog.Int64("code_version", latest), slog.Any("unknown_versions", p.newer))
}

// plan compares what is applied with the files. Refusals come before anything
// is written: an edited applied file, a file numbered below an applied
// version, an applied version with no file below the newest file.
func (m *Migrations) plan(st state, schema string) (plan, error) {
	var p plan
	for v := range st {
		p.version = max(p.version, v)
	}
	for _, f := range m.files {
		sum, applied := st[f.version]
		switch {
		case !applied && f.version < p.version:
			return p, fmt.Errorf("%w: %s (version %d) is not applied but schema %q is already at version %d; number new files above the latest applied one (rename it to a version above %d)",
				ErrOutOfOrder, f.name, f.version, schema, p.version, p.version)
		case !applied:
			p.pending = append(p.pending, f.version)
		case sum == 0:
			p.backfill = true
		case sum != f.checksum:
			return p, fmt.Errorf("%w: %s (version %d) differs from the file applied to schema %q; never edit an applied migration: restore the file and add a new one for the change",
				ErrDrift, f.name, f.version, schema)
		}
	}
	for v := range st {
		if _, known := m.byVersion[v]; known {
			continue
		}
		if v < m.Latest() {
			return p, fmt.Errorf("%w: schema %q records version %d, but no migration file has it; restore the file that was deleted or renamed",
				ErrUnknownVersion, schema, v)
		}
		p.newer = append(p.newer, v)
	}
	slices.Sort(p.newer)
	return p, nil
}

// quoteLiteral quotes s as an SQL string literal. Schema names are validated
// identifiers, so this only ever doubles nothing; it is here so the rule does
// not depend on that.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
