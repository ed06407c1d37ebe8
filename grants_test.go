package mylib_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
)

// The least a runtime role needs is found, not guessed: with exactly what
// Grants gives for a library's tables (here the probe's), New and the
// statements on them work and the role can change nothing in the schema;
// without any one of the grants, something fails. privileges_test.go checks
// the domain's privileges the same way.
func TestGrants_ProbeRoleNeedsEveryGrantAndNoMore(t *testing.T) {
	t.Parallel()
	requireLeastGrants(t, probeDSN(t), mylib.ProbeGrants, func(ctx context.Context, pool *pgxpool.Pool) error {
		c, err := mylib.New(ctx, mylib.WithManager(host{pool, "audit"}), mylib.WithLogger(quietLogger()), mylib.WithProbe)
		if err != nil {
			return fmt.Errorf("New: %w", err)
		}
		defer c.Close()
		if _, err := mylib.ProbeInsert(ctx, c, nil, "a"); err != nil {
			return err
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := mylib.ProbeInsert(ctx, c, tx, "b")
			return err
		}); err != nil {
			return err
		}
		_, err = mylib.ProbeCount(ctx, c, "a")
		return err
	})
}

// requireLeastGrants gives a new role what grantsOf returns for the schema
// audit of dsn's database, which is migrated, and checks that use, given a
// pool of that role, works; that the role can create, alter, drop, truncate
// nothing in the schema, nor run the statements forbidden; and that use
// fails with "permission denied" without any one of the grants.
func requireLeastGrants(t *testing.T, dsn string, grantsOf func(schema, role string) ([]string, error),
	use func(ctx context.Context, pool *pgxpool.Pool) error, forbidden ...string) {
	t.Helper()
	admin := pgtest.Pool(t, dsn)
	role, roleDSN := pgtest.Role(t, dsn, "runtime")
	stmts, err := grantsOf("audit", role)
	require.NoError(t, err)
	for _, s := range stmts {
		_, err := admin.Exec(t.Context(), s)
		require.NoError(t, err, s)
	}
	pool := pgtest.Pool(t, roleDSN)
	require.NoError(t, use(t.Context(), pool), "with exactly the grants")

	denied := append([]string{"CREATE TABLE audit.t (id int)",
		"DELETE FROM audit.mylib_goose_checksums", "INSERT INTO audit.mylib_goose_db_version (version_id, is_applied) VALUES (9, true)"}, forbidden...)
	for _, table := range tables(t, dsn, "audit") {
		name := pgx.Identifier{"audit", table}.Sanitize()
		denied = append(denied, "ALTER TABLE "+name+" ADD COLUMN x int", "DROP TABLE "+name, "TRUNCATE "+name)
	}
	for _, ddl := range denied {
		_, err := pool.Exec(t.Context(), ddl)
		require.Error(t, err, "the runtime role must not: %s", ddl)
		require.Regexp(t, "permission denied|must be owner", err.Error(), ddl)
	}

	// Each GRANT, taken back alone, breaks something. (The default
	// privileges concern tables not made yet: TestGrant in cmd checks them.)
	to := " TO " + pgx.Identifier{role}.Sanitize()
	for _, s := range stmts {
		if strings.HasPrefix(s, "ALTER DEFAULT PRIVILEGES") {
			continue
		}
		on, _ := strings.CutPrefix(s, "GRANT ")
		what, target, _ := strings.Cut(on, " ON ")
		target = strings.TrimSuffix(target, to)
		for _, priv := range strings.Split(what, ", ") {
			t.Run(priv+" ON "+target, func(t *testing.T) {
				revoke := fmt.Sprintf("REVOKE %s ON %s FROM %s", priv, target, pgx.Identifier{role}.Sanitize())
				_, err := admin.Exec(t.Context(), revoke)
				require.NoError(t, err, revoke)
				err = use(t.Context(), pgtest.Pool(t, roleDSN))
				_, rerr := admin.Exec(t.Context(), strings.Replace(strings.Replace(revoke, "REVOKE", "GRANT", 1), " FROM ", " TO ", 1))
				require.NoError(t, rerr)
				require.Error(t, err, "without %s the role should not be able to do everything: the grant is not needed", priv)
				require.ErrorContains(t, err, "permission denied")
			})
		}
	}
}
