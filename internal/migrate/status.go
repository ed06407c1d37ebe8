package migrate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The states of a migration file in a schema.
const (
	Applied = "applied" // recorded in the version table, unchanged since (or without a recorded checksum)
	Pending = "pending" // not applied yet
	Changed = "changed" // applied, and the file has changed since: drift
	Invalid = "invalid" // an invalid index in the schema (FileStatus.Index), named by the file if any
)

// FileStatus is where one migration file, or one applied version, stands in
// a schema.
type FileStatus struct {
	Version   int64
	File      string    // empty for an applied version that no file has
	State     string    // Applied, Pending or Changed
	AppliedAt time.Time // when goose recorded it, in the server's time zone; zero unless applied
	Note      string    // why the state matters, when it does
	Index     string    // the invalid index, schema-qualified, when State is Invalid
}

// Status reads where schema stands, file by file, without changing anything:
// no lock is taken and nothing is created. It returns every file and every
// applied version, in version order, then every invalid index of the schema
// (a concurrent build that failed, whatever ran it), and with them the error
// Up would refuse with (drift, a file out of order, an applied version
// without a file), or nil.
func (m *Migrations) Status(ctx context.Context, pool *pgxpool.Pool, schema string) ([]FileStatus, error) {
	sf, err := m.forSchema(schema)
	if err != nil {
		return nil, err
	}
	applied, err := m.applied(ctx, pool, sf)
	if err != nil {
		return nil, err
	}
	st := make(state, len(applied))
	for v, a := range applied {
		st[v] = a.checksum
	}
	p, refusal := m.plan(st, schema)
	out := make([]FileStatus, 0, len(m.files)+len(applied))
	for _, f := range m.files {
		fs := FileStatus{Version: f.version, File: f.name, State: Pending}
		if a, ok := applied[f.version]; ok {
			fs.State, fs.AppliedAt = Applied, a.at
			switch {
			case a.checksum != 0 && a.checksum != f.checksum:
				fs.State, fs.Note = Changed, "the file differs from the one applied: restore it, and add a new file for the change"
			case a.checksum == 0:
				fs.Note = "no checksum recorded yet: the next migrate records it"
			}
		} else if f.version < p.version {
			fs.Note = fmt.Sprintf("out of order: numbered below the applied version %d; renumber it above", p.version)
		}
		out = append(out, fs)
	}
	for v, a := range applied {
		if _, ok := m.byVersion[v]; ok {
			continue
		}
		note := "no migration file has this version: restore the file that was deleted or renamed"
		if v > m.Latest() {
			note = "newer than this code (expected during a rolling deploy): not migrated down; the release that applied it takes it back (migrate -to)"
		}
		out = append(out, FileStatus{Version: v, State: Applied, AppliedAt: a.at, Note: note})
	}
	slices.SortFunc(out, func(a, b FileStatus) int { return cmp.Compare(a.Version, b.Version) })
	invalid, err := m.invalid(ctx, pool, sf, applied)
	if err != nil {
		return nil, err
	}
	return append(out, invalid...), refusal
}

// invalid lists the schema's invalid indexes, each with the file that names
// it, if any, and what to do.
func (m *Migrations) invalid(ctx context.Context, pool *pgxpool.Pool, sf *schemaFiles, applied map[int64]appliedVersion) ([]FileStatus, error) {
	rows, err := pool.Query(ctx, sf.invalidSQL, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, m.stateError(ctx, err, sf.schema)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, m.stateError(ctx, err, sf.schema)
	}
	var out []FileStatus
	for _, name := range names {
		idx := qualified(sf.schema, name)
		st := FileStatus{State: Invalid, Index: sf.schema + "." + name,
			Note: fmt.Sprintf("index %s.%s is invalid (a concurrent build that failed left it): it enforces nothing and serves no query, and every write pays to maintain it: rebuild it (REINDEX INDEX CONCURRENTLY %s) or drop it (DROP INDEX CONCURRENTLY %s)", sf.schema, name, idx, idx)}
		for _, f := range m.files {
			if f.names(name) {
				st.Version, st.File = f.version, f.name
				if _, ok := applied[f.version]; !ok && f.noTx {
					st.Note = fmt.Sprintf("index %s.%s is invalid (a concurrent build of %s that failed left it): the next migrate drops it and builds it again", sf.schema, name, f.name)
				}
				break
			}
		}
		out = append(out, st)
	}
	return out, nil
}

type appliedVersion struct {
	checksum int64
	at       time.Time
}

// applied reads the applied versions with their checksums and times, from
// goose's table; a missing schema or table means none.
func (m *Migrations) applied(ctx context.Context, pool *pgxpool.Pool, sf *schemaFiles) (map[int64]appliedVersion, error) {
	versions := pgx.Identifier{sf.schema, m.versionTable}.Sanitize()
	sums := pgx.Identifier{sf.schema, m.sumTable}.Sanitize()
	const query = `SELECT v.version_id, coalesce(%s, 0), min(v.tstamp) FROM %s v %s
WHERE v.is_applied AND v.version_id > 0 GROUP BY 1, 2`
	withSums := fmt.Sprintf(query, "c.checksum", versions, "LEFT JOIN "+sums+" c USING (version_id)")
	rows, err := pool.Query(ctx, withSums, pgx.QueryExecModeSimpleProtocol)
	var pgErr *pgconn.PgError
	if err == nil {
		return collectApplied(rows)
	}
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		// The checksum table, or goose's: try goose's alone.
		rows, err = pool.Query(ctx, fmt.Sprintf(query, "NULL::bigint", versions, ""), pgx.QueryExecModeSimpleProtocol)
		if err == nil {
			return collectApplied(rows)
		}
	}
	if isMissing(err) {
		return nil, nil
	}
	return nil, m.stateError(ctx, err, sf.schema)
}

func collectApplied(rows pgx.Rows) (map[int64]appliedVersion, error) {
	out := make(map[int64]appliedVersion)
	var v int64
	var a appliedVersion
	_, err := pgx.ForEachRow(rows, []any{&v, &a.checksum, &a.at}, func() error {
		out[v] = a
		return nil
	})
	return out, err
}
