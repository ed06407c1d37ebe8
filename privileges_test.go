package mylib_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib"
)

// everyMethod calls each of the library's methods once on a Client of pool's
// in schema, and returns the first error.
func everyMethod(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	c, err := mylib.New(ctx, mylib.WithManager(host{pool, schema}), mylib.WithLogger(quietLogger()))
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

// The privileges the domain lists (privileges.go) are what its methods need,
// and no more: with what Grants gives, every method works and the role can
// change nothing; without any one grant, a method fails.
func TestGrants_RuntimeRoleNeedsEveryGrantAndNoMore(t *testing.T) {
	t.Parallel()
	requireLeastGrants(t, migratedDSN(t), mylib.Grants, func(ctx context.Context, pool *pgxpool.Pool) error {
		return everyMethod(ctx, pool, "audit")
	}, "UPDATE audit.subjects SET name = 'x'")
}
