package jobs_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/acme/jobs"
)

// Workers claiming at once take each job exactly once.
func TestClaim_EachJobOnce(t *testing.T) {
	t.Parallel()
	c := mustOpen(t, modes[0], migratedDSN(t), "audit")
	ctx := t.Context()
	const n = 40
	for range n {
		_, err := c.Enqueue(ctx, "send-email", []byte(`{"to": "alice"}`))
		require.NoError(t, err)
	}
	var mu sync.Mutex
	claimed := map[int64]int{}
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for w := range errs {
		wg.Go(func() {
			for {
				job, ok, err := c.Claim(ctx)
				if err != nil || !ok {
					errs[w] = err
					return
				}
				mu.Lock()
				claimed[job.ID]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, claimed, n)
	for id, times := range claimed {
		require.Equal(t, 1, times, "job %d", id)
	}
	_, err := c.Enqueue(ctx, "", nil)
	require.ErrorIs(t, err, jobs.ErrInvalidArgument)
}

// Grants gives a runtime role what Enqueue and Claim need, and no more.
func TestGrants_RuntimeRoleNeedsEveryGrantAndNoMore(t *testing.T) {
	t.Parallel()
	requireLeastGrants(t, migratedDSN(t), jobs.Grants, func(ctx context.Context, pool *pgxpool.Pool) error {
		c, err := jobs.New(ctx, jobs.WithManager(host{pool, "audit"}), jobs.WithLogger(quietLogger()))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Enqueue(ctx, "send-email", nil); err != nil {
			return err
		}
		_, _, err = c.Claim(ctx)
		return err
	})
}
