package mylib_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
)

// everyMethod calls each of the library's methods once on a Client of
// pool's, schema audit, and returns the first error.
func everyMethod(ctx context.Context, pool *pgxpool.Pool) error {
	c, err := mylib.New(ctx, mylib.WithManager(host{pool, "audit"}), mylib.WithLogger(quietLogger()))
	if err != nil {
		return fmt.Errorf("New: %w", err)
	}
	defer c.Close()
	old := time.Now().Add(-time.Hour)
	// Subjects new to the schema every time: Record creates them.
	one, two := fmt.Sprintf("order:%d", time.Now().UnixNano()), fmt.Sprintf("order:%d", time.Now().UnixNano()+1)
	steps := []struct {
		name string
		run  func() error
	}{
		{"Record", func() error {
			_, err := c.Record(ctx, mylib.Event{Actor: "a", Action: "create", Subject: one})
			return err
		}},
		{"RecordTx", func() error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, err := c.RecordTx(ctx, tx, mylib.Event{Actor: "a", Action: "pay", Subject: two, At: old})
				return err
			})
		}},
		{"List", func() error {
			page, err := c.List(ctx, one, 1, nil)
			if err == nil && page.Next != nil {
				_, err = c.List(ctx, one, 1, page.Next)
			}
			return err
		}},
		{"Count", func() error {
			_, err := c.Count(ctx, one)
			return err
		}},
		{"PurgeTx", func() error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, err := c.PurgeTx(ctx, tx, old.Add(time.Minute))
				return err
			})
		}},
		{"Purge", func() error {
			_, err := c.Purge(ctx, time.Now().Add(time.Hour))
			return err
		}},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// The least a runtime role needs is found, not guessed: with exactly what
// Grants gives, New and every method work and the role can change nothing
// in the schema; without any one of the grants, something fails.
func TestGrants_RuntimeRoleNeedsEveryGrantAndNoMore(t *testing.T) {
	t.Parallel()
	dsn := migratedDSN(t)
	admin := pgtest.Pool(t, dsn)
	role, roleDSN := pgtest.Role(t, dsn, "runtime")
	stmts, err := mylib.Grants("audit", role)
	require.NoError(t, err)
	for _, s := range stmts {
		_, err := admin.Exec(t.Context(), s)
		require.NoError(t, err, s)
	}
	pool := pgtest.Pool(t, roleDSN)
	require.NoError(t, everyMethod(t.Context(), pool), "with exactly the grants")

	for _, ddl := range []string{"CREATE TABLE audit.t (id int)", "ALTER TABLE audit.events ADD COLUMN x int", "DROP TABLE audit.subjects",
		"TRUNCATE audit.events", "UPDATE audit.subjects SET name = 'x'", "DELETE FROM audit.mylib_goose_checksums", "INSERT INTO audit.mylib_goose_db_version (version_id, is_applied) VALUES (9, true)"} {
		_, err := pool.Exec(t.Context(), ddl)
		require.Error(t, err, "the runtime role must not: %s", ddl)
		require.Regexp(t, "permission denied|must be owner", err.Error(), ddl)
	}

	// Each GRANT, taken back alone, breaks something. (The default
	// privileges concern tables not made yet: TestGrant in cmd checks them.)
	for _, s := range stmts {
		if strings.HasPrefix(s, "ALTER DEFAULT PRIVILEGES") {
			continue
		}
		on, _ := strings.CutPrefix(s, "GRANT ")
		what, target, _ := strings.Cut(on, " ON ")
		for _, priv := range strings.Split(what, ", ") {
			t.Run(priv+" ON "+strings.TrimSuffix(target, " TO "+pgx.Identifier{role}.Sanitize()), func(t *testing.T) {
				revoke := fmt.Sprintf("REVOKE %s ON %s FROM %s", priv, strings.TrimSuffix(target, " TO "+pgx.Identifier{role}.Sanitize()), pgx.Identifier{role}.Sanitize())
				_, err := admin.Exec(t.Context(), revoke)
				require.NoError(t, err, revoke)
				err = everyMethod(t.Context(), pgtest.Pool(t, roleDSN))
				_, rerr := admin.Exec(t.Context(), strings.Replace(strings.Replace(revoke, "REVOKE", "GRANT", 1), " FROM ", " TO ", 1))
				require.NoError(t, rerr)
				require.Error(t, err, "without %s the role should not be able to do everything: the grant is not needed", priv)
				require.ErrorContains(t, err, "permission denied")
			})
		}
	}
}
