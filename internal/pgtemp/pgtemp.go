// Package pgtemp starts a throwaway PostgreSQL server from the binaries installed on this machine, for
// tests: a fresh cluster in a temporary directory, reachable only through its own unix socket, with
// durability turned off for speed, and removed by Stop.
//
// The directory is made in $TMPDIR when it is set, else in /dev/shm on Linux when it is a tmpfs with
// room (creating files in memory is many times faster than on disk, and initdb and CREATE DATABASE
// create hundreds), else in the system's temporary directory.
//
// The first Start on a machine runs initdb (about a second of CPU) and keeps a copy of the new cluster
// in the user's cache directory (pgtemp/ there, about 40 MB; delete it at will); later Starts copy it,
// which is several times faster. Run as root, the server runs as the OS user postgres (initdb refuses
// root). On Linux the server dies with the process that started it, even on SIGKILL; what it leaves
// (its directory, its shared memory) is removed by a later Start.
package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running PostgreSQL server started by [Start]. Its methods are safe for concurrent use.
type Server struct {
	bin     binaries
	cfg     *config
	user    *osUser // the OS user the server runs as when pgtemp runs as root; nil otherwise
	dir     string
	dataDir string
	sockDir string
	port    int
	log     *logTail

	mu      sync.Mutex // guards pm and stopped; held across Stop and Restart
	pm      *postmaster
	stopped bool
}

// postmaster is one run of the server process.
type postmaster struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returns
	err    error         // cmd.Wait's result, set before exited closes
}

// osUser is the account the server runs as when the caller is root.
type osUser struct {
	name     string
	uid, gid uint32
}

const (
	port = 5432 // every server has its own socket directory, so they can all use the usual port
	// stopTimeout bounds a fast shutdown before the postmaster is killed.
	stopTimeout = 10 * time.Second
	// killTimeout covers cmd.WaitDelay: backends orphaned by a SIGKILL keep the log pipe open a moment.
	killTimeout = 10 * time.Second
	waitDelay   = 5 * time.Second
	// maxSocketPath is the shortest limit on a unix socket path among the systems pgtemp runs on (macOS).
	maxSocketPath = 103
)

// testSettings make the server fast and private; settings from WithSetting come after and override them.
var testSettings = [][2]string{
	{"listen_addresses", ""}, // unix socket only
	{"fsync", "off"},
	{"synchronous_commit", "off"},
	{"full_page_writes", "off"},
	{"max_connections", "200"}, // parallel tests and fleets of clients
	{"shared_buffers", "32MB"},
	// Bounds the WAL kept between checkpoints (each CREATE DATABASE writes about 8 MB), as the cluster
	// may live in memory.
	{"max_wal_size", "128MB"},
	{"min_wal_size", "32MB"},
	// Dynamic shared memory in files under the data directory, not /dev/shm: a killed server's
	// segments go with its directory instead of staying until the next reboot.
	{"dynamic_shared_memory_type", "mmap"},
}

// Start creates a cluster in a new temporary directory (pgtemp-*; the cluster is made by initdb, or
// copied from the one an earlier Start made), starts postgres on it and returns once the server accepts
// connections. Call Stop to shut it down and remove the directory.
//
// ctx bounds the whole start. Start fails with an error matching [ErrNoBinaries] when initdb and postgres
// cannot be found; it looks in $PGTEMP_BIN, beside the initdb on PATH, then in the usual install
// locations (Debian and RHEL packages, Homebrew, Postgres.app).
func Start(ctx context.Context, opts ...Option) (*Server, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	u, err := serverUser()
	if err != nil {
		return nil, err
	}
	roots := candidateRoots()
	for _, root := range roots {
		removeStale(root)
	}
	root, err := tempRoot(roots, u)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(root, dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtemp: create the server directory: %w (set TMPDIR to a writable directory)", err)
	}
	s := &Server{
		bin:     bin,
		cfg:     cfg,
		user:    u,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		sockDir: filepath.Join(dir, "sock"),
		port:    port,
		log:     &logTail{out: cfg.logOutput},
	}
	if err := s.initdb(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s.mu.Lock()
	err = s.launch(ctx)
	s.mu.Unlock()
	if err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// DSN returns the connection string of the database postgres as the superuser postgres, over the
// server's unix socket, for example
// postgres://postgres@/postgres?host=/tmp/pgtemp-123/sock&port=5432&sslmode=disable.
// Authentication is trust: there is no password.
func (s *Server) DSN() string { return s.DSNFor("postgres") }

// DSNFor returns the connection string of another database on this server, as the superuser postgres.
func (s *Server) DSNFor(database string) string {
	host := strings.ReplaceAll(url.QueryEscape(s.sockDir), "%2F", "/")
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable",
		url.PathEscape(database), host, s.port)
}

// SocketDir returns the directory holding the server's unix socket (libpq's host).
func (s *Server) SocketDir() string { return s.sockDir }

// Port returns the server's port number, which names its socket file in SocketDir.
func (s *Server) Port() int { return s.port }

// Dir returns the temporary directory that holds the cluster (data/) and the socket (sock/); Stop
// removes it.
func (s *Server) Dir() string { return s.dir }

// PID returns the process id of the postmaster (it changes on Restart), or 0 if it never started.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pm == nil {
		return 0
	}
	return s.pm.cmd.Process.Pid
}

// Stop shuts the server down (a fast shutdown: open sessions are ended; SIGKILL if that takes more than
// 10 s) and removes its directory. It is safe to call more than once; later calls return nil.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	err := s.shutdown()
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("pgtemp: remove %s: %w", s.dir, rmErr))
	}
	return err
}

// Restart stops the postmaster (fast shutdown) and starts it again on the same data directory and
// socket, so the DSN stays valid and the data is kept. Connections open across the restart break;
// new ones work once Restart returns. It is meant for tests of how clients survive a server restart.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("pgtemp: Restart after Stop: start a new server with Start")
	}
	if err := s.shutdown(); err != nil {
		return err
	}
	return s.launch(ctx)
}

// initdb prepares the directory and fills dataDir with a new cluster: a copy of a cached one when there
// is one (see cache.go), else one made by initdb, which is then cached.
func (s *Server) initdb(ctx context.Context) error {
	owner := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := os.WriteFile(filepath.Join(s.dir, ownerFile), owner, 0o644); err != nil {
		return fmt.Errorf("pgtemp: write %s: %w", ownerFile, err)
	}
	if err := os.Mkdir(s.sockDir, 0o700); err != nil {
		return fmt.Errorf("pgtemp: create the socket directory: %w", err)
	}
	if cached := cachedCluster(s.bin); cached != "" {
		if err := copyTree(cached, s.dataDir); err == nil {
			return s.handOver()
		}
		_ = os.RemoveAll(s.dataDir) // a broken copy costs a fresh initdb, nothing more
	}
	if err := s.handOver(); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, s.bin.initdb, slices.Concat(initdbArgs, []string{"-D", s.dataDir})...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.SysProcAttr = s.procAttr()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgtemp: %s failed: %w; its last output:\n%s", s.bin.initdb, err, s.log.tail())
	}
	saveCluster(s.bin, s.dataDir)
	return nil
}

// handOver gives the server's OS user everything in the directory, when pgtemp runs as root.
func (s *Server) handOver() error {
	if s.user == nil {
		return nil
	}
	err := filepath.WalkDir(s.dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(s.user.uid), int(s.user.gid))
	})
	if err != nil {
		return fmt.Errorf("pgtemp: hand %s to the OS user %s: %w", s.dir, s.user.name, err)
	}
	return nil
}

// launch starts the postmaster and waits until it accepts connections. s.mu must be held.
func (s *Server) launch(ctx context.Context) error {
	args := []string{"-D", s.dataDir, "-k", s.sockDir, "-p", strconv.Itoa(s.port)}
	for _, kv := range append(testSettings[:len(testSettings):len(testSettings)], s.cfg.settings...) {
		args = append(args, "-c", kv[0]+"="+kv[1])
	}
	cmd := exec.Command(s.bin.postgres, args...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.SysProcAttr = s.procAttr()
	cmd.WaitDelay = waitDelay
	pm := &postmaster{cmd: cmd, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the starting OS thread exits, so this thread must outlive the server.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		pm.err = cmd.Wait()
		close(pm.exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("pgtemp: start %s: %w", s.bin.postgres, err)
	}
	s.pm = pm
	return s.waitReady(ctx, pm)
}

// waitReady polls with a connection attempt until the server answers, the postmaster exits, or the
// start timeout or ctx ends.
func (s *Server) waitReady(ctx context.Context, pm *postmaster) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.startTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		conn, err := pgx.Connect(ctx, s.DSN())
		if err == nil {
			return conn.Close(ctx)
		}
		last = err
		select {
		case <-pm.exited:
			return fmt.Errorf("pgtemp: postgres exited during startup (%v); its last output:\n%s", pm.err, s.log.tail())
		case <-ctx.Done():
			return fmt.Errorf("pgtemp: postgres did not accept connections: %w (last attempt: %v); its last output:\n%s",
				ctx.Err(), last, s.log.tail())
		case <-tick.C:
		}
	}
}

// shutdown stops the current postmaster, if it runs. s.mu must be held.
func (s *Server) shutdown() error {
	pm := s.pm
	if pm == nil {
		return nil
	}
	select {
	case <-pm.exited:
		return nil
	default:
	}
	_ = interrupt(pm.cmd.Process)
	select {
	case <-pm.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = pm.cmd.Process.Kill()
	select {
	case <-pm.exited:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("pgtemp: postgres (pid %d) did not exit after SIGKILL", pm.cmd.Process.Pid)
	}
}

func (s *Server) procAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	dieWithParent(attr)
	if s.user != nil {
		runAs(attr, s.user)
	}
	return attr
}

// serverUser returns the OS user postgres when running as root, since initdb and postgres refuse root.
func serverUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtemp: running as root, and PostgreSQL refuses to run as root: "+
			"create an OS user named postgres (useradd --system postgres) or run the tests as another user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtemp: OS user postgres has uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtemp: OS user postgres has gid %q: %w", u.Gid, err)
	}
	return &osUser{name: u.Username, uid: uint32(uid), gid: uint32(gid)}, nil
}

// candidateRoots lists where servers may go, best first: $TMPDIR when it is set (the user's choice), a
// memory-backed directory (Linux: /dev/shm, when it has room), the system's temporary directory, /tmp.
// initdb and CREATE DATABASE create hundreds of files, which costs far less in memory than on disk.
func candidateRoots() []string {
	var roots []string
	for _, root := range []string{os.Getenv("TMPDIR"), memoryBackedDir(), os.TempDir(), "/tmp"} {
		if root != "" && !slices.Contains(roots, root) {
			roots = append(roots, root)
		}
	}
	return roots
}

// tempRoot picks the first of roots that the server's user can reach and where the socket path stays
// within the system's limit.
func tempRoot(roots []string, u *osUser) (string, error) {
	var reasons []string
	for _, root := range roots {
		resolved, err := filepath.EvalSymlinks(root)
		if err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		sock := filepath.Join(resolved, dirPrefix+"0123456789", "sock", ".s.PGSQL."+strconv.Itoa(port))
		if len(sock) > maxSocketPath {
			reasons = append(reasons, fmt.Sprintf("%s is too long a path for a unix socket", resolved))
			continue
		}
		if u != nil {
			if err := searchable(resolved, u); err != nil {
				reasons = append(reasons, err.Error())
				continue
			}
		}
		return resolved, nil
	}
	return "", fmt.Errorf("pgtemp: no usable temporary directory (%s): set TMPDIR to a short directory "+
		"every user can enter, such as /tmp", strings.Join(reasons, "; "))
}

// logTail copies the server's output to out and keeps its end for error messages.
type logTail struct {
	mu  sync.Mutex
	out io.Writer
	buf []byte
}

const tailBytes = 4096

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) > 2*tailBytes {
		l.buf = append(l.buf[:0:0], l.buf[len(l.buf)-tailBytes:]...)
	}
	_, _ = l.out.Write(p) // the log is best effort: a failing writer must not stop the server
	return len(p), nil
}

// tail returns the last lines written, at most about 4 KB.
func (l *logTail) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf
	if len(b) > tailBytes {
		b = b[len(b)-tailBytes:]
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}
