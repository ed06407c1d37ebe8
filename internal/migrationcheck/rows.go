package migrationcheck

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The tables of the scratch schema but those given ($2), each with the
// tables its foreign keys reference.
const tablesSQL = `SELECT c.oid, pg_catalog.quote_ident(c.relname),
	ARRAY(SELECT f.confrelid FROM pg_catalog.pg_constraint f WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid)
FROM pg_catalog.pg_class c
WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.oid NOT IN (SELECT pg_catalog.unnest(COALESCE($2::oid[], '{}')))
ORDER BY c.oid`

// The columns a row needs a value for, and how to make one: by the type's
// category (of a domain's base type).
const fillColumnsSQL = `SELECT a.attnum, pg_catalog.quote_ident(a.attname), pg_catalog.format_type(a.atttypid, a.atttypmod),
	b.typcategory::text, b.typname::text, a.attnotnull
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
ORDER BY a.attnum`

// A table's foreign keys: the columns, and the referenced table and columns.
const fillKeysSQL = `SELECT f.conkey, f.confrelid::regclass::text,
	ARRAY(SELECT pg_catalog.quote_ident(r.attname) FROM pg_catalog.unnest(f.confkey) WITH ORDINALITY k(num, ord)
		JOIN pg_catalog.pg_attribute r ON r.attrelid = f.confrelid AND r.attnum = k.num ORDER BY k.ord)
FROM pg_catalog.pg_constraint f WHERE f.conrelid = $1 AND f.contype = 'f' AND f.confrelid <> f.conrelid`

// fillTables gives every empty table of the scratch schema a few rows, so
// that the next file meets tables as an install in use has them. A table
// is filled after the tables it references, unless they form a cycle. The
// filled tables, which had rows before the file, are not read again.
func fillTables(ctx context.Context, conn *pgx.Conn, after string, filled []uint32) error {
	rows, err := conn.Query(ctx, tablesSQL, schema, filled)
	if err != nil {
		return fmt.Errorf("migration check: listing tables: %w", err)
	}
	type table struct {
		OID     uint32
		Name    string
		Parents []uint32
	}
	pending, err := pgx.CollectRows(rows, pgx.RowToStructByPos[table])
	if err != nil {
		return fmt.Errorf("migration check: listing tables: %w", err)
	}
	waiting := func(oid uint32) bool { return slices.ContainsFunc(pending, func(t table) bool { return t.OID == oid }) }
	for len(pending) > 0 {
		i := slices.IndexFunc(pending, func(t table) bool { return !slices.ContainsFunc(t.Parents, waiting) })
		if i < 0 {
			i = 0 // a cycle of foreign keys: the first goes first
		}
		t := pending[i]
		pending = slices.Delete(pending, i, i+1)
		if err := fillTable(ctx, conn, t.OID, schema+"."+t.Name, after); err != nil {
			return err
		}
	}
	return nil
}

// fillTable gives a table sampleRows rows if it has none.
func fillTable(ctx context.Context, conn *pgx.Conn, oid uint32, qualified, after string) error {
	var empty bool
	if err := conn.QueryRow(ctx, "SELECT NOT EXISTS (SELECT FROM "+qualified+")").Scan(&empty); err != nil {
		return fmt.Errorf("migration check: reading %s: %w", qualified, err)
	}
	if !empty {
		return nil
	}
	insert, err := sampleInsert(ctx, conn, oid, qualified)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, insert); err != nil {
		return fmt.Errorf("migration check: after %s, table %s cannot be given sample rows (%w); the check applies each file to tables that hold rows, as on an install in use: "+
			"give the column the server names a default, or a type the check can make values of (numbers, text, dates and times, booleans, uuid, json, enums, arrays), or a CHECK that such values pass. The statement was: %s",
			after, qualified, err, insert)
	}
	return nil
}

// sampleInsert makes an INSERT of sampleRows rows into a table: a value of
// its type for each column without a default, and for the columns of a
// foreign key a row of the referenced table.
func sampleInsert(ctx context.Context, conn *pgx.Conn, table uint32, qualified string) (string, error) {
	rows, err := conn.Query(ctx, fillKeysSQL, table)
	if err != nil {
		return "", fmt.Errorf("migration check: reading the foreign keys of %s: %w", qualified, err)
	}
	type key struct {
		Cols    []int16
		Refs    string
		RefCols []string
	}
	keys, err := pgx.CollectRows(rows, pgx.RowToStructByPos[key])
	if err != nil {
		return "", fmt.Errorf("migration check: reading the foreign keys of %s: %w", qualified, err)
	}
	rows, err = conn.Query(ctx, fillColumnsSQL, table)
	if err != nil {
		return "", fmt.Errorf("migration check: reading the columns of %s: %w", qualified, err)
	}
	type col struct {
		Num                        int16
		Name, Type, Category, Base string
		NotNull                    bool
	}
	cols, err := pgx.CollectRows(rows, pgx.RowToStructByPos[col])
	if err != nil {
		return "", fmt.Errorf("migration check: reading the columns of %s: %w", qualified, err)
	}
	var names, values, joins []string
	for _, c := range cols {
		value := sampleValue(c.Category, c.Base, c.Type)
		for i, k := range keys {
			if j := slices.Index(k.Cols, c.Num); j >= 0 {
				value = fmt.Sprintf("k%d.%s", i, k.RefCols[j])
			}
		}
		if value == "NULL" && !c.NotNull {
			continue
		}
		names = append(names, c.Name)
		values = append(values, value)
	}
	for i, k := range keys {
		// Row i of the referenced table, round robin; NULL when it is empty.
		joins = append(joins, fmt.Sprintf("LEFT JOIN LATERAL (SELECT %[2]s FROM %[3]s ORDER BY %[2]s OFFSET (g.i - 1) %% GREATEST((SELECT count(*) FROM %[3]s), 1) LIMIT 1) k%[1]d ON true",
			i, strings.Join(k.RefCols, ", "), k.Refs))
	}
	if len(names) == 0 {
		return fmt.Sprintf("INSERT INTO %s SELECT FROM pg_catalog.generate_series(1, %d)", qualified, sampleRows), nil
	}
	return fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM pg_catalog.generate_series(1, %d) AS g(i) %s",
		qualified, strings.Join(names, ", "), strings.Join(values, ", "), sampleRows, strings.Join(joins, " ")), nil
}

// sampleValue is an expression of row number g.i giving a value of type typ
// (of category and base type name), distinct per row where the type allows.
func sampleValue(category, base, typ string) string {
	switch category {
	case "N":
		return "(g.i)::" + typ
	case "S":
		return "('sample ' || g.i)::" + typ
	case "B":
		return "(g.i % 2 = 0)"
	case "D":
		return "(now() - g.i * interval '1 day')::" + typ
	case "T":
		return "(g.i * interval '1 minute')::" + typ
	case "E":
		return fmt.Sprintf("(pg_catalog.enum_range(NULL::%[1]s))[1 + (g.i - 1) %% pg_catalog.array_length(pg_catalog.enum_range(NULL::%[1]s), 1)]", typ)
	case "A":
		return "'{}'::" + typ
	case "R":
		return "'empty'::" + typ
	case "I":
		return "('10.0.0.' || g.i)::" + typ
	}
	switch base {
	case "uuid":
		return "pg_catalog.md5(g.i::text)::" + typ
	case "json", "jsonb":
		return "'{}'::" + typ
	case "bytea":
		return "pg_catalog.convert_to(g.i::text, 'UTF8')::" + typ
	}
	return "NULL"
}
