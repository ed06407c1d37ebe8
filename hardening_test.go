package mylib_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/probe"
)

// workload inserts the probe's rows from several goroutines until stop is
// closed and remembers every row the library acknowledged.
type workload struct {
	mu    sync.Mutex
	acked map[int64]string
	errs  atomic.Int64
	ok    atomic.Int64
}

func runWorkload(ctx context.Context, c *mylib.Client, workers int, stop <-chan struct{}) (*workload, *sync.WaitGroup) {
	w := &workload{acked: map[int64]string{}}
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d", i, n)
				callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				id, err := mylib.ProbeInsert(callCtx, c, nil, key)
				cancel()
				if err != nil {
					w.errs.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				w.ok.Add(1)
				w.mu.Lock()
				w.acked[id] = key
				w.mu.Unlock()
			}
		}()
	}
	return w, &wg
}

// requireAllAcked checks that every acknowledged write is in the database.
func (w *workload) requireAllAcked(t *testing.T, pool *pgxpool.Pool, schema string) {
	t.Helper()
	rows, err := pool.Query(context.Background(), fmt.Sprintf("SELECT id, key FROM %s", pgx.Identifier{schema, probe.Table}.Sanitize()))
	require.NoError(t, err)
	stored := map[int64]string{}
	var id int64
	var key string
	_, err = pgx.ForEachRow(rows, []any{&id, &key}, func() error { stored[id] = key; return nil })
	require.NoError(t, err)
	w.mu.Lock()
	defer w.mu.Unlock()
	require.NotEmpty(t, w.acked)
	for id, key := range w.acked {
		require.Equal(t, key, stored[id], "acknowledged row %d is stored", id)
	}
}

func TestFaults_TerminatedBackendsLoseNothingCommitted(t *testing.T) {
	t.Parallel()
	eachModeOn(t, probeDSN, func(t *testing.T, m mode, dsn string) {
		ctx := context.Background()
		app := "fault_" + m.name
		c := mustOpen(t, m, withApp(t, dsn, app), "audit", mylib.WithProbe)
		admin := pgtest.Pool(t, dsn)

		stop := make(chan struct{})
		w, wg := runWorkload(ctx, c, 4, stop)
		var killed int64
		for range 5 {
			time.Sleep(60 * time.Millisecond)
			var n int64
			require.NoError(t, admin.QueryRow(ctx,
				"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()", app).Scan(&n))
			killed += n
		}
		time.Sleep(100 * time.Millisecond)
		close(stop)
		wg.Wait()
		require.Positive(t, killed, "backends were terminated under load")

		// Later calls succeed.
		_, err := mylib.ProbeInsert(ctx, c, nil, "after")
		require.NoError(t, err)
		w.requireAllAcked(t, admin, "audit")
		t.Logf("%s: %d writes acknowledged, %d failed while %d backends were terminated", m.name, w.ok.Load(), w.errs.Load(), killed)
	})
}

func TestFaults_ServerRestartMidWorkload(t *testing.T) {
	t.Parallel()
	srv, dsn := pgtest.Restartable(t)
	ctx := context.Background()
	c, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema("audit"), mylib.WithProbe)
	require.NoError(t, err)
	defer c.Close()

	stop := make(chan struct{})
	w, wg := runWorkload(ctx, c, 4, stop)
	time.Sleep(150 * time.Millisecond)
	require.NoError(t, srv.Restart(ctx))
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	_, err = mylib.ProbeInsert(ctx, c, nil, "after")
	require.NoError(t, err, "calls after the restart succeed")
	pool := pgtest.Pool(t, dsn)
	w.requireAllAcked(t, pool, "audit")
	t.Logf("%d writes acknowledged, %d failed across the restart", w.ok.Load(), w.errs.Load())
}

func TestClose_UnderLoad(t *testing.T) {
	t.Parallel()
	dsn := probeDSN(t)
	ctx := context.Background()
	const app = "close_load"
	c, err := mylib.New(ctx, mylib.WithDSN(withApp(t, dsn, app)), mylib.WithSchema("audit"), mylib.WithProbe)
	require.NoError(t, err)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var unexpected atomic.Value
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if i%2 == 0 {
					_, err = mylib.ProbeInsert(ctx, c, nil, "c")
				} else {
					_, err = mylib.ProbeCount(ctx, c, "c")
				}
				if err != nil && !errors.Is(err, mylib.ErrClosed) {
					unexpected.Store(err)
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	c.Close()
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	if err, _ := unexpected.Load().(error); err != nil {
		t.Fatalf("a call in flight during Close returned an error that is not ErrClosed: %v", err)
	}
	_, err = mylib.ProbeCount(ctx, c, "c")
	require.ErrorIs(t, err, mylib.ErrClosed)
	require.Eventually(t, func() bool { return backends(t, dsn, app) == 0 }, 5*time.Second, 20*time.Millisecond, "no connection leaked")
}

func TestPrivilege_RoleThatOwnsOnlyItsSchema(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	admin := pgtest.Pool(t, dsn)
	var db string
	require.NoError(t, admin.QueryRow(ctx, "SELECT current_database()").Scan(&db))
	// The grants a host needs: a role, and a schema it owns. No superuser, no
	// CREATE on the database. Role names are per server, so they carry the
	// database's name.
	auditRole, otherRole := db+"_audit", db+"_other"
	for _, stmt := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw'", auditRole),
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw'", otherRole),
		fmt.Sprintf("CREATE SCHEMA audit AUTHORIZATION %s", auditRole),
		fmt.Sprintf("CREATE SCHEMA other AUTHORIZATION %s", otherRole),
	} {
		_, err := admin.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	t.Cleanup(func() {
		for _, r := range []string{auditRole, otherRole} {
			_, _ = admin.Exec(context.Background(), fmt.Sprintf("DROP OWNED BY %s CASCADE", r))
			_, _ = admin.Exec(context.Background(), fmt.Sprintf("DROP ROLE IF EXISTS %s", r))
		}
	})
	poolAs := func(role string) *pgxpool.Pool {
		return pgtest.Pool(t, dsn, func(c *pgxpool.Config) { c.ConnConfig.User, c.ConnConfig.Password = role, "pw" })
	}
	auditPool, otherPool := poolAs(auditRole), poolAs(otherRole)
	var super, canCreate bool
	require.NoError(t, auditPool.QueryRow(ctx, "SELECT rolsuper, has_database_privilege(current_database(), 'CREATE') FROM pg_roles WHERE rolname = current_user").Scan(&super, &canCreate))
	require.False(t, super)
	require.False(t, canCreate)

	a, err := mylib.New(ctx, mylib.WithManager(host{auditPool, "audit"}), mylib.WithProbe)
	require.NoError(t, err, "a role owning only its schema runs the library embedded")
	defer a.Close()
	b, err := mylib.New(ctx, mylib.WithManager(host{otherPool, "other"}), mylib.WithProbe)
	require.NoError(t, err)
	defer b.Close()
	_, err = mylib.ProbeInsert(ctx, a, nil, "c")
	require.NoError(t, err)

	_, err = auditPool.Exec(ctx, "SELECT * FROM other."+probe.Table)
	require.ErrorContains(t, err, "permission denied", "one library's role cannot read another's schema")

	_, err = mylib.New(ctx, mylib.WithManager(host{auditPool, "elsewhere"}), mylib.WithProbe)
	require.ErrorContains(t, err, "permission denied", "a role without CREATE on the database cannot make a schema")
	require.ErrorContains(t, err, "CREATE on the database")
}
