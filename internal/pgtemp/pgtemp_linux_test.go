package pgtemp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib/internal/proc"
)

func TestServer(t *testing.T) {
	var log syncBuffer
	s := start(t, WithSetting("work_mem", "5MB"), WithLogOutput(&log))

	t.Run("answers queries", func(t *testing.T) {
		var one int
		require.NoError(t, connect(t, s.DSN()).QueryRow(t.Context(), "SELECT 1").Scan(&one))
		require.Equal(t, 1, one)
	})
	t.Run("reports its version", func(t *testing.T) {
		var version string
		var num int
		conn := connect(t, s.DSN())
		require.NoError(t, conn.QueryRow(t.Context(), "SELECT version(), current_setting('server_version_num')::int").
			Scan(&version, &num))
		require.Contains(t, version, "PostgreSQL")
		require.GreaterOrEqual(t, num, 100000)
		t.Logf("server: %s", version)
	})
	t.Run("uses the test settings and WithSetting", func(t *testing.T) {
		conn := connect(t, s.DSN())
		for name, want := range map[string]string{
			"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
			"max_connections": "200", "listen_addresses": "", "work_mem": "5MB",
			"dynamic_shared_memory_type": "mmap", "max_wal_size": "128MB",
		} {
			var got string
			require.NoError(t, conn.QueryRow(t.Context(), "SELECT current_setting($1)", name).Scan(&got))
			require.Equal(t, want, got, name)
		}
	})
	t.Run("DSNFor reaches another database", func(t *testing.T) {
		_, err := connect(t, s.DSN()).Exec(t.Context(), "CREATE DATABASE other")
		require.NoError(t, err)
		var name string
		require.NoError(t, connect(t, s.DSNFor("other")).QueryRow(t.Context(), "SELECT current_database()").Scan(&name))
		require.Equal(t, "other", name)
	})
	t.Run("has its own socket directory", func(t *testing.T) {
		require.Equal(t, filepath.Join(s.Dir(), "sock"), s.SocketDir())
		require.FileExists(t, filepath.Join(s.SocketDir(), ".s.PGSQL."+strconv.Itoa(s.Port())))
		require.Contains(t, s.DSN(), "host="+s.SocketDir())
	})
	t.Run("lives in memory when it can", func(t *testing.T) {
		if os.Getenv("TMPDIR") != "" || memoryBackedDir() == "" {
			t.Skip("TMPDIR is set, or /dev/shm is not a tmpfs with room")
		}
		require.Equal(t, "/dev/shm", filepath.Dir(s.Dir()))
	})
	t.Run("copies its log to WithLogOutput", func(t *testing.T) {
		require.Contains(t, log.String(), "database system is ready to accept connections")
	})
	t.Run("runs as the postgres OS user when started by root", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("not running as root")
		}
		u, err := user.Lookup("postgres")
		require.NoError(t, err)
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID()))
		require.NoError(t, err)
		var uids []string
		for line := range strings.Lines(string(status)) {
			if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
				uids = strings.Fields(rest) // real, effective, saved, filesystem
			}
		}
		require.Equal(t, []string{u.Uid, u.Uid, u.Uid, u.Uid}, uids)
	})
}

func TestStart_TwoServersRunSideBySide(t *testing.T) {
	servers := make([]*Server, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() { servers[i], errs[i] = Start(t.Context()) })
	}
	wg.Wait()
	for i, s := range servers {
		if s != nil {
			t.Cleanup(func() { assert.NoError(t, s.Stop()) })
		}
		if errors.Is(errs[i], ErrNoBinaries) {
			noBinaries(t, errs[i])
		}
		require.NoError(t, errs[i])
	}
	a, b := servers[0], servers[1]

	require.NotEqual(t, a.SocketDir(), b.SocketDir())
	require.Equal(t, a.Port(), b.Port(), "same port, different socket directories")
	require.NotEqual(t, a.PID(), b.PID())

	_, err := connect(t, a.DSN()).Exec(t.Context(), "CREATE TABLE only_in_a (id int)")
	require.NoError(t, err)
	var found bool
	require.NoError(t, connect(t, b.DSN()).QueryRow(t.Context(),
		"SELECT to_regclass('only_in_a') IS NOT NULL").Scan(&found))
	require.False(t, found, "a table made on one server shows on the other")
}

func TestStop_LeavesNoProcessAndNoDirectory(t *testing.T) {
	s := start(t)
	pid, dir := s.PID(), s.Dir()
	conn := connect(t, s.DSN()) // an open session must not hold up the shutdown
	children := childPIDs(pid)
	require.NotEmpty(t, children, "a running postmaster has background processes")

	require.NoError(t, s.Stop())

	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "postmaster still exists")
	for _, child := range children {
		require.True(t, gone(child), "server process %d still runs", child)
	}
	require.Empty(t, processesUsing(dir))
	require.NoDirExists(t, dir)
	require.Error(t, conn.Ping(t.Context()))
	require.NoError(t, s.Stop(), "a second Stop")
}

func TestRestart_KeepsDataAndDSN(t *testing.T) {
	s := start(t)
	before := connect(t, s.DSN())
	_, err := before.Exec(t.Context(), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')")
	require.NoError(t, err)
	oldPID := s.PID()

	require.NoError(t, s.Restart(t.Context()))

	require.NotEqual(t, oldPID, s.PID())
	require.Error(t, before.Ping(t.Context()), "a connection opened before the restart still works")
	var v string
	require.NoError(t, connect(t, s.DSN()).QueryRow(t.Context(), "SELECT v FROM kept").Scan(&v))
	require.Equal(t, "survives", v)
}

func TestStart_ServerThatExitsReportsItsLog(t *testing.T) {
	if _, err := findBinaries(); err != nil {
		noBinaries(t, err)
	}
	_, err := Start(t.Context(), WithSetting("shared_buffers", "lots"))
	require.ErrorContains(t, err, "postgres exited during startup")
	require.ErrorContains(t, err, `invalid value for parameter "shared_buffers"`, "the error quotes the server's log")
}

func TestRestart_AfterStopFails(t *testing.T) {
	s := start(t)
	require.NoError(t, s.Stop())
	require.ErrorContains(t, s.Restart(t.Context()), "Restart after Stop")
}

// TestStart_KilledOwnerLeavesNoServer kills a test binary that started a server (SIGKILL: no cleanup
// runs) and checks the kernel took the server down with it.
func TestStart_KilledOwnerLeavesNoServer(t *testing.T) {
	if _, err := findBinaries(); err != nil {
		noBinaries(t, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=start-and-sleep")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	var pid int
	var dir string
	lines := bufio.NewScanner(stdout)
	for pid == 0 && lines.Scan() {
		if _, err := fmt.Sscanf(lines.Text(), "pid=%d dir=%s", &pid, &dir); err != nil {
			t.Logf("helper: %s", lines.Text())
		}
	}
	require.NotZero(t, pid, "the helper did not report a server")
	defer func() { _ = os.RemoveAll(dir) }()
	server := append([]int{pid}, childPIDs(pid)...)

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()

	require.Eventually(t, func() bool {
		for _, p := range server {
			if !gone(p) {
				return false
			}
		}
		return len(processesUsing(dir)) == 0
	}, 10*time.Second, 20*time.Millisecond, "server processes %v outlived the test binary", server)
	require.DirExists(t, dir, "the killed binary leaves its directory for a later Start to sweep")

	// What a later Start does: remove the directory, and the shared memory the server left.
	pidFile, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	require.NoError(t, err)
	shmid := strings.Fields(strings.Split(string(pidFile), "\n")[6])[1]
	require.Contains(t, sysvSegments(t), shmid)
	serverDirs.Sweep(filepath.Dir(dir))
	require.NoDirExists(t, dir)
	if removesSharedMemory {
		require.NotContains(t, sysvSegments(t), shmid)
	}
}

// sysvSegments lists the ids of the System V shared memory segments.
func sysvSegments(t *testing.T) []string {
	b, err := os.ReadFile("/proc/sysvipc/shm")
	require.NoError(t, err)
	var ids []string
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 1 && f[0] != "key" {
			ids = append(ids, f[1])
		}
	}
	return ids
}

const helperEnv = "PGTEMP_TEST_HELPER"

// TestHelperProcess is not a test: TestStart_KilledOwnerLeavesNoServer runs the test binary with it
// as a process that starts a server and waits to be killed.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "start-and-sleep" {
		t.Skip("runs only as a subprocess of TestStart_KilledOwnerLeavesNoServer")
	}
	s, err := Start(context.Background())
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Printf("pid=%d dir=%s\n", s.PID(), s.Dir())
	time.Sleep(time.Minute)
	os.Exit(3) // not reached: the parent kills this process
}

func TestStart_CopiesTheClusterInitdbMadeFirst(t *testing.T) {
	cache := t.TempDir()
	useClusterCache(t, func() (string, error) { return cache, nil })
	const initdbSays = "The files belonging to this database system"

	var first, second syncBuffer
	start(t, WithLogOutput(&first))
	entries, err := os.ReadDir(cache)
	require.NoError(t, err)
	require.Len(t, entries, 1, "the first Start keeps one copy")
	require.FileExists(t, filepath.Join(cache, entries[0].Name(), "PG_VERSION"))
	require.Contains(t, first.String(), initdbSays)

	s := start(t, WithLogOutput(&second))
	require.NotContains(t, second.String(), initdbSays, "the second Start ran initdb")
	var one int
	require.NoError(t, connect(t, s.DSN()).QueryRow(t.Context(), "SELECT 1").Scan(&one))
	_, err = os.Stat(filepath.Join(cache, entries[0].Name(), "postmaster.pid"))
	require.ErrorIs(t, err, os.ErrNotExist, "the cached copy must never be started")
}

// BenchmarkServerStart measures Start (a cluster, the postmaster, a first connection) followed by Stop:
// with initdb, as on a machine's first Start, and from the cached copy, as on every later one.
func BenchmarkServerStart(b *testing.B) {
	if _, err := findBinaries(); err != nil {
		noBinaries(b, err)
	}
	run := func(b *testing.B) {
		for b.Loop() {
			s, err := Start(b.Context())
			require.NoError(b, err)
			require.NoError(b, s.Stop())
		}
	}
	b.Run("initdb", func(b *testing.B) {
		useClusterCache(b, func() (string, error) { return "", errors.New("no cache") })
		run(b)
	})
	b.Run("cached", func(b *testing.B) {
		cache := b.TempDir()
		useClusterCache(b, func() (string, error) { return cache, nil })
		s, err := Start(b.Context()) // fills the cache
		require.NoError(b, err)
		require.NoError(b, s.Stop())
		run(b)
	})
}

func useClusterCache(t testing.TB, dir func() (string, error)) {
	saved := clusterCacheDir
	clusterCacheDir = dir
	t.Cleanup(func() { clusterCacheDir = saved })
}

// start starts a server stopped at the end of the test; without binaries it fails under CI=true and
// skips elsewhere.
func start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s, err := Start(t.Context(), opts...)
	if errors.Is(err, ErrNoBinaries) {
		noBinaries(t, err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Stop()) })
	return s
}

func noBinaries(t testing.TB, err error) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(err)
	}
	t.Skip(err)
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// childPIDs lists the processes whose parent is pid.
func childPIDs(pid int) []int {
	var children []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// The command name in parentheses may hold spaces; the fields after it are state, ppid, ...
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			n, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			children = append(children, n)
		}
	}
	return children
}

// gone reports whether a process has exited; a zombie not yet reaped by init counts as exited.
func gone(pid int) bool { return !proc.Alive(pid) }

// processesUsing lists live processes whose command line or working directory is inside dir: a
// postmaster names its data directory on its command line, and every server process works in it.
func processesUsing(dir string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, proc := range procs {
		pid, _ := strconv.Atoi(filepath.Base(proc))
		if pid == os.Getpid() || gone(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(proc, "cmdline"))
		cwd, _ := os.Readlink(filepath.Join(proc, "cwd"))
		if bytes.Contains(cmdline, []byte(dir)) || strings.HasPrefix(cwd, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// syncBuffer is a bytes.Buffer safe for the server's log goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
