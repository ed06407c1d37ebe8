package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// catalogDetails are what describes the objects a program may change in place, beside their
// existence: owners, privileges, options, columns, settings of the database.
const catalogDetails = `
SELECT 'schema ' || nspname || ' owner ' || nspowner::regrole || ' acl ' || coalesce(nspacl::text, '-') FROM pg_catalog.pg_namespace
UNION ALL SELECT 'relation ' || oid::regclass || ' kind ' || relkind::text || ' owner ' || relowner::regrole
	|| ' acl ' || coalesce(relacl::text, '-') || ' options ' || coalesce(reloptions::text, '-') FROM pg_catalog.pg_class
UNION ALL SELECT 'column ' || attrelid::regclass || '.' || attname || ' ' || pg_catalog.format_type(atttypid, atttypmod)
	|| ' not null ' || attnotnull || ' options ' || coalesce(attoptions::text, '-') || ' acl ' || coalesce(attacl::text, '-')
	FROM pg_catalog.pg_attribute WHERE attnum > 0
UNION ALL SELECT 'default privileges of ' || defaclrole::regrole || ' in ' || coalesce(defaclnamespace::regnamespace::text, '-')
	|| ' on ' || defaclobjtype::text || ' ' || defaclacl::text FROM pg_catalog.pg_default_acl
UNION ALL SELECT 'settings of ' || CASE setrole WHEN 0 THEN 'every role' ELSE setrole::regrole::text END || ' ' || setconfig::text
	FROM pg_catalog.pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
UNION ALL SELECT 'comment on ' || pg_catalog.pg_describe_object(classoid, objoid, objsubid) || ': ' || description FROM pg_catalog.pg_description`

// Catalog lists every object of the database that dsn names, with its owner, privileges and options
// where it has them, sorted: a test that must leave a database exactly as it found it compares the
// lists before and after. Objects of the whole server (roles, databases, tablespaces) are left out,
// since other tests change them meanwhile; so are statistics and other counters.
func Catalog(t testing.TB, dsn string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("pgtest: Catalog: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	// Every catalog of the database whose rows are objects with an oid: each object by its
	// description ("table s.t", "function f(integer)", ...), whatever the server's version holds.
	var objects string
	err = conn.QueryRow(ctx, `SELECT string_agg(format('SELECT pg_catalog.pg_describe_object(%L::regclass, oid, 0) FROM pg_catalog.%I',
		'pg_catalog.' || c.relname, c.relname), ' UNION ALL ' ORDER BY c.relname)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'oid'
WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' AND NOT c.relisshared`).Scan(&objects)
	if err != nil {
		t.Fatalf("pgtest: Catalog: %v", err)
	}
	rows, _ := conn.Query(ctx, "SELECT x FROM ("+objects+" UNION ALL "+catalogDetails+") AS catalog(x) ORDER BY 1")
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("pgtest: Catalog: %v", err)
	}
	return list
}

// CatalogChanges lists what differs between two sorted lists of Catalog: "+ object" for what after
// has and before has not, "- object" for the reverse. It is empty when nothing changed.
func CatalogChanges(before, after []string) []string {
	var changes []string
	i, j := 0, 0
	for i < len(before) || j < len(after) {
		switch {
		case j == len(after) || i < len(before) && before[i] < after[j]:
			changes = append(changes, "- "+before[i])
			i++
		case i == len(before) || after[j] < before[i]:
			changes = append(changes, "+ "+after[j])
			j++
		default:
			i, j = i+1, j+1
		}
	}
	return changes
}
