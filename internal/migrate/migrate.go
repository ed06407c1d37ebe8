// Package migrate runs a library's embedded goose migrations inside one
// schema, tracked in a version table named after the library's module, under
// a lock keyed on (module, schema), with a checksum recorded for every applied
// file so that an edited migration is refused.
//
// A start on an up-to-date schema costs one query of one row, whatever the
// number of files: a digest of the versions and checksums the database holds
// is compared with the digest of the embedded files before any lock is taken
// or any goose Provider is built.
//
// The files: lock.go takes the lock, lease.go stands in for it while a file
// that cannot run in a transaction runs, apply.go runs files under it,
// errors.go says what went wrong.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3/database"
)

// Defaults of Config.
const (
	// DefaultLockTimeout bounds each lock wait of a migration statement:
	// the host's queries on a table wait at most this long behind a
	// migration's ALTER, then the migration gives way and tries again.
	DefaultLockTimeout = 100 * time.Millisecond
	// DefaultLease is how long a migrator that stopped talking (frozen,
	// partitioned) keeps the migration lock after its last statement.
	DefaultLease = 15 * time.Second
)

// Config is how a migration behaves toward the host.
type Config struct {
	// Log is where applied files and a schema newer than the code are
	// logged; nil discards.
	Log *slog.Logger
	// LockTimeout is each migration statement's lock_timeout; 0 is
	// DefaultLockTimeout. A statement that runs out of it is rolled back
	// and its file tried again after a short pause, until the context ends.
	LockTimeout time.Duration
	// Lease is how long a holder of the lock that stops talking keeps it;
	// 0 is DefaultLease.
	Lease time.Duration
}

func (c Config) withDefaults() Config {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.LockTimeout <= 0 {
		c.LockTimeout = DefaultLockTimeout
	}
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	return c
}

// Migrations is a library's set of migration files, parsed once, ready to run
// against any schema.
type Migrations struct {
	module       string
	versionTable string // module + "_goose_db_version"
	sumTable     string // module + "_goose_checksums"
	base         fs.FS
	files        []file
	byVersion    map[int64]*file
	tables       []string // every {{tables.x}} the files name
	digest       string   // what the fast path's query answers when every file is applied, unchanged

	mu       sync.Mutex
	rendered map[string]*schemaFiles
	// hook, set by tests, is called before each statement of a file: to
	// stop a migrator between two statements, as a frozen process would.
	hook func(stmt string)
}

// schemaFiles is the set rendered for one schema, with the statements used to
// inspect it.
type schemaFiles struct {
	schema          string
	fsys            *renderedFS
	goose           database.Store // goose's store of the version table
	versionTable    string         // schema.table as goose pastes it, unquoted
	sums            string         // the checksum table, quoted
	leaseTable      string         // the lease's table, quoted
	fastSQL         string
	appliedSQL      string // the checksum table's rows: the fast path's second look
	topSQL          string // the highest version the checksum table holds
	stateSQL        string
	invalidSQL      string // the schema's invalid indexes
	probeSQL        string
	createSchemaSQL string
	versionsSQL     string // goose's own CREATE TABLE for its version table
	sumsSQL         string
	recordSQL       string
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
	all := make(state, len(files))
	for i := range m.files {
		m.byVersion[m.files[i].version] = &m.files[i]
		all[m.files[i].version] = m.files[i].checksum
		for _, t := range m.files[i].stmt.Tables() {
			if !slices.Contains(m.tables, t) {
				m.tables = append(m.tables, t)
			}
		}
	}
	m.digest = all.digest()
	return m, nil
}

// digest is what the fast path's query answers for a checksum table that
// holds st: the number of rows, and the sum of each checksum hashed with its
// version as the seed (hashint8extended, PostgreSQL's own, in hash.go). An
// applied file missing, an unknown one, an edited one or two swapped ones
// change it, but for a chance of about 2^-32.
func (st state) digest() string {
	sum := new(big.Int)
	for v, c := range st {
		sum.Add(sum, big.NewInt(hashint8extended(c, v)))
	}
	return strconv.Itoa(len(st)) + "," + sum.String()
}

// current reports whether a reply to the fast path's query says every file
// is applied, unchanged, and nothing else.
func (m *Migrations) current(res *pgconn.Result) bool {
	if res == nil || res.Err != nil || len(res.Rows) != 1 || len(res.Rows[0]) != 2 {
		return false
	}
	row := res.Rows[0]
	return string(row[0])+","+string(row[1]) == m.digest
}

// VersionTable is the goose version table of the library named module.
func VersionTable(module string) string { return module + "_goose_db_version" }

// ChecksumTable is the table beside the version table that records the checksum
// of every applied migration file.
func ChecksumTable(module string) string { return module + "_goose_checksums" }

// LeaseTable is the table that holds the lease standing in for the
// migration lock while a file marked NO TRANSACTION runs (lease.go). It is
// created the first time such a file runs.
func LeaseTable(module string) string { return module + "_goose_lease" }

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
	store, err := database.NewStore(database.DialectPostgres, schema+"."+m.versionTable)
	if err != nil {
		return nil, err
	}
	versionsDDL, err := gooseVersionTableDDL(store)
	if err != nil {
		return nil, err
	}
	versions := pgx.Identifier{schema, m.versionTable}.Sanitize()
	sums := pgx.Identifier{schema, m.sumTable}.Sanitize()
	names := make([]string, 0, len(m.tables)+2)
	for _, t := range append([]string{m.versionTable, m.sumTable}, m.tables...) {
		names = append(names, quoteLiteral(t))
	}
	s := &schemaFiles{
		schema:       schema,
		fsys:         fsys,
		goose:        store,
		versionTable: schema + "." + m.versionTable,
		sums:         sums,
		leaseTable:   pgx.Identifier{schema, LeaseTable(m.module)}.Sanitize(),
		// One row, however many files: compared with m.digest. One
		// function besides the aggregates: a start runs it on a new
		// connection, whose server process looks up every function a query
		// names (a pairing built of shifts and XORs cost 0.14 ms more).
		fastSQL:    `SELECT pg_catalog.count(*), pg_catalog.sum(pg_catalog.hashint8extended(checksum, version_id)) FROM ` + sums,
		appliedSQL: `SELECT version_id, checksum FROM ` + sums,
		topSQL:     `SELECT coalesce(pg_catalog.max(version_id), 0) FROM ` + sums,
		invalidSQL: `SELECT c.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
WHERE NOT i.indisvalid AND c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = ` + quoteLiteral(schema) + `)
ORDER BY 1`,
		stateSQL: `SELECT v.version_id, coalesce(c.checksum, 0) FROM ` + versions + ` v LEFT JOIN ` + sums +
			` c USING (version_id) WHERE v.is_applied AND v.version_id > 0`,
		// Asked with the lock, after it is taken: what the session may do
		// and what the schema holds, before anything is created. The schema
		// is created only when missing, since CREATE SCHEMA IF NOT EXISTS
		// needs CREATE on the database even when the schema exists, which a
		// role that owns only its schema does not have. The columns are
		// those of probe.
		probeSQL: `SELECT n.oid IS NOT NULL, current_user,
	pg_catalog.current_setting('transaction_read_only') = 'on', pg_catalog.pg_is_in_recovery(),
	CASE WHEN n.oid IS NULL THEN pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')
		ELSE pg_catalog.has_schema_privilege(n.oid, 'CREATE') END,
	(SELECT pg_catalog.string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_catalog.pg_class c
		WHERE c.relnamespace = n.oid AND c.relname IN (` + strings.Join(names, ", ") + `)),
	pg_catalog.current_setting('statement_timeout')
FROM (SELECT) AS one LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = ` + quoteLiteral(schema),
		createSchemaSQL: `CREATE SCHEMA ` + pgx.Identifier{schema}.Sanitize(),
		versionsSQL:     versionsDDL,
		// Fixed-width columns only: no TOAST table, so it is cheap to create.
		sumsSQL: `CREATE TABLE ` + sums + ` (
	version_id bigint PRIMARY KEY,
	checksum bigint NOT NULL,
	recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now()
)`,
		// Numbers only, inlined, so that it travels with the COMMIT.
		recordSQL: `INSERT INTO ` + sums + ` (version_id, checksum)
SELECT f.version_id, f.checksum FROM ROWS FROM (pg_catalog.unnest('{` + m.list(func(f file) int64 { return f.version }) + `}'::bigint[]),
	pg_catalog.unnest('{` + m.list(func(f file) int64 { return f.checksum }) + `}'::bigint[])) AS f(version_id, checksum)
WHERE f.version_id IN (SELECT version_id FROM ` + versions + ` WHERE is_applied)
ON CONFLICT (version_id) DO NOTHING`,
	}
	m.rendered[schema] = s
	return s, nil
}

// probe is the answer to schemaFiles.probeSQL.
type probe struct {
	schemaExists     bool
	role             string
	readOnly         bool
	inRecovery       bool
	canCreate        bool     // CREATE on the schema, or on the database when the schema is missing
	existing         []string // the library's tables already in the schema
	statementTimeout string
}

func parseProbe(row []string) (probe, error) {
	if len(row) != 7 {
		return probe{}, fmt.Errorf("unexpected reply to the migration probe: %d columns", len(row))
	}
	p := probe{schemaExists: row[0] == "t", role: row[1], readOnly: row[2] == "t", inRecovery: row[3] == "t",
		canCreate: row[4] == "t", statementTimeout: row[6]}
	if row[5] != "" {
		p.existing = strings.Split(row[5], ",")
	}
	return p, nil
}

// Result says what Up or To did.
type Result struct {
	// Applied lists the files applied by this call, in order.
	Applied []string
	// Undone lists the files whose Down section this call ran, in order.
	Undone []string
	// Version is the schema's version afterwards.
	Version int64
}

// Up brings schema up to date: it creates the schema when missing and applies
// pending files, each in a transaction of its own that holds the migration
// lock (files marked NO TRANSACTION run outside one, under the lease that
// stands in for the lock). Several processes may call it at once on one
// schema: one migrates, the others wait without holding a connection and
// then find nothing to do. It holds one connection of the pool at a time.
func (m *Migrations) Up(ctx context.Context, pool *pgxpool.Pool, schema string, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	sf, err := m.forSchema(schema)
	if err != nil {
		return Result{}, err
	}
	// Fast path: one query of one row, no lock. The checksum table holds a
	// row for every version the library applied (it records only versions
	// goose's table holds, in the lock's transaction), so when its digest
	// is the files', the schema is up to date. Otherwise a second look
	// reads its rows: a schema newer than the code is left as it is, with a
	// warning. Anything else, a version goose applied but not yet recorded
	// included, takes the locked path, which reads goose's own table.
	var fast plan
	var count string
	var sum *string // NULL when the table is empty
	err = pool.QueryRow(ctx, sf.fastSQL, pgx.QueryExecModeSimpleProtocol).Scan(&count, &sum)
	switch {
	case err == nil && sum != nil && count+","+*sum == m.digest:
		return Result{Version: m.Latest()}, nil
	case err == nil:
		st, err := m.query(ctx, pool, sf.appliedSQL)
		if err != nil {
			return Result{}, m.stateError(ctx, err, schema)
		}
		if fast, err = m.plan(st, schema); err != nil {
			return Result{}, err
		}
		if fast.upToDate() {
			fast.warnNewer(cfg.Log, schema, m.Latest())
			return Result{Version: fast.version}, nil
		}
	case isMissing(err):
		fast.pending = m.versions()
	default:
		return Result{}, m.stateError(ctx, err, schema)
	}
	return m.upLocked(ctx, pool, sf, fast, cfg, nil)
}

// To takes schema to version target: up, applying the files up to it, or
// down, running the Down sections of the applied files above it, newest
// first, each in a transaction of its own under the migration lock (as Up
// does). It refuses, before changing anything, when a file to undo has no
// Down section, when an applied version above the target has no file, or
// when the schema is not where the files expect (drift, a file out of
// order).
func (m *Migrations) To(ctx context.Context, pool *pgxpool.Pool, schema string, target int64, cfg Config) (Result, error) {
	if target < 0 {
		return Result{}, fmt.Errorf("the target version is %d: give 0 to undo every file, or a file's version", target)
	}
	if target > m.Latest() {
		return Result{}, fmt.Errorf("the target version is %d, but the latest file is version %d (%s): give a version up to it", target, m.Latest(), m.byVersion[m.Latest()].name)
	}
	cfg = cfg.withDefaults()
	sf, err := m.forSchema(schema)
	if err != nil {
		return Result{}, err
	}
	return m.upLocked(ctx, pool, sf, plan{pending: m.versions()}, cfg, &target)
}

// steps lists the versions a holder applies (up) or undoes toward target
// (nil: every file), in order, after the refusals of a move down.
func (m *Migrations) steps(p plan, target *int64, schema string) (versions []int64, up bool, err error) {
	if target == nil || *target >= p.version {
		for _, v := range p.pending {
			if target == nil || v <= *target {
				versions = append(versions, v)
			}
		}
		return versions, true, nil
	}
	for _, v := range slices.Backward(p.applied) {
		if v <= *target {
			break
		}
		f, ok := m.byVersion[v]
		if !ok {
			return nil, false, newError(context.Background(), []error{ErrIrreversible}, nil,
				"cannot take schema %q down to version %d: it is at version %d, which no file of this code has, so this code cannot undo it: run the release that applied it to take the schema down first",
				schema, *target, v)
		}
		if !f.hasDown {
			return nil, false, newError(context.Background(), []error{ErrIrreversible}, nil,
				"cannot take schema %q down to version %d: %s (version %d) has no Down section, so it cannot be undone; nothing was changed",
				schema, *target, f.name, v)
		}
		versions = append(versions, v)
	}
	return versions, false, nil
}

// stateError says why the migration state could not be read.
func (m *Migrations) stateError(ctx context.Context, err error, schema string) error {
	doing := fmt.Sprintf("reading the migration state of schema %q", schema)
	var pgErr *pgconn.PgError
	if ctx.Err() == nil && errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return newError(ctx, nil, err, "%s: %v: the role needs USAGE on the schema and SELECT on %s.%s; `%s grant` gives a role what the library needs at run time",
			doing, err, schema, m.sumTable, m.module)
	}
	if f := fault(ctx, nil, err, doing); f != nil {
		return f
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// versions lists every file's version.
func (m *Migrations) versions() []int64 {
	vs := make([]int64, len(m.files))
	for i, f := range m.files {
		vs[i] = f.version
	}
	return vs
}

// names lists the files of versions, for a message.
func (m *Migrations) names(versions []int64) string {
	names := make([]string, 0, len(versions))
	for _, v := range versions {
		if f, ok := m.byVersion[v]; ok {
			names = append(names, f.name)
		}
	}
	return strings.Join(names, ", ")
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

// querier is a pool or a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// query runs a state query. Simple protocol: one round trip, and no prepared
// statement left in every connection's cache for a query run once per start.
func (m *Migrations) query(ctx context.Context, q querier, sql string) (state, error) {
	rows, err := q.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
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
	applied  []int64 // in order
	backfill bool    // applied files without a recorded checksum
	version  int64   // highest applied version
	newer    []int64
}

func (p plan) upToDate() bool { return len(p.pending) == 0 && !p.backfill }

func (p plan) warnNewer(log *slog.Logger, schema string, latest int64) {
	if len(p.newer) == 0 {
		return
	}
	log.LogAttrs(context.Background(), slog.LevelWarn,
		"schema is at a newer version than this code knows; not migrating down (expected during a rolling deploy; otherwise deploy the newer code, or take the schema back with the newer release's migrate -to)",
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
		p.applied = append(p.applied, v)
	}
	slices.Sort(p.applied)
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
