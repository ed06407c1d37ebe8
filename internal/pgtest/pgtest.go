// Package pgtest gives every test a fresh PostgreSQL database of its own, dropped when the test ends.
//
// The databases live on one server per test binary, found in this order:
//
//  1. TEST_DATABASE_URL, a server you point at; pgtest creates and drops only databases named pgtest_*
//     there, and keeps its templates (pgtest_tpl_*) for the next run;
//  2. a throwaway server started from the PostgreSQL binaries on this machine (package pgtemp: PGTEMP_BIN,
//     PATH, the usual install locations), stopped when the tests end;
//  3. a postgres container, when a Docker daemon answers.
//
// When there is none, a test that needs a database fails under CI=true and is skipped otherwise, with a
// message that says how to provide one. A package that uses pgtest needs a TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// A database is a clone of a template database, which costs tens of milliseconds; TemplateDSN builds a
// template once (for example by running migrations) and clones it for every test.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib/internal/pgtemp"
)

// mainCalled records that TestMain calls Main, which stops the server.
var mainCalled atomic.Bool

// Main runs the tests, then stops the server this test binary started (a pgtemp server or a Docker
// container; a TEST_DATABASE_URL server is left running). Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	mainCalled.Store(true)
	code := m.Run()
	if err := closeBackend(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: stopping the test server:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// DSN creates an empty database for this test and returns its connection string, as a user who owns
// it. The database is dropped when the test ends, its sessions ended first. Safe with t.Parallel.
func DSN(t testing.TB) string {
	t.Helper()
	return database(t, "empty", nil)
}

// TemplateDSN is DSN for a database that starts as a copy of a template: setup prepares the template
// once per key (it gets the template's own DSN and must close its connections before it returns) and
// every call clones it. The template is kept on the server, so use a key that changes whenever setup's
// result would, such as a hash of the migration files. Concurrent test binaries on one server build a
// key's template once between them.
func TemplateDSN(t testing.TB, key string, setup SetupFunc) string {
	t.Helper()
	if key == "" || setup == nil {
		t.Fatal("pgtest: TemplateDSN needs a key and a setup function; use DSN for an empty database")
	}
	return database(t, "setup "+key, setup)
}

// AdminDSN returns the connection string of the server's maintenance database as the user pgtest
// creates databases with (a superuser, except on a TEST_DATABASE_URL server that says otherwise), for
// tests that create roles or look at the whole server. Clean up whatever you create there.
func AdminDSN(t testing.TB) string {
	t.Helper()
	return server(t).adminDSN
}

// Pool opens a pool on dsn, changed by opts before it connects, and closes it when the test ends.
func Pool(t testing.TB, dsn string, opts ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal("pgtest: Pool: not a valid connection string") // pgx's error quotes the DSN, password included
	}
	for _, opt := range opts {
		opt(cfg)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("pgtest: Pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Restartable starts a server for this test alone, which it may restart (Restart), crash (Kill, or a
// killed backend) and restart again to see how clients survive; it returns the server and the DSN of
// its database postgres, and stops it when the test ends. Its commits are durable
// (pgtemp.WithDurableCommits): what it acknowledged is there after the crash. It needs the PostgreSQL
// binaries on this machine (a TEST_DATABASE_URL or Docker server cannot be restarted from a test):
// without them the test fails under CI=true and is skipped otherwise.
func Restartable(t testing.TB) (*pgtemp.Server, string) {
	t.Helper()
	srv := ownServer(t, "restarts its server", func() (*pgtemp.Server, error) {
		return pgtemp.Start(t.Context(), pgtemp.WithDurableCommits())
	})
	return srv, srv.DSN()
}

// Standby starts a primary server for this test alone and a hot standby of it, for tests of replication
// and failover: the standby replays what the primary writes and refuses writes itself (SQLSTATE 25006)
// until it is promoted (standby.Promote), typically after the primary is killed (primary.Kill). Reach
// whichever of the two takes writes with [MultiHostDSN] and target_session_attrs=read-write. Both are
// stopped, and their directories removed, when the test ends. Their commits are durable
// (pgtemp.WithDurableCommits): a crash loses only what the standby had not yet received.
//
// It needs the PostgreSQL server binaries (15 or later) on this machine: without them the test fails
// under CI=true and is skipped otherwise. The standby costs about half a second more than a server.
func Standby(t testing.TB) (primary, standby *pgtemp.Server) {
	t.Helper()
	const purpose = "runs a primary and a hot standby"
	primary = ownServer(t, purpose, func() (*pgtemp.Server, error) {
		return pgtemp.Start(t.Context(), pgtemp.WithDurableCommits())
	})
	standby = ownServer(t, purpose, func() (*pgtemp.Server, error) { return primary.StartStandby(t.Context()) })
	return primary, standby
}

// ownServer starts a server for t alone and stops it when t ends; without the binaries it needs, the
// test fails under CI and is skipped elsewhere.
func ownServer(t testing.TB, purpose string, start func() (*pgtemp.Server, error)) *pgtemp.Server {
	t.Helper()
	srv, err := start()
	if errors.Is(err, pgtemp.ErrNoBinaries) {
		unavailable(t, "pgtest: this test "+purpose+", which needs the PostgreSQL server binaries on this machine: "+
			err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Error(err)
		}
	})
	return srv
}

// database clones the template for key into a database for t and drops it when t ends.
func database(t testing.TB, key string, setup SetupFunc) string {
	t.Helper()
	b := server(t)
	template, err := b.template(key, setup)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	name, err := b.createDatabase(ctx, t.Name(), template)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
		defer cancel()
		if err := b.drop(ctx, b.admin, name); err != nil {
			t.Error(err)
		}
	})
	return ConnDSN(b.adminDSN, name)
}

// server returns this binary's backend, or ends the test when there is none.
func server(t testing.TB) *backend {
	t.Helper()
	b, err := current()
	if u := (*unavailableError)(nil); errors.As(err, &u) {
		unavailable(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	b.noteOnce.Do(func() {
		if b.note != "" {
			t.Log(b.note)
		}
		if b.stop != nil && !mainCalled.Load() {
			t.Log("pgtest: TestMain does not call pgtest.Main, so the test server outlives the tests until the " +
				"process exits: add func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }")
		}
	})
	return b
}

// unavailable fails the test under CI (a CI run must not pass without its database tests) and skips it
// elsewhere, saying why either way.
func unavailable(t testing.TB, msg string) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Role creates a login role for this test, with the password "pw", and drops it (and what it owns) when the
// test ends. Roles belong to the server, not to a database, so its name is dsn's database name and suffix.
// It returns the role's name and dsn with that role as the user.
func Role(t testing.TB, dsn, suffix string) (role, roleDSN string) {
	t.Helper()
	admin := Pool(t, dsn)
	var db string
	if err := admin.QueryRow(t.Context(), "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	role = db + "_" + suffix
	quoted := pgx.Identifier{role}.Sanitize()
	if _, err := admin.Exec(t.Context(), "CREATE ROLE "+quoted+" LOGIN PASSWORD 'pw'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
		defer cancel()
		for _, sql := range []string{"DROP OWNED BY " + quoted + " CASCADE", "DROP ROLE IF EXISTS " + quoted} {
			if _, err := admin.Exec(ctx, sql); err != nil {
				t.Errorf("pgtest: Role: %s: %v", sql, err)
			}
		}
	})
	return role, SetParam(SetParam(dsn, "user", role), "password", "pw")
}
