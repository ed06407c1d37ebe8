// Package probe is what the template's tests of its machinery migrate and
// query in place of a library's domain: one table, three small migration
// files and two statements of their own. A library made from the template
// replaces its domain (its tables, migrations and methods), and the
// machinery's tests, which run on the probe, pass unedited.
package probe

import (
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"testing/fstest"

	"github.com/pgdual/mylib/internal/grants"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// Table is the probe's table, and Index the index its last file builds
// concurrently.
const (
	Table = "probe_items"
	Index = "probe_items_key"
)

// files are the probe's migrations: a table, then an ALTER of it, which
// waits for a lock on the table as a release's migration would, then a
// concurrent index build, which cannot run in a transaction.
var files = fstest.MapFS{
	"00001_items.sql": {Data: []byte(`-- +goose Up
CREATE TABLE {{tables.probe_items}} (
    id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text NOT NULL
);

-- +goose Down
DROP TABLE {{tables.probe_items}};
`)},
	"00002_items_note.sql": {Data: []byte(`-- +goose Up
ALTER TABLE {{tables.probe_items}} ADD COLUMN note text;

-- +goose Down
ALTER TABLE {{tables.probe_items}} DROP COLUMN note;
`)},
	"00003_items_key.sql": {Data: []byte(`-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS probe_items_key ON {{tables.probe_items}} (key);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS {{schema}}.probe_items_key;
`)},
}

// Files returns the probe's migration files, at the root of the file system.
func Files() fs.FS { return UpTo(int64(len(files))) }

// UpTo returns the probe's files numbered up to version: a schema migrated
// with them is behind by the rest.
func UpTo(version int64) fs.FS {
	out := fstest.MapFS{}
	for name, f := range files {
		if v, _ := strconv.ParseInt(strings.SplitN(name, "_", 2)[0], 10, 64); v <= version {
			out[name] = &fstest.MapFile{Data: f.Data}
		}
	}
	return out
}

// Names lists the probe's files in version order.
func Names() []string {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// The probe's statements: Insert adds a row of key $1 and returns its id,
// Count counts the rows of key $1.
var (
	Insert = sqltmpl.Must(`INSERT INTO {{tables.probe_items}} (key) VALUES ($1) RETURNING id`)
	Count  = sqltmpl.Must(`SELECT count(*) FROM {{tables.probe_items}} WHERE key = $1`)
)

// Privileges are what Insert and Count need at run time, as a library lists
// what its methods need for Grants.
var Privileges = []grants.Table{{Name: Table, Privileges: []string{"SELECT", "INSERT"}}}
