package pgtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// BouncerOption configures [Bouncer].
type BouncerOption func(*bouncerConfig)

type bouncerConfig struct {
	settings [][2]string // pgbouncer.ini [pgbouncer] settings, later ones win
}

// BouncerPoolSize sets default_pool_size: how many server connections PgBouncer opens per database and
// user (default 4, fewer than most tests' clients, so that clients queue for them).
func BouncerPoolSize(n int) BouncerOption {
	return BouncerSetting("default_pool_size", strconv.Itoa(n))
}

// BouncerIdleTransactionTimeout sets idle_transaction_timeout: PgBouncer disconnects a client whose
// transaction stays idle longer than d, which ends the transaction on the server (default: none).
func BouncerIdleTransactionTimeout(d time.Duration) BouncerOption {
	return BouncerSetting("idle_transaction_timeout", strconv.FormatFloat(d.Seconds(), 'f', -1, 64))
}

// BouncerSetting sets any setting of pgbouncer.ini's [pgbouncer] section, after Bouncer's own.
func BouncerSetting(name, value string) BouncerOption {
	return func(c *bouncerConfig) { c.settings = append(c.settings, [2]string{name, value}) }
}

// bouncerDefaults are the settings of every Bouncer, before its options.
var bouncerDefaults = [][2]string{
	{"pool_mode", "transaction"},
	{"default_pool_size", "4"},
	{"reserve_pool_size", "0"},
	{"max_client_conn", "1000"},
	{"auth_type", "trust"},
	// pgx sends none of these by default, but a DSN may; PgBouncer refuses unknown startup parameters.
	{"ignore_startup_parameters", "extra_float_digits,search_path,options"},
	{"listen_addr", ""}, // the unix socket only
}

// bouncerPort names PgBouncer's socket file; every Bouncer has a directory of its own.
const bouncerPort = 6432

var bouncerSettingName = regexp.MustCompile(`^[a-z_]+$`)

// bouncerSearch are the places tried for the pgbouncer program after PGBOUNCER_BIN and PATH.
var bouncerSearch = []string{"/usr/sbin/pgbouncer", "/usr/local/bin/pgbouncer", "/opt/homebrew/bin/pgbouncer"}

const (
	bouncerStartTimeout = 10 * time.Second
	bouncerStopTimeout  = 5 * time.Second
)

// Bouncer starts a PgBouncer in transaction pooling mode in front of the server of dsn, for this test,
// and returns dsn with its host and port changed to reach the same database, as the same user, through
// it. PgBouncer listens on a unix socket of its own, lets any database name through, and stops when the
// test ends.
//
// Through PgBouncer before 1.21, pgx's default query mode (named prepared statements, cached per
// connection) fails once a client's statements reach a server connection that did not prepare them: add
// default_query_exec_mode=exec (or simple_protocol) to the returned DSN, with [SetParam], as a user
// behind such a PgBouncer must.
//
// The pgbouncer program is found in PGBOUNCER_BIN, PATH, then the usual install locations; without it
// the test fails under CI=true and is skipped otherwise. Run as root, PgBouncer runs as the OS user
// postgres, as pgtemp's servers do.
func Bouncer(t testing.TB, dsn string, opts ...BouncerOption) string {
	t.Helper()
	bin, err := findBouncer()
	if err != nil {
		unavailable(t, err.Error())
	}
	cc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal("pgtest: Bouncer: not a valid connection string") // pgx's error quotes the DSN, password included
	}
	cfg := &bouncerConfig{settings: bouncerDefaults}
	for _, o := range opts {
		o(cfg)
	}
	owner, err := bouncerUser()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := bouncerDir(owner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	ini, err := writeBouncerFiles(dir, cc, cfg.settings, owner)
	if err != nil {
		t.Fatal(err)
	}
	b, err := startBouncer(bin, ini, dir, owner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: the end of PgBouncer's log:\n%s", b.log.tail())
		}
		if err := b.stop(); err != nil {
			t.Error(err)
		}
	})
	return bouncerDSN(dsn, dir, b.port)
}

// SetParam returns dsn with the connection parameter key set to value, replacing an earlier value:
// SetParam(dsn, "default_query_exec_mode", "exec"). dsn may be a URL or keyword/value pairs.
func SetParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			q := u.Query()
			q.Set(key, value)
			// Encode writes a space as "+", which pgx reads as a plus: spell it %20
			// (a literal plus is already %2B).
			u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
			return u.String()
		}
	}
	return setKeyword(dsn, key, value)
}

// bouncerDSN points dsn at PgBouncer's socket: no TLS on a unix socket.
func bouncerDSN(dsn, dir string, port int) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.Host = "" // host and port go in the query; user and password stay
			dsn = u.String()
		}
	}
	for _, kv := range [][2]string{{"host", dir}, {"port", strconv.Itoa(port)}, {"sslmode", "disable"}} {
		dsn = SetParam(dsn, kv[0], kv[1])
	}
	return dsn
}

func findBouncer() (string, error) {
	if bin := os.Getenv("PGBOUNCER_BIN"); bin != "" {
		if err := isProgram(bin); err != nil {
			return "", fmt.Errorf("pgtest: PGBOUNCER_BIN=%s: %v: point it at the pgbouncer program, or unset it to search PATH", bin, err)
		}
		return bin, nil
	}
	if bin, err := exec.LookPath("pgbouncer"); err == nil {
		return bin, nil
	}
	for _, bin := range bouncerSearch {
		if isProgram(bin) == nil {
			return bin, nil
		}
	}
	return "", fmt.Errorf("pgtest: this test puts PgBouncer in front of its server, and no pgbouncer program was found "+
		"(searched PGBOUNCER_BIN, PATH, %s): install it (apt-get install pgbouncer, brew install pgbouncer) "+
		"or set PGBOUNCER_BIN to its path", strings.Join(bouncerSearch, ", "))
}

func isProgram(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

// bouncerOwner is the OS user PgBouncer runs as when the tests run as root, which it refuses.
type bouncerOwner struct {
	name     string
	uid, gid uint32
}

func bouncerUser() (*bouncerOwner, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and PgBouncer refuses to run as root: "+
			"create an OS user named postgres (useradd --system postgres) or run the tests as another user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: OS user postgres has uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: OS user postgres has gid %q: %w", u.Gid, err)
	}
	return &bouncerOwner{name: u.Username, uid: uint32(uid), gid: uint32(gid)}, nil
}

// bouncerDir makes PgBouncer's directory (its configuration and its socket) in a short temporary
// directory, since a unix socket's path is limited to about 100 bytes.
func bouncerDir(owner *bouncerOwner) (string, error) {
	root := os.TempDir()
	if len(root) > 60 {
		root = "/tmp"
	}
	removeStaleBouncerDirs(root)
	dir, err := os.MkdirTemp(root, bouncerDirPrefix)
	if err != nil {
		return "", fmt.Errorf("pgtest: create PgBouncer's directory: %w (set TMPDIR to a short writable directory)", err)
	}
	if err := os.WriteFile(filepath.Join(dir, bouncerOwnerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("pgtest: write %s: %w", bouncerOwnerFile, err)
	}
	if owner != nil {
		if err := os.Chown(dir, int(owner.uid), int(owner.gid)); err != nil {
			return "", fmt.Errorf("pgtest: hand %s to the OS user %s: %w", dir, owner.name, err)
		}
	}
	return dir, nil
}

const (
	bouncerDirPrefix = "pgbouncer-"
	// bouncerOwnerFile holds the pid of the test binary that made the directory.
	bouncerOwnerFile = "owner.pid"
)

// removeStaleBouncerDirs removes the directories of Bouncers whose test binary is gone: one killed
// with SIGKILL cleans nothing up (its pgbouncer dies with it). Best effort.
func removeStaleBouncerDirs(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, bouncerDirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, bouncerOwnerFile))
		if err != nil {
			continue // not ours, or not written yet
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

// writeBouncerFiles writes pgbouncer.ini and the auth file that lets the DSN's user in, and returns
// the path of pgbouncer.ini.
func writeBouncerFiles(dir string, cc *pgconn.Config, settings [][2]string, owner *bouncerOwner) (string, error) {
	var ini strings.Builder
	// Any database name goes to the same server; PgBouncer logs in as the client's user, with the
	// password from the auth file when the server asks for one.
	fmt.Fprintf(&ini, "[databases]\n* = host=%s port=%d\n\n[pgbouncer]\n", iniValue(cc.Host), cc.Port)
	fmt.Fprintf(&ini, "unix_socket_dir = %s\nlisten_port = %d\nauth_file = %s\n", dir, bouncerPort, filepath.Join(dir, "users.txt"))
	for _, kv := range settings {
		if !bouncerSettingName.MatchString(kv[0]) || kv[0] == "listen_port" || kv[0] == "unix_socket_dir" || strings.ContainsAny(kv[1], "\n\r") {
			return "", fmt.Errorf("pgtest: Bouncer: bad setting %q = %q", kv[0], kv[1])
		}
		fmt.Fprintf(&ini, "%s = %s\n", kv[0], kv[1])
	}
	users := fmt.Sprintf("%s %s\n", authQuote(cc.User), authQuote(cc.Password))
	files := map[string]string{"pgbouncer.ini": ini.String(), "users.txt": users}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return "", fmt.Errorf("pgtest: write %s: %w", path, err)
		}
		if owner != nil {
			if err := os.Chown(path, int(owner.uid), int(owner.gid)); err != nil {
				return "", fmt.Errorf("pgtest: hand %s to the OS user %s: %w", path, owner.name, err)
			}
		}
	}
	return filepath.Join(dir, "pgbouncer.ini"), nil
}

// iniValue quotes a connection-string value in the [databases] section when it needs it.
func iniValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " '\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// authQuote quotes a name or password for PgBouncer's auth file, which doubles quotes.
func authQuote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// bouncer is one running pgbouncer process.
type bouncer struct {
	cmd    *exec.Cmd
	port   int
	log    *bouncerLog
	exited chan struct{} // closed once cmd.Wait returns
	err    error         // cmd.Wait's result, set before exited closes
}

// startBouncer runs pgbouncer in the foreground and waits for its socket.
func startBouncer(bin, ini, dir string, owner *bouncerOwner) (*bouncer, error) {
	b := &bouncer{port: bouncerPort, log: &bouncerLog{}, exited: make(chan struct{})}
	b.cmd = exec.Command(bin, ini)
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	b.cmd.SysProcAttr = bouncerProcAttr(owner)
	started := make(chan error, 1)
	go func() {
		// A parent-death signal fires when the starting OS thread exits, so this thread must outlive pgbouncer.
		runtime.LockOSThread()
		if err := b.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		b.err = b.cmd.Wait()
		close(b.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("pgtest: start %s: %w", bin, err)
	}
	socket := filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(b.port))
	deadline := time.After(bouncerStartTimeout)
	for {
		// The socket file appears before PgBouncer listens on it: only a connection says it is ready.
		if c, err := net.Dial("unix", socket); err == nil {
			_ = c.Close()
			return b, nil
		}
		select {
		case <-b.exited:
			return nil, fmt.Errorf("pgtest: %s exited at startup (%v); its output:\n%s", bin, b.err, b.log.tail())
		case <-deadline:
			_ = b.stop()
			return nil, fmt.Errorf("pgtest: %s did not listen on %s within %v; its output:\n%s", bin, socket, bouncerStartTimeout, b.log.tail())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// stop shuts PgBouncer down at once: SIGTERM twice (before 1.23 the first is an immediate shutdown;
// from 1.23 the first waits for clients and the second is immediate), then SIGKILL.
func (b *bouncer) stop() error {
	for range 2 {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-b.exited:
		return nil
	case <-time.After(bouncerStopTimeout):
	}
	_ = b.cmd.Process.Kill()
	<-b.exited
	return fmt.Errorf("pgtest: pgbouncer (pid %d) did not stop within %v of SIGTERM and was killed", b.cmd.Process.Pid, bouncerStopTimeout)
}

// bouncerLog keeps the end of PgBouncer's log, for error messages.
type bouncerLog struct {
	mu  sync.Mutex
	buf []byte
}

const bouncerLogBytes = 8192

func (l *bouncerLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) > 2*bouncerLogBytes {
		l.buf = append(l.buf[:0:0], l.buf[len(l.buf)-bouncerLogBytes:]...)
	}
	return len(p), nil
}

func (l *bouncerLog) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf
	if len(b) > bouncerLogBytes {
		b = b[len(b)-bouncerLogBytes:]
	}
	return strings.TrimRight(string(b), "\n")
}
