package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// prefix starts the name of every database pgtest creates, so it never touches anyone else's.
	prefix = "pgtest_"
	// templateFormat is part of every template name: change it when templates are built differently,
	// so servers shared across runs do not reuse old ones.
	templateFormat = "1"

	templateTimeout = 10 * time.Minute // a template's setup runs migrations, and may wait for another binary's
	createTimeout   = time.Minute
	inUseRetry      = 20 * time.Millisecond
	inUseTimeout    = 10 * time.Second
)

// SetupFunc prepares a template database, reached with dsn, for [TemplateDSN].
type SetupFunc = func(ctx context.Context, dsn string) error

// execer is what an admin pool and an admin connection both do.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// templateNames returns the names of the template for key and of the database it is built in.
func templateNames(key string) (template, build string) {
	sum := sha256.Sum256([]byte(templateFormat + "\x00" + key))
	h := hex.EncodeToString(sum[:10])
	return prefix + "tpl_" + h, prefix + "build_" + h
}

// template returns the name of the template database for key, building it on first use in this binary.
func (b *backend) template(key string, setup SetupFunc) (string, error) {
	build := sync.OnceValues(func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), templateTimeout)
		defer cancel()
		return b.buildTemplate(ctx, key, setup)
	})
	once, _ := b.templates.LoadOrStore(key, build)
	return once.(func() (string, error))()
}

// buildTemplate makes the template for key unless the server has it already (from an earlier run, or
// another test binary). Builders take an advisory lock, so only one builds; the template appears under
// its name, marked datistemplate, only once setup succeeded, so a marked template is a complete one.
func (b *backend) buildTemplate(ctx context.Context, key string, setup SetupFunc) (string, error) {
	name, build := templateNames(key)
	if ok, err := isTemplate(ctx, b.admin, name); err != nil || ok {
		return name, err
	}
	// A connection of its own, not the pool's: closing it releases the lock whatever happens.
	conn, err := pgx.Connect(ctx, b.adminDSN)
	if err != nil {
		return "", fmt.Errorf("pgtest: connect to build template %s: %w", name, err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	sum := sha256.Sum256([]byte("pgtest lock " + name))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(binary.BigEndian.Uint64(sum[:8]))); err != nil {
		return "", fmt.Errorf("pgtest: lock template %s: %w", name, err)
	}
	if ok, err := isTemplate(ctx, conn, name); err != nil || ok {
		return name, err
	}
	// Whatever is left under these names comes from a build that died half way.
	for _, db := range []string{name, build} {
		if err := b.dropTemplate(ctx, conn, db); err != nil {
			return "", err
		}
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident(build)+" TEMPLATE template0"); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", build, err)
	}
	if setup != nil {
		if err := setup(ctx, ConnDSN(b.adminDSN, build)); err != nil {
			return "", errors.Join(fmt.Errorf("pgtest: set up template %s: %w", name, err), b.drop(ctx, conn, build))
		}
	}
	// Nobody may stay connected to a template, or cloning it fails; setup may have left connections open.
	err = retryInUse(ctx, func() error {
		if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "+
			"WHERE datname = $1 AND pid <> pg_backend_pid()", build); err != nil {
			return err
		}
		_, err := conn.Exec(ctx, "ALTER DATABASE "+ident(build)+" RENAME TO "+ident(name))
		return err
	})
	if err != nil {
		return "", errors.Join(fmt.Errorf("pgtest: rename %s to %s: %w", build, name, err), b.drop(ctx, conn, build))
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(name)+" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"); err != nil {
		return "", fmt.Errorf("pgtest: mark %s as a template: %w", name, err)
	}
	return name, nil
}

func isTemplate(ctx context.Context, q execer, name string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", name).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("pgtest: look up database %s: %w", name, err)
	}
	return ok, nil
}

// createDatabase clones template into a new database named after the test.
func (b *backend) createDatabase(ctx context.Context, testName, template string) (string, error) {
	name := databaseName(testName)
	err := retryInUse(ctx, func() error {
		_, err := b.admin.Exec(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(template))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("pgtest: create database %s from template %s: %w", name, template, err)
	}
	return name, nil
}

// drop drops a database, ending its sessions first.
func (b *backend) drop(ctx context.Context, q execer, name string) error {
	var err error
	if b.version >= 130000 {
		_, err = q.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
	} else {
		err = retryInUse(ctx, func() error {
			if _, err := q.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name); err != nil {
				return err
			}
			_, err := q.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name))
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("pgtest: drop database %s: %w", name, err)
	}
	return nil
}

// dropTemplate drops a database that may be marked as a template (PostgreSQL refuses to drop those).
func (b *backend) dropTemplate(ctx context.Context, q execer, name string) error {
	ok, err := isTemplate(ctx, q, name)
	if err != nil {
		return err
	}
	if ok {
		if _, err := q.Exec(ctx, "ALTER DATABASE "+ident(name)+" WITH IS_TEMPLATE false"); err != nil {
			return fmt.Errorf("pgtest: unmark template %s: %w", name, err)
		}
	}
	return b.drop(ctx, q, name)
}

// retryInUse runs f until it does not fail with "database is being accessed by other users", which
// lasts only while sessions that were just ended finish exiting.
func retryInUse(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(inUseTimeout)
	for {
		err := f()
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(inUseRetry):
		}
	}
}

// databaseName makes a new database name that shows which test it belongs to:
// pgtest_testfoo_subtest_1a2b3c4d5e6f.
func databaseName(testName string) string {
	var slug strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			slug.WriteRune(r)
		case slug.Len() > 0 && !strings.HasSuffix(slug.String(), "_"):
			slug.WriteByte('_')
		}
		if slug.Len() >= 30 {
			break
		}
	}
	random := make([]byte, 6)
	_, _ = rand.Read(random)
	return prefix + strings.TrimSuffix(slug.String(), "_") + "_" + hex.EncodeToString(random)
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }
