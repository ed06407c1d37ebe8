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
// (its directory, its shared memory) is removed by a later Start. Package proc supervises the processes
// (initdb, postgres) and sweeps what killed test binaries left.
//
// For tests of replication and failover, a server can have hot standbys (StartStandby: an online copy
// of its files, in a directory of its own, in about half a second), crash (Kill) and be replaced by a
// promoted standby (Promote). A test that crashes or restarts a server and reads what it committed
// starts it with WithDurableCommits.
package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgdual/mylib/internal/proc"
)

// Server is a running PostgreSQL server started by [Start] or [Server.StartStandby]. Its methods are
// safe for concurrent use.
type Server struct {
	bin     binaries
	cfg     *config
	user    *proc.User // the OS user the server runs as when pgtemp runs as root; nil otherwise
	dir     string
	dataDir string
	sockDir string
	port    int
	log     *proc.Log

	mu      sync.Mutex // guards pm and stopped; held across Stop, Restart and Kill
	pm      *proc.Process
	stopped bool

	primary *Server // for a standby, the server it streams from, through its replication slot
	slot    string
}

const (
	port = 5432 // every server has its own socket directory, so they can all use the usual port
	// stopTimeout bounds a fast shutdown before the postmaster is killed.
	stopTimeout = 10 * time.Second
	// killTimeout bounds an immediate shutdown (Kill) before the postmaster is killed.
	killTimeout = 10 * time.Second
)

// serverDirs are pgtemp's directories: owner.pid, the cluster in data/, the socket in sock/. A killed
// server's shared memory goes with its directory.
var serverDirs = proc.Kind{
	Prefix:  "pgtemp-",
	Socket:  filepath.Join("sock", ".s.PGSQL."+strconv.Itoa(port)),
	Release: releaseSharedMemory,
}

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
	return startWith(ctx, bin, cfg, (*Server).initdb)
}

// startWith makes a server directory, has fill put a cluster in data/, and starts postgres on it.
func startWith(ctx context.Context, bin binaries, cfg *config, fill func(*Server, context.Context) error) (*Server, error) {
	u, err := proc.DropRoot("PostgreSQL")
	if err != nil {
		return nil, wrap(err)
	}
	dir, err := serverDirs.NewDir(candidateRoots(), u)
	if err != nil {
		return nil, wrap(err)
	}
	s := &Server{
		bin:     bin,
		cfg:     cfg,
		user:    u,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		sockDir: filepath.Join(dir, "sock"),
		port:    port,
		log:     proc.NewLog(cfg.logOutput),
	}
	if err := s.prepare(ctx, fill); err != nil {
		_ = serverDirs.Remove(dir)
		return nil, err
	}
	s.mu.Lock()
	err = s.launch(ctx)
	s.mu.Unlock()
	if err != nil {
		return nil, errors.Join(err, s.Stop())
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
	return s.pm.PID()
}

// Stop shuts the server down (a fast shutdown: open sessions are ended; SIGKILL if that takes more than
// 10 s) and removes its directory. It is safe to call more than once, and after Kill; later calls
// return nil.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	err := s.shutdown()
	if s.primary != nil {
		s.dropStandbySlot()
	}
	return errors.Join(err, wrap(serverDirs.Remove(s.dir)))
}

// Restart stops the postmaster (fast shutdown) and starts it again on the same data directory and
// socket, so the DSN stays valid and the data is kept. Connections open across the restart break;
// new ones work once Restart returns. It is meant for tests of how clients survive a server restart.
// After Kill it starts the server again, which then recovers from its crash.
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

// Kill stops the server the way a crash would: an immediate shutdown (SIGQUIT), in which every server
// process exits at once, without a checkpoint, and sessions and replication connections break (SIGKILL
// if that takes more than 10 s). The directory stays, so Restart recovers the server as after a crash;
// Stop removes it. It is meant for tests of failover to a standby, and of crash recovery.
//
// pgtemp turns synchronous_commit off, so a crash may lose the commits of the last fraction of a
// second, on the server and on its standbys: a test that needs them after Kill starts the server with
// [WithDurableCommits].
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pm == nil {
		return nil
	}
	return ignoreKilled(s.pm.StopWith(killTimeout, syscall.SIGQUIT))
}

// prepare makes the socket directory, gives the directory to the server's OS user, and has fill put a
// cluster in data/.
func (s *Server) prepare(ctx context.Context, fill func(*Server, context.Context) error) error {
	if err := os.Mkdir(s.sockDir, 0o700); err != nil {
		return fmt.Errorf("pgtemp: create the socket directory: %w", err)
	}
	if err := s.user.Own(s.dir); err != nil {
		return wrap(err)
	}
	return fill(s, ctx)
}

// initdb fills dataDir with a new cluster: a copy of a cached one when there is one (see cache.go),
// else one made by initdb, which is then cached.
func (s *Server) initdb(ctx context.Context) error {
	if cached := cachedCluster(s.bin); cached != "" {
		if err := copyTree(cached, s.dataDir, nil); err == nil {
			return wrap(s.user.Own(s.dataDir))
		}
		_ = os.RemoveAll(s.dataDir) // a broken copy costs a fresh initdb, nothing more
	}
	if err := s.run(ctx, s.bin.initdb, slices.Concat(initdbArgs, []string{"-D", s.dataDir})...); err != nil {
		return err
	}
	saveCluster(s.bin, s.dataDir)
	return nil
}

// run runs one of the PostgreSQL programs (initdb) for this server, as its OS user.
func (s *Server) run(ctx context.Context, program string, args ...string) error {
	return wrap(proc.Run(ctx, proc.Command{Path: program, Args: args, Home: s.dir, User: s.user, Log: s.log}))
}

// launch starts the postmaster and waits until it accepts connections. s.mu must be held.
func (s *Server) launch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.startTimeout)
	defer cancel()
	args := []string{"-D", s.dataDir, "-k", s.sockDir, "-p", strconv.Itoa(s.port)}
	settings := testSettings[:len(testSettings):len(testSettings)]
	if s.cfg.durable {
		settings = append(settings, [2]string{"synchronous_commit", "on"})
	}
	for _, kv := range append(settings, s.cfg.settings...) {
		args = append(args, "-c", kv[0]+"="+kv[1])
	}
	pm, err := proc.Start(ctx, proc.Command{
		Path: s.bin.postgres, Args: args, Home: s.dir, User: s.user, Log: s.log,
		Ready:      s.accepts,
		ReadyEvery: 10 * time.Millisecond,
		Shutdown:   []os.Signal{os.Interrupt}, // a fast shutdown: sessions are ended, then a checkpoint
		Grace:      stopTimeout,
	})
	if err != nil {
		return wrap(err)
	}
	s.pm = pm
	return nil
}

// accepts reports whether the server accepts a connection; a hot standby does once it is consistent.
func (s *Server) accepts(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// shutdown stops the current postmaster, if it runs. s.mu must be held.
func (s *Server) shutdown() error {
	if s.pm == nil {
		return nil
	}
	return ignoreKilled(s.pm.Stop())
}

// ignoreKilled accepts a postmaster that had to be killed: what matters to a test is that it is gone.
func ignoreKilled(err error) error {
	if errors.Is(err, proc.ErrKilled) {
		return nil
	}
	return wrap(err)
}

// wrap names pgtemp in an error from package proc.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("pgtemp: %w", err)
}

// candidateRoots lists where servers may go, best first: $TMPDIR when it is set (the user's choice), a
// memory-backed directory (Linux: /dev/shm, when it has room), the system's temporary directory, /tmp.
// initdb and CREATE DATABASE create hundreds of files, which costs far less in memory than on disk.
func candidateRoots() []string {
	return []string{os.Getenv("TMPDIR"), memoryBackedDir(), os.TempDir(), "/tmp"}
}
