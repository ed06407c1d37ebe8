package migrationcheck

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// module is the library whose allowances the tests write.
const module = "mylib"

// released is the first file of every case: the tables an install has,
// with rows in them by the time the files under test run.
const released = `-- +goose Up
CREATE TABLE {{tables.parents}} (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);
CREATE TABLE {{tables.items}} (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id bigint NOT NULL,
    note      text,
    size      integer NOT NULL,
    code      varchar(10) NOT NULL
);

-- +goose Down
DROP TABLE {{tables.items}};
DROP TABLE {{tables.parents}};
`

// check runs Check on released followed by files, numbered from 00002, each
// given its Up section: line 1 is "-- +goose Up", the section starts on line 2.
func check(t *testing.T, files ...string) error {
	t.Helper()
	fsys := fstest.MapFS{"migrations/00001_released.sql": {Data: []byte(released)}}
	for i, f := range files {
		fsys[fmt.Sprintf("migrations/%05d_change.sql", i+2)] = &fstest.MapFile{Data: []byte("-- +goose Up\n" + f)}
	}
	return Check(t.Context(), pgtest.DSN(t), Files{FS: fsys, Dir: "migrations", Module: module})
}

// found lists a refusal's problems as "version:line rule" (rule "-" for a
// bad allowance or a failed file); nil for no error.
func found(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var r *Refusal
	require.True(t, errors.As(err, &r), "not a refusal: %v", err)
	var out []string
	for _, p := range r.Problems {
		rule := string(p.Rule)
		if rule == "" {
			rule = "-"
		}
		out = append(out, fmt.Sprintf("%s:%d %s", path.Base(p.File)[:5], p.Line, rule))
	}
	return out
}

const noTx = "-- +goose NO TRANSACTION\n"

// backfill fills a new column in batches, each committed on its own: a DO
// block may commit when it runs outside a transaction block.
const backfill = `-- +goose StatementBegin
DO $$
DECLARE
    last bigint := 0;
    top  bigint := (SELECT max(id) FROM {{tables.items}});
BEGIN
    WHILE last < top LOOP
        UPDATE {{tables.items}} SET label = code WHERE id > last AND id <= last + 1000;
        last := last + 1000;
        COMMIT;
    END LOOP;
END $$;
-- +goose StatementEnd
`

// Each rule refused, and the safe way to write the same change passes.
func TestCheck_EachRuleRefusesAndTheSafeWayPasses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		files []string
		want  []string // nil: passes
	}{
		// index
		{"index built in the file's transaction", []string{
			"CREATE INDEX items_size ON {{tables.items}} (size);\n"},
			[]string{"00002:2 index"}},
		{"unique constraint, which builds an index", []string{
			"ALTER TABLE {{tables.items}} ADD CONSTRAINT items_code_key UNIQUE (code);\n"},
			[]string{"00002:2 index"}},
		{"index built without CONCURRENTLY in a NO TRANSACTION file", []string{
			noTx + "CREATE INDEX items_size ON {{tables.items}} (size);\n"},
			[]string{"00002:3 index"}},
		{"index rebuilt", []string{
			"REINDEX TABLE {{tables.items}};\n"},
			[]string{"00002:2 index"}},
		{"a comment says CONCURRENTLY, the server does not", []string{
			"CREATE INDEX /* CONCURRENTLY */ items_size\n    ON {{tables.items}} (size); -- CONCURRENTLY\n"},
			[]string{"00002:2 index"}},
		{"safe: index built concurrently in a NO TRANSACTION file", []string{
			noTx + "CREATE INDEX CONCURRENTLY items_size ON {{tables.items}} (size);\n"},
			nil},
		{"safe: unique index built concurrently, then the constraint using it", []string{
			noTx + "CREATE UNIQUE INDEX CONCURRENTLY items_code_key ON {{tables.items}} (code);\n",
			"ALTER TABLE {{tables.items}} ADD CONSTRAINT items_code_key UNIQUE USING INDEX items_code_key;\n"},
			nil},
		{"safe: index rebuilt concurrently", []string{
			noTx + "REINDEX TABLE CONCURRENTLY {{tables.items}};\n"},
			nil},
		{"safe: index on a table made in the same file", []string{
			"CREATE TABLE {{tables.tags}} (id bigint PRIMARY KEY, name text NOT NULL);\n" +
				"INSERT INTO {{tables.tags}} SELECT id, 'tag ' || id FROM {{tables.items}};\n" +
				"CREATE INDEX tags_name ON {{tables.tags}} (name);\n"},
			nil},

		// rewrite
		{"column type changed", []string{
			"ALTER TABLE {{tables.items}} ALTER COLUMN size TYPE bigint;\n"},
			[]string{"00002:2 rewrite"}},
		{"column added with a volatile default", []string{
			"ALTER TABLE {{tables.items}} ADD COLUMN seen_at timestamptz DEFAULT clock_timestamp();\n"},
			[]string{"00002:2 rewrite"}},
		{"VACUUM FULL, which cannot run in a transaction", []string{
			noTx + "VACUUM FULL {{tables.items}};\n"},
			[]string{"00002:3 rewrite"}},
		{"safe: columns added with constant defaults", []string{
			"ALTER TABLE {{tables.items}} ADD COLUMN flag boolean NOT NULL DEFAULT false;\n" +
				"ALTER TABLE {{tables.items}} ADD COLUMN added_at timestamptz NOT NULL DEFAULT now();\n"},
			nil},
		{"safe: a volatile default for new rows only", []string{
			"ALTER TABLE {{tables.items}} ADD COLUMN seen_at timestamptz;\n" +
				"ALTER TABLE {{tables.items}} ALTER COLUMN seen_at SET DEFAULT clock_timestamp();\n"},
			nil},
		{"safe: a type change that needs no rewrite", []string{
			"ALTER TABLE {{tables.items}} ALTER COLUMN code TYPE varchar(20);\n"},
			nil},

		// validate
		{"SET NOT NULL", []string{
			"ALTER TABLE {{tables.items}} ALTER COLUMN note SET NOT NULL;\n"},
			[]string{"00002:2 validate"}},
		{"foreign key without NOT VALID", []string{
			"ALTER TABLE {{tables.items}} ADD CONSTRAINT items_parent FOREIGN KEY (parent_id) REFERENCES {{tables.parents}} (id);\n"},
			[]string{"00002:2 validate"}},
		{"check without NOT VALID", []string{
			"ALTER TABLE {{tables.items}} ADD CONSTRAINT items_size CHECK (size > 0);\n"},
			[]string{"00002:2 validate"}},
		{"safe: foreign key NOT VALID, validated in a later file", []string{
			"ALTER TABLE {{tables.items}} ADD CONSTRAINT items_parent FOREIGN KEY (parent_id) REFERENCES {{tables.parents}} (id) NOT VALID;\n",
			"ALTER TABLE {{tables.items}} VALIDATE CONSTRAINT items_parent;\n"},
			nil},
		{"safe: check NOT VALID, validated in the same NO TRANSACTION file", []string{
			noTx + "ALTER TABLE {{tables.items}} ADD CONSTRAINT items_size CHECK (size > 0) NOT VALID;\n" +
				"ALTER TABLE {{tables.items}} VALIDATE CONSTRAINT items_size;\n"},
			nil},
		{"safe: NOT NULL through a validated check", []string{
			"ALTER TABLE {{tables.items}} ADD CONSTRAINT items_note_not_null CHECK (note IS NOT NULL) NOT VALID;\n",
			"ALTER TABLE {{tables.items}} VALIDATE CONSTRAINT items_note_not_null;\n" +
				"ALTER TABLE {{tables.items}} ALTER COLUMN note SET NOT NULL;\n" +
				"ALTER TABLE {{tables.items}} DROP CONSTRAINT items_note_not_null;\n"},
			nil},
		{"safe: foreign key from a new table", []string{
			"CREATE TABLE {{tables.labels}} (item_id bigint NOT NULL REFERENCES {{tables.items}} (id), label text NOT NULL);\n"},
			nil},

		// held-lock
		{"backfill in the transaction that added the column", []string{
			"ALTER TABLE {{tables.items}} ADD COLUMN weight integer;\n" +
				"UPDATE {{tables.items}} SET weight = size;\n"},
			[]string{"00002:3 held-lock"}},
		{"validated in the transaction that added it NOT VALID", []string{
			"ALTER TABLE {{tables.items}} ADD CONSTRAINT items_size CHECK (size > 0) NOT VALID;\n" +
				"ALTER TABLE {{tables.items}} VALIDATE CONSTRAINT items_size;\n"},
			[]string{"00002:3 held-lock"}},
		{"safe: expand, backfill in batches, contract", []string{
			"ALTER TABLE {{tables.items}} ADD COLUMN label text;\n",
			noTx + backfill,
			"-- mylib:allow drop: the release of 00003 stopped reading and writing items.code\n" +
				"ALTER TABLE {{tables.items}} DROP COLUMN code;\n"},
			nil},

		// rename
		{"column renamed", []string{
			"ALTER TABLE {{tables.items}} RENAME COLUMN note TO remark;\n"},
			[]string{"00002:2 rename"}},
		{"table renamed", []string{
			"ALTER TABLE {{tables.items}} RENAME TO things;\n"},
			[]string{"00002:2 rename"}},
		{"table moved to another schema", []string{
			"ALTER TABLE {{tables.items}} SET SCHEMA public;\n"},
			[]string{"00002:2 rename"}},
		{"safe: table renamed, its old name kept as a view", []string{
			"ALTER TABLE {{tables.items}} RENAME TO things;\n" +
				"CREATE VIEW {{tables.items}} AS SELECT * FROM {{tables.things}};\n"},
			nil},
		{"safe: a table made in the same file renamed", []string{
			"CREATE TABLE {{tables.draft}} (id bigint PRIMARY KEY);\n" +
				"ALTER TABLE {{tables.draft}} RENAME TO drafts;\n"},
			nil},

		// drop
		{"column dropped", []string{
			"ALTER TABLE {{tables.items}} DROP COLUMN note;\n"},
			[]string{"00002:2 drop"}},
		{"table dropped", []string{
			"DROP TABLE {{tables.items}};\n"},
			[]string{"00002:2 drop"}},
		{"safe: a table made in the same file dropped", []string{
			"CREATE TABLE {{tables.scratch}} (id bigint PRIMARY KEY);\n" +
				"DROP TABLE {{tables.scratch}};\n"},
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, found(t, check(t, tc.files...)))
		})
	}
}

// An allowance allows one rule for the statement right below it, and only
// with a reason; neither a comment elsewhere nor a string literal allows.
func TestCheck_Allowances(t *testing.T) {
	t.Parallel()
	const index = "CREATE INDEX items_size ON {{tables.items}} (size);\n"
	for _, tc := range []struct {
		name string
		file string
		want []string
	}{
		{"with a reason", "-- A comment of the file's own.\n-- mylib:allow index: items is empty in every install\n\n" + index,
			nil},
		{"two rules, one line each", "-- mylib:allow rewrite: items is empty in every install\n-- mylib:allow index: and so is its index\n" +
			"ALTER TABLE {{tables.items}} ALTER COLUMN size TYPE bigint, ADD CONSTRAINT items_code_key UNIQUE (code);\n",
			nil},
		{"without a reason", "-- mylib:allow index\n" + index,
			[]string{"00002:3 index", "00002:2 -"}},
		{"with an empty reason", "-- mylib:allow index:  \n" + index,
			[]string{"00002:3 index", "00002:2 -"}},
		{"for an unknown rule", "-- mylib:allow indexes: items is empty\n" + index,
			[]string{"00002:3 index", "00002:2 -"}},
		{"for another rule", "-- mylib:allow rewrite: items is empty\n" + index,
			[]string{"00002:3 index", "00002:2 -"}},
		{"above another statement", "-- mylib:allow index: items is empty\nALTER TABLE {{tables.items}} ADD COLUMN weight integer;\n" + index,
			[]string{"00002:2 -", "00002:4 index"}},
		{"inside a string literal", "COMMENT ON TABLE {{tables.items}} IS '\n-- mylib:allow index: items is empty\n';\n" + index,
			[]string{"00002:5 index"}},
		{"after the statement on its line", strings.TrimSuffix(index, "\n") + " -- mylib:allow index: items is empty\n",
			[]string{"00002:2 index"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, found(t, check(t, tc.file)))
		})
	}
}

// A refusal is a lesson: the file and line, the statement, the rule, why it
// blocks, the safe way and the allowance that would let it pass.
func TestCheck_RefusalSaysWhereWhyAndTheSafeWay(t *testing.T) {
	t.Parallel()
	err := check(t, "-- An index for lookups by size.\nCREATE INDEX items_size\n    ON {{tables.items}} (size);\n")
	var r *Refusal
	require.ErrorAs(t, err, &r)
	require.Len(t, r.Problems, 1)
	p := r.Problems[0]
	require.Equal(t, Problem{File: "migrations/00002_change.sql", Line: 3, Statement: "CREATE INDEX items_size", Rule: RuleIndex,
		What:  "builds index items_size on items, a table that existed before this file, inside a transaction (without CONCURRENTLY)",
		Why:   "the build reads every row of items while the transaction holds a SHARE lock on it (minutes on a big table): inserts, updates and deletes on items wait (reads go on) until the file's transaction commits.",
		Safe:  safeIndex,
		Allow: "-- mylib:allow index: <why no install can be blocked>"}, p)
	for _, want := range []string{"migrations/00002_change.sql:3: CREATE INDEX items_size\n", "rule index:", "Why:", "Safe way:", "CREATE INDEX CONCURRENTLY", "-- +goose NO TRANSACTION", "-- mylib:allow index:"} {
		require.Contains(t, err.Error(), want)
	}
}

// A file that fails on tables holding rows fails an install in use: the check
// says so, with the server's message, and checks no file after it.
func TestCheck_AFileThatFailsOnRowsIsRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file, says string
	}{
		{"NOT NULL column without a default", "ALTER TABLE {{tables.items}} ADD COLUMN kind text NOT NULL;\n", "contains null values"},
		{"concurrent index in a transaction", "CREATE INDEX CONCURRENTLY items_size ON {{tables.items}} (size);\n", "cannot run inside a transaction block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := check(t, tc.file, "DROP TABLE {{tables.items}};\n")
			require.Equal(t, []string{"00002:2 -"}, found(t, err))
			require.ErrorContains(t, err, "migrations/00002_change.sql:2: ")
			require.ErrorContains(t, err, tc.says)
		})
	}
}

// Every table holds rows before each file, those of later files too, their
// foreign keys pointing at rows that exist.
func TestCheck_TablesOfEveryFileHoldRows(t *testing.T) {
	t.Parallel()
	err := check(t,
		"CREATE TYPE {{schema}}.mood AS ENUM ('calm', 'busy');\n"+
			"CREATE TABLE {{tables.tags}} (id uuid PRIMARY KEY, item_id bigint NOT NULL REFERENCES {{tables.items}} (id), mood {{schema}}.mood NOT NULL,\n"+
			"    at timestamptz NOT NULL, span interval NOT NULL, body jsonb NOT NULL, flags boolean[] NOT NULL, amount numeric(8,2) NOT NULL);\n",
		"ALTER TABLE {{tables.tags}} ADD COLUMN kind text NOT NULL;\n")
	require.Equal(t, []string{"00003:2 -"}, found(t, err))
	require.ErrorContains(t, err, "contains null values")
}

// PostgreSQL 18 records NOT NULL in pg_constraint and can add it NOT VALID:
// validating it later passes, setting it at once does not.
func TestCheck_NotNullConstraintsOfPostgres18(t *testing.T) {
	t.Parallel()
	var version int
	require.NoError(t, pgtest.Pool(t, pgtest.DSN(t)).QueryRow(t.Context(), "SELECT current_setting('server_version_num')::int").Scan(&version))
	if version < 180000 {
		t.Skipf("server_version_num %d: NOT NULL ... NOT VALID needs PostgreSQL 18", version)
	}
	require.Nil(t, found(t, check(t,
		"ALTER TABLE {{tables.items}} ADD CONSTRAINT items_note_not_null NOT NULL note NOT VALID;\n",
		"ALTER TABLE {{tables.items}} VALIDATE CONSTRAINT items_note_not_null;\n")))
	require.Equal(t, []string{"00002:2 validate"}, found(t, check(t,
		"ALTER TABLE {{tables.items}} ADD CONSTRAINT items_note_not_null NOT NULL note;\n")))
}
