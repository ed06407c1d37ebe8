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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
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
	tables       []string // every {{tables.x}} the files name

	mu       sync.Mutex
	rendered map[string]*schemaFiles
}

// schemaFiles is the set rendered for one schema, with the statements used to
// inspect it.
type schemaFiles struct {
	schema          string
	fsys            *renderedFS
	versionTable    string // schema.table as goose pastes it, unquoted
	fastSQL         string
	stateSQL        string
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
	for i := range m.files {
		m.byVersion[m.files[i].version] = &m.files[i]
		for _, t := range m.files[i].stmt.Tables() {
			if !slices.Contains(m.tables, t) {
				m.tables = append(m.tables, t)
			}
		}
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
	versionsDDL, err := gooseVersionTableDDL(schema + "." + m.versionTable)
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
		versionTable: schema + "." + m.versionTable,
		fastSQL:      `SELECT version_id, checksum FROM ` + sums,
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

// Result says what Up did.
type Result struct {
	// Applied lists the files applied by this call, in order.
	Applied []string
	// Version is the schema's version afterwards.
	Version int64
}

// Up brings schema up to date: it creates the schema when missing and applies
// pending files, each in a transaction of its own that holds the migration
// lock (files marked NO TRANSACTION run outside it, under the lock held by a
// transaction on another connection). Several
// processes may call it at once on one schema: one migrates, the others wait
// without holding a connection and then find nothing to do. It holds at most
// one connection of the pool at a time, except while a NO TRANSACTION file
// runs.
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
	var fast plan
	st, err := m.query(ctx, pool, sf.fastSQL)
	switch {
	case err == nil:
		if fast, err = m.plan(st, schema); err != nil {
			return Result{}, err
		}
		if fast.upToDate() {
			fast.warnNewer(log, schema, m.Latest())
			return Result{Version: fast.version}, nil
		}
	case isMissing(err):
		fast.pending = m.versions()
	default:
		return Result{}, m.stateError(ctx, err, schema)
	}
	return m.upLocked(ctx, pool, sf, fast, log)
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
