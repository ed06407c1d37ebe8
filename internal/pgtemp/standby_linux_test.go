package pgtemp

import (
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStartStandby_ReplicatesThePrimaryAndRefusesWrites(t *testing.T) {
	primary := start(t, WithSetting("work_mem", "5MB"))
	began := time.Now()
	standby := startStandby(t, primary)
	t.Logf("StartStandby took %v", time.Since(began))

	require.NotEqual(t, primary.Dir(), standby.Dir())
	require.NotEqual(t, primary.SocketDir(), standby.SocketDir())
	var inRecovery bool
	var workMem string
	require.NoError(t, connect(t, standby.DSN()).QueryRow(t.Context(),
		"SELECT pg_is_in_recovery(), current_setting('work_mem')").Scan(&inRecovery, &workMem))
	require.True(t, inRecovery, "the standby should be in recovery")
	require.Equal(t, "5MB", workMem, "a standby starts with its primary's options")

	_, err := connect(t, primary.DSN()).Exec(t.Context(), "CREATE TABLE replicated (v text); INSERT INTO replicated VALUES ('from the primary')")
	require.NoError(t, err)
	requireReplicated(t, standby, "replicated", "from the primary")

	_, err = connect(t, standby.DSN()).Exec(t.Context(), "INSERT INTO replicated VALUES ('on the standby')")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "25006", pgErr.Code, "read_only_sql_transaction")
}

func TestPromote_AfterTheKillOfThePrimaryTheStandbyTakesWrites(t *testing.T) {
	primary := start(t)
	standby := startStandby(t, primary)
	_, err := connect(t, primary.DSN()).Exec(t.Context(), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the crash')")
	require.NoError(t, err)
	requireReplicated(t, standby, "kept", "before the crash")
	session := connect(t, primary.DSN())
	pid := primary.PID()

	require.NoError(t, primary.Kill())

	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "the postmaster survived Kill")
	require.Empty(t, processesUsing(primary.Dir()), "server processes survived Kill")
	require.DirExists(t, primary.Dir(), "Kill leaves the directory, as a crash would")
	require.Error(t, session.Ping(t.Context()), "a session survived Kill")

	began := time.Now()
	require.NoError(t, standby.Promote(t.Context()))
	t.Logf("Promote took %v", time.Since(began))

	conn := connect(t, standby.DSN())
	_, err = conn.Exec(t.Context(), "INSERT INTO kept VALUES ('after the promotion')")
	require.NoError(t, err)
	var n int
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT count(*) FROM kept").Scan(&n))
	require.Equal(t, 2, n)
}

func TestKill_StopAfterwardsLeavesNoProcessAndNoDirectory(t *testing.T) {
	primary := start(t)
	standby := startStandby(t, primary)
	dirs := []string{primary.Dir(), standby.Dir()}

	require.NoError(t, primary.Kill())
	require.NoError(t, primary.Kill(), "a second Kill")
	require.NoError(t, primary.Stop())
	require.NoError(t, standby.Stop())

	for _, dir := range dirs {
		require.NoDirExists(t, dir)
		require.Empty(t, processesUsing(dir))
	}
}

func TestKill_RestartRecoversTheServer(t *testing.T) {
	s := start(t)
	conn := connect(t, s.DSN())
	_, err := conn.Exec(t.Context(), "CREATE TABLE t (v int)")
	require.NoError(t, err)
	// With synchronous_commit off a commit may be lost in a crash; a checkpoint writes it out.
	_, err = conn.Exec(t.Context(), "CHECKPOINT")
	require.NoError(t, err)

	require.NoError(t, s.Kill())
	require.NoError(t, s.Restart(t.Context()))

	var found bool
	require.NoError(t, connect(t, s.DSN()).QueryRow(t.Context(), "SELECT to_regclass('t') IS NOT NULL").Scan(&found))
	require.True(t, found, "a checkpointed table is lost after the crash")
}

func TestPromote_APrimaryIsNotAStandby(t *testing.T) {
	s := start(t)
	require.ErrorContains(t, s.Promote(t.Context()), "the server is not a standby")
}

func TestStartStandby_AfterStopFails(t *testing.T) {
	s := start(t)
	require.NoError(t, s.Stop())
	_, err := s.StartStandby(t.Context())
	require.ErrorContains(t, err, "StartStandby after Stop")
}

// BenchmarkStartStandby measures StartStandby (pg_basebackup of a fresh cluster, the standby's
// postmaster, a first read-only connection) followed by Stop.
func BenchmarkStartStandby(b *testing.B) {
	primary := start(b)
	for b.Loop() {
		standby, err := primary.StartStandby(b.Context())
		require.NoError(b, err)
		require.NoError(b, standby.Stop())
	}
}

// startStandby starts a standby of primary, stopped at the end of the test.
func startStandby(t testing.TB, primary *Server, opts ...Option) *Server {
	t.Helper()
	s, err := primary.StartStandby(t.Context(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Stop()) })
	return s
}

// requireReplicated waits until the standby has replayed the row v of a table; until it has replayed
// the table itself, the query fails.
func requireReplicated(t *testing.T, standby *Server, table, v string) {
	t.Helper()
	conn := connect(t, standby.DSN())
	require.Eventually(t, func() bool {
		var found bool
		err := conn.QueryRow(t.Context(), "SELECT EXISTS (SELECT FROM "+table+" WHERE v = $1)", v).Scan(&found)
		return err == nil && found
	}, 10*time.Second, 10*time.Millisecond, "the standby did not replay %q into %s", v, table)
}
