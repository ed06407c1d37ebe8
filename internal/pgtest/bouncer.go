package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgdual/mylib/internal/proc"
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

// bouncerDirs are the Bouncers' directories, each holding pgbouncer.ini, the auth file and the socket.
var bouncerDirs = proc.Kind{Prefix: "pgbouncer-", Socket: ".s.PGSQL." + strconv.Itoa(bouncerPort)}

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
	owner, err := proc.DropRoot("PgBouncer")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// A short directory: a unix socket's path is limited to about 100 bytes.
	dir, err := bouncerDirs.NewDir([]string{os.TempDir(), "/tmp"}, owner)
	if err != nil {
		t.Fatalf("pgtest: PgBouncer's directory: %v", err)
	}
	t.Cleanup(func() { _ = bouncerDirs.Remove(dir) })

	ini, err := writeBouncerFiles(dir, cc, cfg.settings)
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Own(dir); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	log := proc.NewLog(nil)
	ctx, cancel := context.WithTimeout(context.Background(), bouncerStartTimeout)
	defer cancel()
	socket := filepath.Join(dir, bouncerDirs.Socket)
	p, err := proc.Start(ctx, proc.Command{
		Path: bin, Args: []string{ini}, Home: dir, User: owner, Log: log,
		// The socket file appears before PgBouncer listens on it: only a connection says it is ready.
		Ready: func(ctx context.Context) error {
			c, err := (&net.Dialer{}).DialContext(ctx, "unix", socket)
			if err == nil {
				_ = c.Close()
			}
			return err
		},
		ReadyEvery: 5 * time.Millisecond,
		// Before 1.23 the first SIGTERM is an immediate shutdown; from 1.23 the first waits for clients
		// and the second is immediate.
		Shutdown: []os.Signal{syscall.SIGTERM, syscall.SIGTERM},
		Grace:    bouncerStopTimeout,
	})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: the end of PgBouncer's log:\n%s", log.Tail())
		}
		if err := p.Stop(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return bouncerDSN(dsn, dir, bouncerPort)
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
	return SetParam(reroute(dsn, dir, strconv.Itoa(port)), "sslmode", "disable")
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

// writeBouncerFiles writes pgbouncer.ini and the auth file that lets the DSN's user in, and returns
// the path of pgbouncer.ini.
func writeBouncerFiles(dir string, cc *pgconn.Config, settings [][2]string) (string, error) {
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
