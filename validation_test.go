package mylib_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
)

// ptrHost is a Manager with a pointer receiver, to pass a typed nil.
type ptrHost struct{ host }

func (h *ptrHost) Pool() *pgxpool.Pool { return h.pool }
func (h *ptrHost) Schema() string      { return h.schema }

func TestNew_BadInputIsRefusedWithNothingCreated(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	pool := pgtest.Pool(t, dsn)
	good := host{pool, "audit"}
	logger := mylib.WithLogger(nil)
	cases := []struct {
		name string
		opts []mylib.Option
		is   error
		says string
	}{
		{"no options", nil, mylib.ErrInvalidConfig, "pass WithDSN"},
		{"nil option", []mylib.Option{nil}, mylib.ErrInvalidConfig, "nil Option"},
		{"empty DSN", []mylib.Option{mylib.WithDSN("")}, mylib.ErrInvalidConfig, "empty DSN"},
		{"DSN twice", []mylib.Option{mylib.WithDSN(dsn), mylib.WithDSN(dsn)}, mylib.ErrInvalidConfig, "twice"},
		{"DSN and manager", []mylib.Option{mylib.WithDSN(dsn), mylib.WithManager(good)}, mylib.ErrInvalidConfig, "not both"},
		{"nil manager", []mylib.Option{mylib.WithManager(nil)}, mylib.ErrInvalidConfig, "nil manager"},
		{"typed nil manager", []mylib.Option{mylib.WithManager((*ptrHost)(nil))}, mylib.ErrInvalidConfig, "nil manager"},
		{"manager twice", []mylib.Option{mylib.WithManager(good), mylib.WithManager(good)}, mylib.ErrInvalidConfig, "twice"},
		{"manager with nil pool", []mylib.Option{mylib.WithManager(host{nil, "audit"})}, mylib.ErrInvalidConfig, "Pool() returned nil"},
		{"manager with empty schema", []mylib.Option{mylib.WithManager(host{pool, ""})}, mylib.ErrInvalidSchema, "empty"},
		{"manager and schema", []mylib.Option{mylib.WithManager(good), mylib.WithSchema("other")}, mylib.ErrInvalidConfig, "manager decides the schema"},
		{"manager and pool config", []mylib.Option{mylib.WithManager(good), mylib.WithPoolConfig(func(*pgxpool.Config) {})}, mylib.ErrInvalidConfig, "configures its own pool"},
		{"nil pool config", []mylib.Option{mylib.WithDSN(dsn), mylib.WithPoolConfig(nil)}, mylib.ErrInvalidConfig, "nil function"},
		{"nil logger", []mylib.Option{mylib.WithDSN(dsn), logger}, mylib.ErrInvalidConfig, "nil logger"},
		{"schema twice", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("a"), mylib.WithSchema("b")}, mylib.ErrInvalidConfig, "twice"},
		{"DSN with bad port", []mylib.Option{mylib.WithDSN("postgres://u@localhost:notaport/db")}, mylib.ErrInvalidConfig, "cannot be parsed"},
		{"DSN that is not one", []mylib.Option{mylib.WithDSN("this is not a dsn")}, mylib.ErrInvalidConfig, "cannot be parsed"},
		{"DSN with bad sslmode", []mylib.Option{mylib.WithDSN("postgres://u@localhost/db?sslmode=sometimes")}, mylib.ErrInvalidConfig, "cannot be parsed"},
		{"DSN with bad escape", []mylib.Option{mylib.WithDSN("postgres://u@localhost/d%zzb")}, mylib.ErrInvalidConfig, "cannot be parsed"},
		{"empty schema", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("")}, mylib.ErrInvalidSchema, "empty"},
		{"uppercase schema", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("Audit")}, mylib.ErrInvalidSchema, "lowercase"},
		{"schema starting with a digit", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("1audit")}, mylib.ErrInvalidSchema, "not starting with a digit"},
		{"pg_ schema", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("pg_audit")}, mylib.ErrInvalidSchema, "pg_"},
		{"pg_catalog from a manager", []mylib.Option{mylib.WithManager(host{pool, "pg_catalog"})}, mylib.ErrInvalidSchema, "pg_"},
		{"information_schema", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("information_schema")}, mylib.ErrInvalidSchema, "system schema"},
		{"schema with a dash", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("two-words")}, mylib.ErrInvalidSchema, "must match"},
		{"schema with a space", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("audit log")}, mylib.ErrInvalidSchema, "must match"},
		{"schema with a dot", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("audit.events")}, mylib.ErrInvalidSchema, "must match"},
		{"schema of 64 bytes", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema(strings.Repeat("a", 64))}, mylib.ErrInvalidSchema, "at most 63"},
		{"schema with SQL", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema(`audit"; DROP SCHEMA public; --`)}, mylib.ErrInvalidSchema, "must match"},
		{"non-ASCII schema", []mylib.Option{mylib.WithDSN(dsn), mylib.WithSchema("prüfung")}, mylib.ErrInvalidSchema, "must match"},
		{"uppercase schema from a manager", []mylib.Option{mylib.WithManager(host{pool, "Tenant"})}, mylib.ErrInvalidSchema, "lowercase"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := mylib.New(context.Background(), tc.opts...)
			require.Error(t, err)
			require.Nil(t, c)
			require.ErrorIs(t, err, tc.is)
			require.Contains(t, err.Error(), tc.says)
			require.True(t, strings.HasPrefix(err.Error(), "mylib: "), "errors say whose they are: %q", err)
			require.Empty(t, schemas(t, dsn), "nothing is created in the database")
		})
	}
	require.GreaterOrEqual(t, len(cases), 30)
}

func TestNew_UnreachableServerSaysSo(t *testing.T) {
	t.Parallel()
	_, err := mylib.New(context.Background(), mylib.WithDSN("postgres://u:pw@127.0.0.1:1/db?connect_timeout=2"))
	require.ErrorContains(t, err, "cannot reach the database")
	require.NotErrorIs(t, err, mylib.ErrMigration)
	require.True(t, strings.HasPrefix(err.Error(), "mylib: "))
}

// The migrator needs one connection: a host pool of one migrates an empty
// schema, and a second start finds it up to date.
func TestNew_PoolOfOneConnectionMigrates(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	one := pgtest.Pool(t, dsn, func(c *pgxpool.Config) { c.MaxConns = 1 })
	for range 2 {
		c, err := mylib.New(context.Background(), mylib.WithManager(host{one, "audit"}), mylib.WithProbe)
		require.NoError(t, err)
		_, err = mylib.ProbeInsert(context.Background(), c, nil, "c")
		require.NoError(t, err)
		c.Close()
	}
	require.Len(t, appliedVersions(t, dsn, "audit"), probeFiles)
}
