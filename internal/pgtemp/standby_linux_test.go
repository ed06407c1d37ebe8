package pgtemp

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

// With WithDurableCommits every acknowledged commit survives a crash, however soon after it comes.
func TestKill_WithDurableCommitsRestartKeepsEveryCommit(t *testing.T) {
	s := start(t, WithDurableCommits())
	conn := connect(t, s.DSN())
	var setting string
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT current_setting('synchronous_commit')").Scan(&setting))
	require.Equal(t, "on", setting)
	_, err := conn.Exec(t.Context(), "CREATE TABLE t (v int)")
	require.NoError(t, err)
	const commits = 200
	for i := range commits {
		_, err := conn.Exec(t.Context(), "INSERT INTO t VALUES ($1)", i)
		require.NoError(t, err)
	}

	require.NoError(t, s.Kill())
	require.NoError(t, s.Restart(t.Context()))

	var n int
	require.NoError(t, connect(t, s.DSN()).QueryRow(t.Context(), "SELECT count(*) FROM t").Scan(&n))
	require.Equal(t, commits, n, "acknowledged commits lost in the crash")
}

// The copy is taken while the primary writes: the standby still ends with every row the primary has.
func TestStartStandby_CopiesAPrimaryThatIsWriting(t *testing.T) {
	primary := start(t)
	writer := connect(t, primary.DSN())
	_, err := writer.Exec(t.Context(), "CREATE TABLE busy (v int)")
	require.NoError(t, err)
	stop, done := make(chan struct{}), make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := writer.Exec(context.Background(), "INSERT INTO busy SELECT generate_series(1, 100)"); err != nil {
				done <- err
				return
			}
		}
	}()
	standby := startStandby(t, primary)
	close(stop)
	require.NoError(t, <-done)

	var want int
	require.NoError(t, connect(t, primary.DSN()).QueryRow(t.Context(), "SELECT count(*) FROM busy").Scan(&want))
	onStandby := connect(t, standby.DSN())
	var got int
	require.Eventually(t, func() bool {
		return onStandby.QueryRow(t.Context(), "SELECT count(*) FROM busy").Scan(&got) == nil && got == want
	}, 10*time.Second, 10*time.Millisecond, "the standby has %d rows of the primary's %d", got, want)
}

// A standby streams through a replication slot of its own on the primary, which keeps WAL for it; the
// slot goes when the standby stops.
func TestStartStandby_StopDropsItsSlot(t *testing.T) {
	primary := start(t)
	standby := startStandby(t, primary)
	onPrimary := connect(t, primary.DSN())
	slots := func() []string {
		rows, err := onPrimary.Query(t.Context(), "SELECT slot_name FROM pg_replication_slots ORDER BY 1")
		require.NoError(t, err)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return names
	}
	require.Eventually(t, func() bool {
		var active bool
		err := onPrimary.QueryRow(t.Context(), "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slotName(standby.Dir())).Scan(&active)
		return err == nil && active
	}, 10*time.Second, 10*time.Millisecond, "the standby does not stream through its slot; slots: %v", slots())

	require.NoError(t, standby.Stop())
	require.Empty(t, slots(), "the stopped standby's slot stays on the primary")
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

// BenchmarkStartStandby measures StartStandby (an online copy of a fresh cluster, the standby's
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
