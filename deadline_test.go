package mylib_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/migratetest"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/probe"
)

// A caller's deadline ends New wherever it strikes: while connecting, waiting
// for the lock, creating the schema, mid-file, committing. New returns
// promptly, its error wraps context.DeadlineExceeded and nothing else a host
// acts on, and it leaves nothing behind: the next New on the same schema
// migrates, and no lock or open transaction remains.
func TestNew_DeadlinesWhereverTheyStrike(t *testing.T) {
	const deadlines = 200
	for _, m := range []string{"standalone", "embedded"} {
		t.Run(m, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.DSN(t)
			deadlineLoop(t, m, dsn, deadlines)
		})
	}
}

// inTransaction are the probe's files that run in a transaction. A deadline
// inside its NO TRANSACTION file leaves that file's lease behind, and the
// next New on the schema waits it out (up to 15 s).
const inTransaction = 2

func deadlineLoop(t *testing.T, m, dsn string, deadlines int) {
	hostPool := pgtest.Pool(t, dsn)
	files := mylib.WithMigrationFiles(probe.UpTo(inTransaction))
	open := func(ctx context.Context, schema string) (*mylib.Client, error) {
		if m == "standalone" {
			return mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema(schema), mylib.WithLogger(quietLogger()), files)
		}
		return mylib.New(ctx, mylib.WithManager(host{hostPool, schema}), mylib.WithLogger(quietLogger()), files)
	}
	{
		var late []time.Duration
		for i := range deadlines {
			schema := fmt.Sprintf("s_%03d", i)
			d := time.Millisecond + time.Duration(i)*99*time.Millisecond/time.Duration(deadlines-1)
			ctx, cancel := context.WithTimeout(context.Background(), d)
			deadline, _ := ctx.Deadline()
			c, err := open(ctx, schema)
			returned := time.Now()
			cancel()
			if err == nil {
				c.Close()
				continue
			}
			require.ErrorIs(t, err, context.DeadlineExceeded, "deadline %v", d)
			for _, not := range []error{mylib.ErrMigrationFailed, mylib.ErrNotMigrated, mylib.ErrLockLost, context.Canceled} {
				require.NotErrorIs(t, err, not, "deadline %v: %v", d, err)
			}
			// Retryable only if it waited for another session before the
			// deadline: a lock (on a loaded machine, the schema's name, which
			// a start that an earlier deadline ended held until its server
			// noticed) or a conflict; the error then says which.
			if errors.Is(err, mylib.ErrRetryable) {
				require.Regexp(t, "ran out of lock_timeout|deadlock or serialization conflict", err.Error(), "deadline %v", d)
			}
			require.NotContains(t, err.Error(), "CREATE on the database", "no unrelated hint")
			late = append(late, returned.Sub(deadline))
		}
		// Every schema opens now, whatever the deadline left it with.
		var wg sync.WaitGroup
		errs := make([]error, deadlines)
		slots := make(chan struct{}, 8)
		for i := range deadlines {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				c, err := open(context.Background(), fmt.Sprintf("s_%03d", i))
				if err == nil {
					c.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "the New after a deadline, on s_%03d", i)
		}
		watch := pgtest.Pool(t, dsn)
		require.Eventually(t, func() bool { return settled(t, watch) }, 10*time.Second, 10*time.Millisecond,
			"no migration lock and no open transaction left")
		migratetest.RequireMigratedOnce(t, watch, "s_199", inTransaction)

		slices.Sort(late)
		require.NotEmpty(t, late)
		p := func(q float64) time.Duration { return late[int(q*float64(len(late)-1))] }
		t.Logf("%s: %d of %d New calls ended by their deadline; returned after it by: median %v, p90 %v, max %v",
			m, len(late), deadlines, p(0.5), p(0.9), late[len(late)-1])
		require.Less(t, p(0.9), 50*time.Millisecond, "New returns within 50 ms of its deadline")
		require.Less(t, late[len(late)-1], 500*time.Millisecond, "even on a loaded machine")
	}
}
