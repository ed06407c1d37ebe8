package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/migratetest"
	"github.com/pgdual/mylib/internal/pgtemp"
	"github.com/pgdual/mylib/internal/pgtest"
)

// asCommand makes the test binary run the command itself, so that tests see
// its real exit codes and output streams.
const asCommand = "MYLIB_TEST_RUN_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(asCommand) != "" {
		main()
	}
	os.Exit(pgtest.Main(m))
}

// result is what a run of the command printed and returned.
type result struct {
	code         int
	stdout, errs string
}

// runCommand runs the command with args, and DATABASE_URL set to env's value
// (none when empty).
func runCommand(t *testing.T, env string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), asCommand+"=1", "DATABASE_URL="+env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running the command: %v", err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), errs: stderr.String()}
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.errs)
}

func TestStatusMigrateStatus(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	watch := pgtest.Pool(t, dsn)

	files := migrationFiles(t)
	r := runCommand(t, dsn, "status", "-schema", "audit")
	require.Equal(t, exitPending, r.code, r)
	for _, f := range files {
		require.Regexp(t, fmt.Sprintf(`(?m)^\s+%d\s+%s\s+pending\s+-$`, versionOf(t, f), regexp.QuoteMeta(f)), r.stdout)
	}
	require.Empty(t, namespaces(t, watch, "audit"), "status creates nothing, not even the schema")

	r = runCommand(t, "", "migrate", "-dsn", dsn, "-schema", "audit")
	require.Equal(t, exitOK, r.code, r)
	want := ""
	for _, f := range files {
		want += "applied " + f + "\n"
	}
	require.Equal(t, want+"schema \"audit\" is up to date\n", r.stdout)
	migratetest.RequireMigratedOnce(t, watch, "audit", len(files))

	r = runCommand(t, dsn, "status", "-schema", "audit")
	require.Equal(t, exitOK, r.code, r)
	for _, f := range files {
		require.Regexp(t, fmt.Sprintf(`(?m)^\s+%d\s+%s\s+applied\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`, versionOf(t, f), regexp.QuoteMeta(f)), r.stdout)
	}

	r = runCommand(t, dsn, "migrate", "-schema", "audit")
	require.Equal(t, exitOK, r.code, r)
	require.Equal(t, "schema \"audit\" is up to date\n", r.stdout, "nothing applied twice")

	r = runCommand(t, dsn, "status", "-schema", "audit", "-json")
	require.Equal(t, exitOK, r.code, r)
	var report struct {
		Schema     string
		Migrations []mylib.MigrationStatus
		Refused    string
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &report), r.stdout)
	require.Equal(t, "audit", report.Schema)
	require.Len(t, report.Migrations, len(files))
	last := report.Migrations[len(files)-1]
	require.Equal(t, mylib.StateApplied, last.State)
	require.Equal(t, files[len(files)-1], last.File)
	require.False(t, last.AppliedAt.IsZero())
}

func TestStatus_DriftIsRefusedWithExit4NamingTheFile(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	require.Equal(t, exitOK, runCommand(t, dsn, "migrate", "-schema", "audit").code)
	files := migrationFiles(t)
	file := files[len(files)-1]
	_, err := pgtest.Pool(t, dsn).Exec(t.Context(), "UPDATE audit.mylib_goose_checksums SET checksum = 1 WHERE version_id = $1", versionOf(t, file))
	require.NoError(t, err)

	r := runCommand(t, dsn, "status", "-schema", "audit")
	require.Equal(t, exitRefused, r.code, r)
	require.Regexp(t, fmt.Sprintf(`(?m)^\s+%d\s+%s\s+changed\s+`, versionOf(t, file), regexp.QuoteMeta(file)), r.stdout)
	require.Contains(t, r.errs, file)
	require.Contains(t, r.errs, "never edit an applied migration")

	r = runCommand(t, dsn, "migrate", "-schema", "audit")
	require.Equal(t, exitError, r.code, "migrate refuses the drifted schema: %s", r)
	require.Contains(t, r.errs, "applied migration changed")
}

// The script, run with psql, leaves the schema exactly as New would: New then
// starts on its fast path, taking no lock (here another session holds it the
// whole time) and applying nothing.
func TestSQL_ScriptThroughPsqlThenNewMigratesNothing(t *testing.T) {
	t.Parallel()
	psql, err := pgtemp.Program("psql")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dsn := pgtest.DSN(t)
	r := runCommand(t, "", "sql", "-schema", "billing")
	require.Equal(t, exitOK, r.code, r)
	files := migrationFiles(t)
	require.Contains(t, r.stdout, fmt.Sprintf(`-- mylib: migrations of schema "billing" above version 0: versions %d to %d`, versionOf(t, files[0]), versionOf(t, files[len(files)-1])))
	script := t.TempDir() + "/billing.sql"
	require.NoError(t, os.WriteFile(script, []byte(r.stdout), 0o644))
	psqlCtx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(psqlCtx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", script).CombinedOutput()
	require.NoError(t, err, "psql:\n%s", out)

	watch := pgtest.Pool(t, dsn)
	migratetest.RequireMigratedOnce(t, watch, "billing", len(files))
	holder, err := watch.Begin(t.Context())
	require.NoError(t, err)
	defer holder.Rollback(context.Background())
	_, err = holder.Exec(t.Context(), "SELECT pg_advisory_xact_lock($1)", migratetest.LockKey(t, r.stdout))
	require.NoError(t, err)

	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("billing"), mylib.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err, "New starts while another session holds the migration lock: it does not take it")
	c.Close()
	require.NotContains(t, logs.String(), "applied migrations")
	migratetest.RequireMigratedOnce(t, watch, "billing", len(files))
	require.NoError(t, holder.Rollback(t.Context()))

	r = runCommand(t, dsn, "status", "-schema", "billing")
	require.Equal(t, exitOK, r.code, r)

	// Run again, the script refuses to apply a file twice and changes nothing.
	out, err = exec.CommandContext(psqlCtx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", script).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), fmt.Sprintf("%s (version %d) is already applied to schema billing", files[0], versionOf(t, files[0])))
	migratetest.RequireMigratedOnce(t, watch, "billing", len(files))

	latest := strconv.FormatInt(versionOf(t, files[len(files)-1]), 10)
	r = runCommand(t, "", "sql", "-schema", "billing", "-from", latest)
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stdout, "none; the latest file is version "+latest)
}

// The deploy recipe: the owner migrates and grants; the application runs as
// a role that can use the library's tables and change nothing else. It fails
// closed on a schema behind the code, and a later migration's new table is
// usable by it thanks to the default privileges.
func TestGrant_OwnerMigratesRuntimeRoleRuns(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	admin := pgtest.Pool(t, dsn)
	app, appDSN := pgtest.Role(t, dsn, "app")
	execSQL(t, admin, "CREATE SCHEMA audit; GRANT USAGE ON SCHEMA audit TO "+app)

	r := runCommand(t, appDSN, "migrate", "-schema", "audit")
	require.Equal(t, exitError, r.code, "the runtime role cannot migrate: %s", r)
	require.Contains(t, r.errs, "cannot migrate it")
	require.Contains(t, r.errs, "`mylib migrate -schema audit`")

	require.Equal(t, exitOK, runCommand(t, dsn, "migrate", "-schema", "audit").code)
	r = runCommand(t, dsn, "grant", "-schema", "audit", "-role", app)
	require.Equal(t, exitOK, r.code, r)
	stmts, err := mylib.Grants("audit", app)
	require.NoError(t, err)
	require.Equal(t, strings.Join(stmts, ";\n")+";\n", r.stdout)

	ctx := t.Context()
	c, err := mylib.New(ctx, mylib.WithDSN(appDSN), mylib.WithSchema("audit"))
	require.NoError(t, err, "the runtime role starts on the up-to-date schema")
	c.Close()
	appPool := pgtest.Pool(t, appDSN)
	_, err = appPool.Exec(ctx, "CREATE TABLE audit.sneaky (id int)")
	require.ErrorContains(t, err, "permission denied", "the runtime role cannot change the schema")
	_, err = appPool.Exec(ctx, "DROP TABLE audit.mylib_goose_checksums")
	require.ErrorContains(t, err, "must be owner")

	// A later release's migration, applied by the owner: its table is the
	// runtime role's to use, with no new grant.
	set, err := migrate.Load(migratetest.Module, laterRelease(t))
	require.NoError(t, err)
	_, err = set.Up(ctx, admin, "audit", migrate.Config{})
	require.NoError(t, err)
	_, err = appPool.Exec(ctx, "INSERT INTO audit.later_release (body) VALUES ('hello')")
	require.NoError(t, err, "default privileges cover a table a later migration creates")
	c, err = mylib.New(ctx, mylib.WithDSN(appDSN), mylib.WithSchema("audit"), mylib.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err, "this release's code starts on the newer schema")
	c.Close()

	r = runCommand(t, dsn, "grant", "-schema", "audit")
	require.Equal(t, exitUsage, r.code, r)
	require.Contains(t, r.errs, "-role is required")
}

// laterRelease is the library's migration files plus one more.
func laterRelease(t *testing.T) fstest.MapFS {
	files := fstest.MapFS{}
	names := migrationFiles(t)
	for _, name := range names {
		data, err := os.ReadFile("../../migrations/" + name)
		require.NoError(t, err)
		files[name] = &fstest.MapFile{Data: data}
	}
	later := fmt.Sprintf("%05d_later_release.sql", versionOf(t, names[len(names)-1])+1)
	files[later] = &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE {{tables.later_release}} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL);\n")}
	return files
}

// versionOf is a migration file's version, the number its name starts with.
func versionOf(t *testing.T, file string) int64 {
	t.Helper()
	digits, _, _ := strings.Cut(file, "_")
	v, err := strconv.ParseInt(digits, 10, 64)
	require.NoError(t, err, file)
	return v
}

// migrationFiles lists the library's migration files in version order.
func migrationFiles(t *testing.T) []string {
	t.Helper()
	names, err := filepath.Glob("../../migrations/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, names)
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	return names
}

func TestUsage_BadInputExits2(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"status", "-nope"}, "flag provided but not defined: -nope"},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"migrate"}, "no database: pass -dsn, or set DATABASE_URL"},
		{[]string{"sql", "-schema", "Bad-Name"}, "invalid schema name"},
		{[]string{"sql", "-from", "-1"}, "give 0 for a new schema"},
	} {
		r := runCommand(t, "", tc.args...)
		require.Equal(t, exitUsage, r.code, "%v: %s", tc.args, r)
		require.Contains(t, r.errs, tc.says, tc.args)
	}
	for _, args := range [][]string{{"-h"}, {"status", "-h"}, {"help"}} {
		r := runCommand(t, "postgres://u:secret-pw@localhost/db", args...)
		require.Equal(t, exitOK, r.code, "%v: %s", args, r)
		require.Contains(t, r.errs, "usage: "+progName)
		require.NotContains(t, r.errs, "secret-pw", "usage never prints $DATABASE_URL")
	}
}

func execSQL(t *testing.T, pool *pgxpool.Pool, sql string) {
	t.Helper()
	_, err := pool.Exec(t.Context(), sql)
	require.NoError(t, err, sql)
}

// namespaces lists which of names exist as schemas.
func namespaces(t *testing.T, pool *pgxpool.Pool, names ...string) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1)", names)
	require.NoError(t, err)
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return found
}

// The command alone, or the demo's old name, prints what to run and touches
// no database, not even the one $DATABASE_URL names.
func TestNoCommandAndDemo_TouchNoDatabase(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	before := pgtest.Catalog(t, dsn)
	for _, args := range [][]string{nil, {"demo"}, {"-v"}} {
		r := runCommand(t, dsn, args...)
		require.Equal(t, exitUsage, r.code, "%v: %s", args, r)
		require.Contains(t, r.errs, "go run ./examples/demo", args)
		require.Empty(t, r.stdout, args)
	}
	require.Empty(t, pgtest.CatalogChanges(before, pgtest.Catalog(t, dsn)))
}

// The command a deploy step installs links no test harness: no throwaway
// server, no process supervision, no Docker client.
func TestDeployCommand_CarriesNoTestServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-deps", ".").CombinedOutput()
	require.NoError(t, err, "go list -deps:\n%s", out)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/jackc/pgx/v5", "the dependency list is what go list printed")
	for _, dep := range deps {
		require.NotRegexp(t, `/internal/(pgtemp|pgtest|proc)$|dockertest`, dep)
	}
}
