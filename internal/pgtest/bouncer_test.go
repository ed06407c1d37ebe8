package pgtest

import (
	"context"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestBouncer_PoolsTransactionsOnFewServerConnections(t *testing.T) {
	t.Parallel()
	dsn := SetParam(Bouncer(t, DSN(t), BouncerPoolSize(1)), "default_query_exec_mode", "exec")
	a, b := clientConn(t, dsn), clientConn(t, dsn)

	pid := func(c *pgx.Conn) (pid int) {
		require.NoError(t, c.QueryRow(t.Context(), "SELECT pg_backend_pid()").Scan(&pid))
		return pid
	}
	require.Equal(t, pid(a), pid(b), "two clients, one server connection: both should reach the same backend")

	var db string
	require.NoError(t, a.QueryRow(t.Context(), "SELECT current_database()").Scan(&db))
	require.Regexp(t, "^"+prefix, db, "the DSN should reach the test's own database")
}

// TestBouncer_PgxQueryModes is why a DSN behind PgBouncer in transaction mode needs
// default_query_exec_mode before PgBouncer 1.21, or max_prepared_statements from 1.21: pgx's default
// prepares named statements on whichever server connection a client was lent, and another client lent
// the same one collides with them.
func TestBouncer_PgxQueryModes(t *testing.T) {
	t.Parallel()
	tracking := slices.Compare(bouncerVersion(t), []int{1, 21}) >= 0 // PgBouncer tracks protocol-level prepared statements
	tests := []struct {
		name     string
		mode     string // default_query_exec_mode; "" for pgx's default, cache_statement
		prepared string // max_prepared_statements, from PgBouncer 1.21
		wantErr  string
	}{
		{name: "pgx default", wantErr: "SQLSTATE 42P05"}, // prepared statement "stmtcache_..." already exists
		{name: "exec", mode: "exec"},
		{name: "simple_protocol", mode: "simple_protocol"},
		{name: "pgx default, PgBouncer tracking prepared statements", prepared: "100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := []BouncerOption{BouncerPoolSize(1)}
			switch {
			case tt.prepared != "" && !tracking:
				t.Skip("max_prepared_statements needs PgBouncer 1.21 or later")
			case tt.prepared != "":
				opts = append(opts, BouncerSetting("max_prepared_statements", tt.prepared))
			case tracking:
				opts = append(opts, BouncerSetting("max_prepared_statements", "0")) // as before 1.21
			}
			dsn := Bouncer(t, DSN(t), opts...)
			if tt.mode != "" {
				dsn = SetParam(dsn, "default_query_exec_mode", tt.mode)
			}
			// Two clients, one server connection: the second runs the statement the first prepared.
			var err error
			for _, c := range []*pgx.Conn{clientConn(t, dsn), clientConn(t, dsn)} {
				var n int
				if err = c.QueryRow(t.Context(), "SELECT $1::int + 1", 41).Scan(&n); err != nil {
					break
				}
				require.Equal(t, 42, n)
			}
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

// bouncerVersion runs pgbouncer --version: {1, 18} for "PgBouncer 1.18.0".
func bouncerVersion(t *testing.T) []int {
	t.Helper()
	bin, err := findBouncer()
	if err != nil {
		unavailable(t, err.Error())
	}
	out, err := exec.Command(bin, "--version").Output()
	require.NoError(t, err)
	m := regexp.MustCompile(`PgBouncer (\d+)\.(\d+)`).FindSubmatch(out)
	require.NotNil(t, m, "pgbouncer --version said %q", out)
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	return []int{major, minor}
}

func TestBouncer_NoProgramSaysHowToFix(t *testing.T) {
	t.Setenv("PGBOUNCER_BIN", "/nonexistent/pgbouncer")
	_, err := findBouncer()
	require.ErrorContains(t, err, "PGBOUNCER_BIN=/nonexistent/pgbouncer")
	require.ErrorContains(t, err, "unset it to search PATH")

	t.Setenv("PGBOUNCER_BIN", "")
	t.Setenv("PATH", t.TempDir())
	saved := bouncerSearch
	bouncerSearch = []string{"/nonexistent/pgbouncer"}
	t.Cleanup(func() { bouncerSearch = saved })
	_, err = findBouncer()
	require.ErrorContains(t, err, "no pgbouncer program was found")
	require.ErrorContains(t, err, "apt-get install pgbouncer")
	require.ErrorContains(t, err, "set PGBOUNCER_BIN")
}

func TestBouncerDSN_ChangesOnlyWhereToConnect(t *testing.T) {
	tests := []struct{ name, in string }{
		{"url over tcp", "postgres://u:secret@db.example:5433/app?sslmode=require&application_name=x"},
		{"url over a unix socket", "postgres://postgres@/app?host=/tmp/pgtemp-1/sock&port=5432&sslmode=disable"},
		{"keywords", "host=db.example port=5433 dbname=app user=u password='a b' sslmode=require"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bouncerDSN(tt.in, "/tmp/pgbouncer-1", 6432)
			before, err := pgconn.ParseConfig(tt.in)
			require.NoError(t, err)
			after, err := pgconn.ParseConfig(got)
			require.NoError(t, err)
			require.Equal(t, "/tmp/pgbouncer-1", after.Host)
			require.EqualValues(t, 6432, after.Port)
			require.Nil(t, after.TLSConfig)
			require.Equal(t, before.Database, after.Database)
			require.Equal(t, before.User, after.User)
			require.Equal(t, before.Password, after.Password)
			require.Equal(t, before.RuntimeParams, after.RuntimeParams)
		})
	}
}

func TestSetParam_URLsAndKeywords(t *testing.T) {
	const options = "-c idle_in_transaction_session_timeout=200ms -c search_path=a+b"
	for _, dsn := range []string{
		"postgres://u@h/app?sslmode=disable&options=old",
		"host=h dbname=app user=u options=old",
	} {
		got := SetParam(SetParam(dsn, "options", options), "default_query_exec_mode", "exec")
		cfg, err := pgx.ParseConfig(got)
		require.NoError(t, err, got)
		require.Equal(t, options, cfg.RuntimeParams["options"], got)
		require.Equal(t, pgx.QueryExecModeExec, cfg.DefaultQueryExecMode, got)
		require.Equal(t, "app", cfg.Database)
	}
}

func clientConn(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}
