// Package mylibtest helps a host application test its code together with the
// library: each test gets a Client in a fresh schema of its own, on the test
// pool the host already has, and the schema is dropped when the test ends.
//
//	func TestSignup(t *testing.T) {
//		t.Parallel()
//		client := mylibtest.New(t, pool) // pool: the host's *pgxpool.Pool for tests
//		// ... run the host's code with client, then check with client's
//		// methods what the library keeps of it.
//	}
//
// Tests running in parallel on one pool never see each other's rows: each
// has its own schema, with its own tables and version table. The package
// starts no server and imports nothing but the library, pgx and the standard
// library: the host brings the database (a CI service, a local server, or the
// container or throwaway server its own tests already use).
package mylibtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib"
)

// SchemaPrefix starts the name of every schema New creates, so that schemas
// left by a test binary that was killed before its cleanup are easy to find
// and drop.
const SchemaPrefix = "mylibtest_"

// timeout bounds creating a schema (migrations included) and dropping it.
const timeout = time.Minute

// New returns a Client of the library in a new, empty schema on pool, with
// the library's migrations applied, as embedded mode opens it: the Client
// borrows pool and never closes it. opts may add options that embedded mode
// accepts, such as mylib.WithLogger.
//
// When the test ends, New's cleanup closes the Client and drops the schema
// with everything in it (DROP SCHEMA ... CASCADE). Keep pool open until then:
// open it in TestMain, or register its Close with t.Cleanup before calling
// New, not with defer in the test. Safe with t.Parallel(): every call has a
// schema of its own, named SchemaPrefix, part of the test's name, and random
// hex digits.
//
// On an error New ends the test with t.Fatal. Its cost is that of the
// migrations on an empty schema, tens of milliseconds.
func New(t testing.TB, pool *pgxpool.Pool, opts ...mylib.Option) *mylib.Client {
	t.Helper()
	if pool == nil {
		t.Fatal("mylibtest.New is given a nil pool: pass the *pgxpool.Pool the host's tests use")
	}
	schema, err := schemaName(t.Name())
	if err != nil {
		t.Fatal("mylibtest.New:", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client, err := mylib.New(ctx, append([]mylib.Option{mylib.WithManager(manager{pool, schema})}, opts...)...)
	if err != nil {
		// A failed start may leave a schema behind (migrations applied before
		// a failing one).
		t.Fatal(errors.Join(fmt.Errorf("mylibtest.New: %w", err), drop(pool, schema)))
	}
	t.Cleanup(func() {
		client.Close()
		if err := drop(pool, schema); err != nil {
			t.Error(err)
		}
	})
	return client
}

// manager lends the host's pool and the test's schema to the library.
type manager struct {
	pool   *pgxpool.Pool
	schema string
}

func (m manager) Pool() *pgxpool.Pool { return m.pool }
func (m manager) Schema() string      { return m.schema }

// drop removes schema and everything in it.
func drop(pool *pgxpool.Pool, schema string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		return fmt.Errorf("mylibtest: dropping the test's schema %s: %w (was the pool closed before the test's cleanup? close it after, with t.Cleanup registered before mylibtest.New, or in TestMain)", schema, err)
	}
	return nil
}

// notInName is what a test's name holds that a schema name cannot.
var notInName = regexp.MustCompile(`[^a-z0-9]+`)

// schemaName makes a schema name from a test's name: SchemaPrefix, the name
// lowercased with its other characters as underscores, cut to fit, and 12
// random hex digits. It is a valid schema name (^[a-z_][a-z0-9_]{0,62}$).
func schemaName(test string) (string, error) {
	var random [6]byte
	if _, err := rand.Read(random[:]); err != nil {
		return "", err
	}
	suffix := hex.EncodeToString(random[:])
	room := 63 - len(SchemaPrefix) - len(suffix) - 1
	part := strings.Trim(notInName.ReplaceAllString(strings.ToLower(test), "_"), "_")
	if len(part) > room {
		part = strings.TrimRight(part[:room], "_")
	}
	if part == "" {
		return SchemaPrefix + suffix, nil
	}
	return SchemaPrefix + part + "_" + suffix, nil
}
