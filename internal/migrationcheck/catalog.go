package migrationcheck

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// relation is a table or an index as the catalog shows it, with what the
// current transaction did to it.
type relation struct {
	oid      uint32
	name     string
	schema   string
	kind     string // pg_class.relkind: r, p, m for tables, i, I for indexes
	filenode uint32 // changes when the relation's storage is replaced
	table    uint32 // an index's table; 0 for a table
	scans    int64  // scans begun in this transaction (pg_stat_get_xact_numscans)
	lock     lockMode
}

type columnKey struct {
	table uint32
	num   int16
}

type column struct {
	name    string
	dropped bool
	notNull bool
	typ     string
}

type constraint struct {
	table     uint32
	refs      uint32 // a foreign key's referenced table
	name      string
	kind      string // pg_constraint.contype
	validated bool
}

// snapshot is the part of the catalog a statement can change that matters
// here: the relations of the scratch schema and of the tables that existed
// before the file (wherever they moved), their columns and constraints.
type snapshot struct {
	rels map[uint32]relation
	cols map[columnKey]column
	cons map[uint32]constraint // by oid
}

const relationsSQL = `WITH locks AS (
	SELECT l.relation, max(pg_catalog.array_position($3::text[], l.mode)) AS mode FROM pg_catalog.pg_locks l
	WHERE l.locktype = 'relation' AND l.pid = pg_catalog.pg_backend_pid() AND l.granted GROUP BY l.relation)
SELECT c.oid, c.relname, n.nspname, c.relkind::text, c.relfilenode, COALESCE(i.indrelid, 0),
	pg_catalog.pg_stat_get_xact_numscans(c.oid), COALESCE(k.mode, 0)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
LEFT JOIN locks k ON k.relation = c.oid
WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I')
	AND (n.nspname = $1 OR c.oid IN (SELECT pg_catalog.unnest($2::oid[])) OR i.indrelid IN (SELECT pg_catalog.unnest($2::oid[])))`

const columnsSQL = `SELECT a.attrelid, a.attnum, a.attname, a.attisdropped, a.attnotnull, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute a WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0`

const constraintsSQL = `SELECT c.oid, c.conrelid, c.confrelid, c.conname, c.contype::text, c.convalidated
FROM pg_catalog.pg_constraint c
WHERE c.conrelid IN (SELECT pg_catalog.unnest($1::oid[])) OR c.confrelid IN (SELECT pg_catalog.unnest($1::oid[]))`

// take reads a snapshot in one round trip, on conn, inside its transaction
// if it is in one (the scan counts and locks are that transaction's). tables
// are the tables that existed before the file.
func take(ctx context.Context, conn *pgx.Conn, tables []uint32) (snapshot, error) {
	s := snapshot{rels: map[uint32]relation{}, cols: map[columnKey]column{}, cons: map[uint32]constraint{}}
	b := &pgx.Batch{}
	b.Queue(relationsSQL, schema, tables, lockModes).Query(func(rows pgx.Rows) error {
		var r relation
		_, err := pgx.ForEachRow(rows, []any{&r.oid, &r.name, &r.schema, &r.kind, &r.filenode, &r.table, &r.scans, &r.lock}, func() error {
			s.rels[r.oid] = r
			return nil
		})
		return err
	})
	b.Queue(columnsSQL, tables).Query(func(rows pgx.Rows) error {
		var k columnKey
		var c column
		_, err := pgx.ForEachRow(rows, []any{&k.table, &k.num, &c.name, &c.dropped, &c.notNull, &c.typ}, func() error {
			s.cols[k] = c
			return nil
		})
		return err
	})
	b.Queue(constraintsSQL, tables).Query(func(rows pgx.Rows) error {
		var oid uint32
		var c constraint
		_, err := pgx.ForEachRow(rows, []any{&oid, &c.table, &c.refs, &c.name, &c.kind, &c.validated}, func() error {
			s.cons[oid] = c
			return nil
		})
		return err
	})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return snapshot{}, fmt.Errorf("migration check: reading the catalog: %w", err)
	}
	return s, nil
}

// before is what existed before a file: its tables and their columns.
type before struct {
	tables []uint32
	snapshot
}

// isTable reports whether r is a table (not an index).
func (r relation) isTable() bool { return r.table == 0 && r.kind != "i" && r.kind != "I" }

// existing reads the tables of the scratch schema before a file.
func existing(ctx context.Context, conn *pgx.Conn) (before, error) {
	s, err := take(ctx, conn, nil)
	if err != nil {
		return before{}, err
	}
	var b before
	for oid, r := range s.rels {
		if r.isTable() {
			b.tables = append(b.tables, oid)
		}
	}
	if b.snapshot, err = take(ctx, conn, b.tables); err != nil {
		return before{}, err
	}
	return b, nil
}
