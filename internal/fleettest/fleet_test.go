package fleettest

// A fleet: several OS processes, each opening several Clients at once on one
// empty schema, as a deployment of many replicas starts. Each member is this
// test binary run again with -test.run=^TestFleetMember$, given nothing but a
// DSN and a schema in its environment, reporting on stdout as JSON.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib"
	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/migratetest"
	"github.com/pgdual/mylib/internal/pgtest"
	"github.com/pgdual/mylib/internal/probe"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// What a member process is told, in its environment.
const (
	memberDSN     = "MYLIB_FLEET_DSN"
	memberSchema  = "MYLIB_FLEET_SCHEMA"
	memberClients = "MYLIB_FLEET_CLIENTS"
	// memberHold, a duration, makes the member migrate with a single file
	// that sleeps this long instead of opening Clients: it sits inside the
	// migration lock, to be killed there.
	memberHold = "MYLIB_FLEET_HOLD"
	// memberFiles makes the member migrate, instead of opening Clients,
	// with one of the sets of fileSets, and memberLease with that lease.
	memberFiles = "MYLIB_FLEET_FILES"
	memberLease = "MYLIB_FLEET_LEASE"

	reportPrefix = "fleet-member-report: "
)

// memberReport is what a member prints: one entry per Client it opened.
type memberReport struct {
	PID     int            `json:"pid"`
	Clients []clientReport `json:"clients"`
	// WallMS is from the member's first New to its last return.
	WallMS float64 `json:"wall_ms"`
}

type clientReport struct {
	Error string  `json:"error,omitempty"`
	NewMS float64 `json:"new_ms"` // how long New took
}

// TestFleetMember is not a test: the fleet tests run it in processes of their own.
func TestFleetMember(t *testing.T) {
	dsn := os.Getenv(memberDSN)
	if dsn == "" {
		t.Skip("runs only as a process of a fleet started by the TestFleet tests")
	}
	schema := os.Getenv(memberSchema)
	clients, err := strconv.Atoi(os.Getenv(memberClients))
	require.NoError(t, err)
	var hold time.Duration
	if s := os.Getenv(memberHold); s != "" {
		hold, err = time.ParseDuration(s)
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	rep := memberReport{PID: os.Getpid(), Clients: make([]clientReport, clients)}
	began := time.Now()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			start := time.Now()
			err := openMember(ctx, dsn, schema, hold)
			rep.Clients[i].NewMS = ms(time.Since(start))
			if err != nil {
				rep.Clients[i].Error = err.Error()
			}
		})
	}
	wg.Wait()
	rep.WallMS = ms(time.Since(began))
	line, err := json.Marshal(rep)
	require.NoError(t, err)
	fmt.Printf("%s%s\n", reportPrefix, line)
}

// openMember opens and closes one standalone Client; with hold > 0 it runs
// the holding migration instead, and with memberFiles set, it migrates that
// set of files on a pool of its own, as New would.
func openMember(ctx context.Context, dsn, schema string, hold time.Duration) error {
	files := os.Getenv(memberFiles)
	if hold == 0 && files == "" {
		c, err := mylib.New(ctx, mylib.WithDSN(dsn), mylib.WithSchema(schema), mylib.WithLogger(quiet))
		if err != nil {
			return err
		}
		c.Close()
		return nil
	}
	var fsys fs.FS = fstest.MapFS{"00001_hold.sql": {Data: []byte(fmt.Sprintf("-- +goose Up\nSELECT pg_sleep(%g);\n", hold.Seconds()))}}
	if files != "" {
		fsys = fileSets[files]()
	}
	set, err := migrate.Load(migratetest.Module, fsys)
	if err != nil {
		return err
	}
	var cfg migrate.Config
	if s := os.Getenv(memberLease); s != "" {
		if cfg.Lease, err = time.ParseDuration(s); err != nil {
			return err
		}
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	cfg.Log = quiet
	_, err = set.Up(ctx, pool, schema, cfg)
	return err
}

// fileSets are the sets of migration files a member can migrate.
var fileSets = map[string]func() fs.FS{
	// The probe's files, among them a concurrent index build, which cannot
	// run in a transaction and waits for every older transaction of the
	// database.
	"index": func() fs.FS { return probe.Files() },
	// A slow file in the lock's transaction, then the library's files.
	"slow": func() fs.FS {
		return fstest.MapFS{
			"00001_slow.sql": {Data: []byte("-- +goose Up\nCREATE TABLE {{tables.runs}} (mark int);\nSELECT pg_sleep(1);\nINSERT INTO {{tables.runs}} VALUES (1);\n")},
			"00002_more.sql": {Data: []byte("-- +goose Up\nINSERT INTO {{tables.runs}} VALUES (2);\n")},
		}
	},
	// A slow file marked NO TRANSACTION, run under the lease.
	"slow-notx": func() fs.FS {
		return fstest.MapFS{
			"00001_runs.sql": {Data: []byte("-- +goose Up\nCREATE TABLE {{tables.runs}} (mark int);\n")},
			"00002_slow.sql": {Data: []byte("-- +goose NO TRANSACTION\n-- +goose Up\nSELECT pg_sleep(1);\n" +
				"CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_mark ON {{tables.runs}} (mark);\nINSERT INTO {{tables.runs}} VALUES (2);\n")},
			"00003_more.sql": {Data: []byte("-- +goose Up\nINSERT INTO {{tables.runs}} VALUES (3);\n")},
		}
	},
}

// member is a running member process.
type member struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

func startMember(t *testing.T, dsn, schema string, clients int, hold time.Duration, env ...string) *member {
	t.Helper()
	m := &member{cmd: exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestFleetMember$", "-test.count=1", "-test.timeout=60s")}
	m.cmd.Env = append(os.Environ(), memberDSN+"="+dsn, memberSchema+"="+schema, memberClients+"="+strconv.Itoa(clients))
	m.cmd.Env = append(m.cmd.Env, env...)
	if hold > 0 {
		m.cmd.Env = append(m.cmd.Env, memberHold+"="+hold.String())
	}
	m.cmd.Stdout, m.cmd.Stderr = &m.stdout, &m.stderr
	require.NoError(t, m.cmd.Start())
	return m
}

// report waits for the member to exit and returns what it printed.
func (m *member) report(t *testing.T) memberReport {
	t.Helper()
	err := m.cmd.Wait()
	out := m.stdout.String()
	require.NoError(t, err, "member process:\n%s%s", out, m.stderr.String())
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, reportPrefix); ok {
			var rep memberReport
			require.NoError(t, json.Unmarshal([]byte(rest), &rep))
			return rep
		}
	}
	t.Fatalf("member process printed no report:\n%s%s", out, m.stderr.String())
	return memberReport{}
}

// fleetRun is what a fleet did.
type fleetRun struct {
	wall    time.Duration // from starting the first process to the last one's exit
	slowest time.Duration // the longest New in any member
	errors  []string
}

// runFleet starts procs processes of clients Clients each on schema, at once,
// and waits for all of them.
func runFleet(t *testing.T, dsn, schema string, procs, clients int) fleetRun {
	t.Helper()
	return runFleetOn(t, dsn, func(int) string { return schema }, procs, clients)
}

// runFleetOn is runFleet with process i on schema(i), and env added to the
// members' environment.
func runFleetOn(t *testing.T, dsn string, schema func(i int) string, procs, clients int, env ...string) fleetRun {
	t.Helper()
	began := time.Now()
	members := make([]*member, procs)
	for i := range members {
		members[i] = startMember(t, dsn, schema(i), clients, 0, env...)
	}
	var run fleetRun
	for _, m := range members {
		rep := m.report(t)
		require.Len(t, rep.Clients, clients)
		for _, c := range rep.Clients {
			run.slowest = max(run.slowest, time.Duration(c.NewMS*float64(time.Millisecond)))
			if c.Error != "" {
				run.errors = append(run.errors, fmt.Sprintf("pid %d: %s", rep.PID, c.Error))
			}
		}
	}
	run.wall = time.Since(began)
	return run
}

// viaBouncer puts a PgBouncer in transaction mode in front of dsn's database
// and returns a DSN through it with the query mode PgBouncer before 1.21
// needs.
func viaBouncer(t *testing.T, dsn string, opts ...pgtest.BouncerOption) string {
	t.Helper()
	return pgtest.SetParam(pgtest.Bouncer(t, dsn, opts...), "default_query_exec_mode", "exec")
}

// fleetTargets are the two ways a fleet reaches the database: directly, with
// pgx's defaults, and through PgBouncer with a server pool of 4.
var fleetTargets = []struct {
	name  string
	reach func(t *testing.T, dsn string) string
}{
	{"direct", func(_ *testing.T, dsn string) string { return dsn }},
	{"pgbouncer", func(t *testing.T, dsn string) string { return viaBouncer(t, dsn, pgtest.BouncerPoolSize(4)) }},
}

// The fleet tests are not parallel, so that their timings are their own.
func TestFleet_EightProcessesOfFourClientsMigrateOnce(t *testing.T) {
	const procs, clients = 8, 4
	for _, target := range fleetTargets {
		t.Run(target.name, func(t *testing.T) {
			dsn := pgtest.DSN(t)
			reach := target.reach(t, dsn)
			watch := pgtest.Pool(t, dsn)

			one := runFleet(t, reach, "solo", 1, 1)
			require.Empty(t, one.errors)
			fleet := runFleet(t, reach, "fleet", procs, clients)
			require.Empty(t, fleet.errors, "every Client of the fleet should open")
			t.Logf("%s: %d processes x %d clients on an empty schema: %v (slowest New %v); 1 process x 1 client: %v (New %v)",
				target.name, procs, clients, fleet.wall.Round(time.Millisecond), fleet.slowest.Round(time.Millisecond),
				one.wall.Round(time.Millisecond), one.slowest.Round(time.Millisecond))

			for _, schema := range []string{"solo", "fleet"} {
				migratetest.RequireMigratedOnce(t, watch, schema, migrationFiles(t))
			}
			require.Zero(t, migratetest.AdvisoryLocks(t, watch), "no migration lock should be left held")
			// A sanity bound, not a benchmark: waiting on goose's 5 s lock
			// polling, or on a lock left behind, would exceed it.
			require.Less(t, fleet.wall, 10*time.Second)
		})
	}
}

// Processes that each migrate a schema of their own behind a small PgBouncer
// server pool: each migrator needs one server connection at a time, so
// however many hold a lock at once, none waits for a second connection that
// the others hold. Among the files is a concurrent index build: it runs
// under the lease, with no transaction of any migrator open, and waits for
// none. The members give up after 30 s; they finish in a few.
func TestFleet_EightProcessesOnTheirOwnSchemasBehindASmallServerPool(t *testing.T) {
	const procs, clients = 8, 4
	for _, size := range []int{1, 2} {
		for _, files := range []string{"", "index"} {
			name := fmt.Sprintf("server pool of %d", size)
			if files != "" {
				name += ", with a concurrent index build"
			}
			t.Run(name, func(t *testing.T) {
				dsn := pgtest.DSN(t)
				reach := viaBouncer(t, dsn, pgtest.BouncerPoolSize(size))
				watch := pgtest.Pool(t, dsn)
				schema := func(i int) string { return fmt.Sprintf("tenant_%d", i) }

				fleet := runFleetOn(t, reach, schema, procs, clients, memberFiles+"="+files)
				require.Empty(t, fleet.errors, "every Client of the fleet should open")
				t.Logf("%d processes x %d clients, each process on its own empty schema, through a server pool of %d: %v (slowest New %v)",
					procs, clients, size, fleet.wall.Round(time.Millisecond), fleet.slowest.Round(time.Millisecond))
				want := migrationFiles(t)
				if files != "" {
					want = migratetest.Files(t, fileSets[files]())
				}
				for i := range procs {
					migratetest.RequireMigratedOnce(t, watch, schema(i), want)
				}
				require.Zero(t, migratetest.AdvisoryLocks(t, watch), "no migration lock should be left held")
			})
		}
	}
}

func TestFleet_KilledMigratorReleasesTheLock(t *testing.T) {
	for _, target := range fleetTargets {
		t.Run(target.name, func(t *testing.T) {
			dsn := pgtest.DSN(t)
			reach := target.reach(t, dsn)
			watch := pgtest.Pool(t, dsn)

			member := startMember(t, reach, "audit", 1, time.Minute)
			require.Eventually(t, func() bool { return migratetest.AdvisoryLocks(t, watch) == 1 && sleeping(t, watch) },
				10*time.Second, 5*time.Millisecond, "the member should be inside the migration lock, migrating")
			require.NoError(t, member.cmd.Process.Kill()) // SIGKILL: no deferred function, no ROLLBACK
			killed := time.Now()
			_ = member.cmd.Wait()
			require.Eventually(t, func() bool { return migratetest.AdvisoryLocks(t, watch) == 0 }, 5*time.Second, time.Millisecond,
				"the lock should die with the killed migrator's session")
			released := time.Since(killed)

			c, err := mylib.New(t.Context(), mylib.WithDSN(reach), mylib.WithSchema("audit"), mylib.WithLogger(quiet))
			require.NoError(t, err)
			recovered := time.Since(killed)
			c.Close()
			t.Logf("%s: after SIGKILL of the migrator holding the lock, the lock was gone in %v and the next New had migrated in %v",
				target.name, released.Round(time.Millisecond), recovered.Round(time.Millisecond))

			migratetest.RequireMigratedOnce(t, watch, "audit", migrationFiles(t))
			require.Zero(t, migratetest.AdvisoryLocks(t, watch))
		})
	}
}

// A migrator stopped with SIGSTOP (a paused VM, a long stop-the-world
// pause, or, to the server, a partition) while its slow file runs, directly
// and behind PgBouncer. In the lock's transaction, the server ends the
// transaction once it has been idle for the lease; under the lease of a file
// marked NO TRANSACTION, the lease lapses once no statement of the frozen
// migrator runs. Either way another migrator takes over within the lease of
// the slow statement's end and migrates, and the frozen one, resumed, finds
// the lock lost and applies nothing twice.
func TestFleet_AFrozenMigratorLosesTheLockWithinTheLease(t *testing.T) {
	const lease = 2 * time.Second
	for _, target := range fleetTargets {
		for _, files := range []string{"slow", "slow-notx"} {
			t.Run(target.name+", "+files, func(t *testing.T) {
				dsn := pgtest.DSN(t)
				reach := target.reach(t, dsn)
				watch := pgtest.Pool(t, dsn)
				m := startMember(t, reach, "audit", 1, 0, memberFiles+"="+files, memberLease+"="+lease.String())
				require.Eventually(t, func() bool { return sleeping(t, watch) }, 10*time.Second, 5*time.Millisecond,
					"the member should be running its slow statement")
				require.NoError(t, m.cmd.Process.Signal(syscall.SIGSTOP))
				stopped := time.Now()
				resumed := false
				t.Cleanup(func() {
					if !resumed {
						_ = m.cmd.Process.Signal(syscall.SIGCONT)
					}
				})

				set, err := migrate.Load(migratetest.Module, fileSets[files]())
				require.NoError(t, err)
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				res, err := set.Up(ctx, pgtest.Pool(t, reach), "audit", migrate.Config{Log: quiet, Lease: lease})
				require.NoError(t, err)
				took := time.Since(stopped)
				t.Logf("%s, %s: another migrator took over %v after the holder was frozen (lease %v, slow statement 1 s), applying %v",
					target.name, files, took.Round(time.Millisecond), lease, res.Applied)
				require.Less(t, took, lease+10*time.Second, "within the lease of the slow statement's end, with room for a loaded machine")

				require.NoError(t, m.cmd.Process.Signal(syscall.SIGCONT))
				resumed = true
				rep := m.report(t)
				require.Len(t, rep.Clients, 1)
				require.Contains(t, rep.Clients[0].Error, "migration lock lost", "the frozen migrator, resumed, finds out")
				migratetest.RequireMigratedOnce(t, watch, "audit", migratetest.Files(t, fileSets[files]()))
				var marks []int
				rows, err := watch.Query(t.Context(), "SELECT mark FROM audit.runs ORDER BY mark")
				require.NoError(t, err)
				marks, err = pgx.CollectRows(rows, pgx.RowTo[int])
				require.NoError(t, err)
				want := []int{1, 2}
				if files == "slow-notx" {
					want = []int{2, 3}
				}
				require.Equal(t, want, marks, "nothing applied twice")
				require.Zero(t, migratetest.AdvisoryLocks(t, watch))
			})
		}
	}
}

// sleeping reports whether a session of pool's database runs pg_sleep: a
// holding member's migration.
func sleeping(t *testing.T, pool *pgxpool.Pool) bool {
	t.Helper()
	var ok bool
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
WHERE datname = current_database() AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid())`).Scan(&ok))
	return ok
}

// migrationFiles counts the library's migration files.
func migrationFiles(t *testing.T) int { return migratetest.Files(t, os.DirFS("../../migrations")) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
