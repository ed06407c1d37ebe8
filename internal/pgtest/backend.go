package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ory/dockertest/v3"
	"github.com/ory/dockertest/v3/docker"

	"github.com/pgdual/mylib/internal/pgtemp"
)

// backend is the server this test binary makes its databases on.
type backend struct {
	adminDSN  string        // the maintenance database, as a user who may create databases
	admin     *pgxpool.Pool // creates and drops the test databases
	version   int           // server_version_num
	stop      func() error  // stops a server this binary started; nil for TEST_DATABASE_URL
	note      string        // why an earlier way to get a server was passed over, told once
	noteOnce  sync.Once
	templates sync.Map // template key -> func() (string, error), building it once
}

const (
	openTimeout = 3 * time.Minute // the Docker fallback may pull an image
	pingTimeout = 2 * time.Second // how long a Docker daemon has to answer
	dockerImage = "postgres"
	dockerTag   = "16-alpine"
)

var (
	// current opens the backend on first use; every caller gets the same backend, or the same error.
	current = sync.OnceValues(openBackend)

	openedMu sync.Mutex
	opened   *backend // set once open, for Main to close
)

// unavailableError says that none of the three ways to get a server worked, and why.
type unavailableError struct{ reasons []string }

func (e *unavailableError) Error() string {
	return "pgtest: no PostgreSQL server for the tests. Provide one of:\n" +
		"  1. TEST_DATABASE_URL=postgres://user@host:5432/postgres?sslmode=disable, a server where the tests may create\n" +
		"     databases (they create and drop only databases named " + prefix + "*, and keep templates named " + prefix + "tpl_*);\n" +
		"  2. the PostgreSQL server binaries (initdb, postgres) on this machine: install the server package\n" +
		"     (apt-get install postgresql, brew install postgresql@16) or set PGTEMP_BIN to the directory that holds them;\n" +
		"  3. a running Docker daemon (DOCKER_HOST, or the default socket), to run " + dockerImage + ":" + dockerTag + ".\n" +
		"Why none was used:\n  - " + strings.Join(e.reasons, "\n  - ")
}

// openBackend finds a server: TEST_DATABASE_URL, else a pgtemp server, else a Docker container.
func openBackend() (*backend, error) {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()

	if dsn := os.Getenv("TEST_DATABASE_URL"); dsn != "" {
		b, err := connect(ctx, dsn, nil)
		if err != nil {
			return nil, fmt.Errorf("pgtest: the server in TEST_DATABASE_URL: %w; fix the URL or unset it to "+
				"use a throwaway local server", err)
		}
		return register(b), nil
	}
	reasons := []string{"TEST_DATABASE_URL is not set"}

	srv, err := pgtemp.Start(ctx)
	if err == nil {
		b, err := connect(ctx, srv.DSN(), srv.Stop)
		if err != nil {
			return nil, errors.Join(err, srv.Stop())
		}
		return register(b), nil
	}
	reasons = append(reasons, "local binaries: "+err.Error())

	b, err := startDocker(ctx)
	if err == nil {
		b.note = "pgtest: using a Docker container, since " + strings.Join(reasons, "; ")
		return register(b), nil
	}
	reasons = append(reasons, "Docker: "+err.Error())
	return nil, &unavailableError{reasons: reasons}
}

func register(b *backend) *backend {
	openedMu.Lock()
	defer openedMu.Unlock()
	opened = b
	return b
}

// closeBackend closes the admin pool and stops the server this binary started, if any.
func closeBackend() error {
	openedMu.Lock()
	b := opened
	opened = nil
	openedMu.Unlock()
	if b == nil {
		return nil
	}
	b.admin.Close()
	if b.stop == nil {
		return nil
	}
	return b.stop()
}

// connect opens the admin pool on dsn; stop is how Main stops the server, nil if it is not ours.
func connect(ctx context.Context, dsn string, stop func() error) (*backend, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// Not wrapped: pgx quotes the connection string, and it may hold a password.
		return nil, errors.New("not a valid connection string (postgres://user@host:port/database or host=... dbname=...)")
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	b := &backend{adminDSN: dsn, admin: pool, stop: stop}
	if err := pool.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&b.version); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	return b, nil
}

// startDocker runs a postgres container, if a Docker daemon answers quickly.
func startDocker(ctx context.Context) (*backend, error) {
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := pool.Client.PingWithContext(pingCtx); err != nil {
		return nil, fmt.Errorf("no Docker daemon answered at %s within %v: %w", pool.Client.Endpoint(), pingTimeout, err)
	}
	res, err := pool.RunWithOptions(&dockertest.RunOptions{
		Repository: dockerImage,
		Tag:        dockerTag,
		Env:        []string{"POSTGRES_HOST_AUTH_METHOD=trust"}, // no password to leak; the port is the test's alone
		Cmd: []string{"postgres", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "max_connections=200"},
		Labels: map[string]string{"pgtest": "true"},
	}, func(hc *docker.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = docker.RestartPolicy{Name: "no"}
	})
	if err != nil {
		return nil, fmt.Errorf("run %s:%s: %w", dockerImage, dockerTag, err)
	}
	purge := func() error { return pool.Purge(res) }
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", res.GetHostPort("5432/tcp"))
	pool.MaxWait = 90 * time.Second
	err = pool.Retry(func() error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("the %s:%s container did not accept connections: %w", dockerImage, dockerTag, err), purge())
	}
	b, err := connect(ctx, dsn, purge)
	if err != nil {
		return nil, errors.Join(err, purge())
	}
	return b, nil
}
