package migrate

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3/database"
)

// The migration lock is a transaction-level advisory lock, taken with
// pg_try_advisory_xact_lock in a transaction on one connection, and each
// migration file runs in such a transaction of its own, on that connection:
// the file, its version row and its checksum commit together with the lock
// held, and the COMMIT travels with the next file's BEGIN and lock attempt.
// One connection per migrator:
//   - no hold-and-wait: a migrator never holds a connection while it waits
//     for another, so any number of concurrent starts on a pool of any size
//     complete, and behind PgBouncer in transaction pooling mode each needs
//     one server connection at a time;
//   - nothing runs unlocked: a lost connection loses the lock and the file
//     in flight together;
//   - the transaction is never idle while a file runs, so no idle-transaction
//     timeout of a server or a pooler ends it.
//
// Waiters hold no connection while they back off: a blocking lock would pin
// a server connection behind PgBouncer, and a session lock outlives its
// transaction on a pooled server connection that nobody owns (both measured).
// The lock dies with the holder's transaction: a killed migrator releases it
// at once.
//
// A file marked NO TRANSACTION cannot run inside the transaction: it runs on
// a second connection while the first holds the lock, and the second is
// taken only when it comes at once (see secondWait).
type lock struct {
	pool *pgxpool.Pool
	key  int64
	// probe is a query of one row that travels with each attempt, in a
	// statement of its own after the lock is taken, so that it sees what
	// the previous holder committed; held.probe is its answer.
	probe string
	// check is the fast path's query: a waiter runs it with the ROLLBACK
	// of a failed attempt, and stops waiting when done says it may.
	check string
}

// lockKey derives the advisory lock key from the module name and the schema, so
// two libraries in one schema, or one library in two schemas, never contend.
func lockKey(module, schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte(module))
	h.Write([]byte{0})
	h.Write([]byte(schema))
	return int64(h.Sum64())
}

// Backoff between a waiter's looks: short, because a migration of a few
// files takes about ten milliseconds and a waiter notices the holder is done
// only when it next looks; jittered, so a fleet does not look in step. A look
// is one statement outside a transaction (a peek at the lock and the fast
// path's query). Measured here, 8 concurrent starts on one empty schema
// against one start (BenchmarkConcurrentStart): 2.0 to 2.2x with 1 to 5 ms,
// 2.2x with 4 to 10 ms, 2.6x with 2 to 20 ms; looking with a full attempt
// (BEGIN, the settings, the lock, ROLLBACK) instead of a peek, 3.2x.
const (
	backoffFirst = 1 * time.Millisecond
	backoffMax   = 5 * time.Millisecond
	// secondWait bounds how long a holder that needs a second connection
	// (for a NO TRANSACTION file) waits for it before it gives the lock and
	// its connection up and backs off: two holders on a pool with no third
	// connection would otherwise wait for each other forever.
	secondWait = 100 * time.Millisecond
	// heartbeat keeps the lock's transaction from looking idle to a pooler
	// while a NO TRANSACTION file runs on another connection: keep
	// PgBouncer's idle_transaction_timeout above it.
	heartbeat = time.Second
)

// held is an acquired lock: an open transaction on a connection of the pool.
type held struct {
	lock  lock
	conn  *stdlib.Conn
	pid   int32    // the server process of the lock's transaction
	probe []string // the probe's row, as text
}

func (h *held) pg() *pgconn.PgConn { return h.conn.Conn().PgConn() }

// acquire takes the lock, waiting as long as ctx allows. An attempt is one
// round trip: it begins the lock's transaction and tries the lock. While
// another migrator holds it, a waiter peeks instead, in one statement outside
// any transaction of its own: whether the lock is free at that moment, and
// the check query, from whose answer done says whether the holder has already
// finished the work (then acquire returns (nil, nil) without the lock). It
// attempts again once the lock is free, and holds no connection while it
// sleeps between peeks.
func (l lock) acquire(ctx context.Context, done func(state) (bool, error)) (*held, error) {
	connector := stdlib.GetPoolConnector(l.pool)
	wait := backoffFirst
	free := true // as far as this waiter knows: attempt, rather than peek
	for {
		dc, err := connector.Connect(ctx)
		if err != nil {
			return nil, l.fail(ctx, nil, err, "getting a connection for the migration lock")
		}
		h := &held{lock: l, conn: dc.(*stdlib.Conn)}
		sql := "SELECT pg_catalog.pg_try_advisory_xact_lock(" + strconv.FormatInt(l.key, 10) + "); " + l.check
		if free {
			sql = l.attempt(h.pg(), "")
		}
		results, err := h.pg().Exec(ctx, sql).ReadAll()
		if free {
			got := false
			if err == nil {
				got, _, err = h.parse(results, false)
			}
			if err != nil {
				_ = h.conn.Close() // the pool closes a connection left mid-transaction
				return nil, l.fail(ctx, h.pg(), err, "taking the migration lock")
			}
			if got {
				return h, nil
			}
			// Taken: end the attempt, and look whether the holder is done.
			free = false
			results, err = h.pg().Exec(ctx, "ROLLBACK; "+l.check).ReadAll()
		}
		if len(results) == 0 || results[0].Err != nil || h.pg().IsClosed() {
			ferr := l.fail(ctx, h.pg(), err, "waiting for the migration lock")
			_ = h.conn.Close()
			return nil, ferr
		}
		_ = h.conn.Close()
		if len(results) == 2 && len(results[0].Rows) == 1 && len(results[0].Rows[0]) == 1 && string(results[0].Rows[0][0]) == "t" {
			free = true // the peek found it free
		}
		// An error of the check is the holder not done yet (a table not
		// there), or a passing one: the next look tells.
		if err == nil {
			if st, perr := stateOf(results[len(results)-1]); perr == nil {
				if ok, err := done(st); ok || err != nil {
					return nil, err
				}
			}
		}
		if free {
			continue
		}
		if err := sleep(ctx, rand.N(wait)+time.Millisecond); err != nil {
			return nil, interrupted(ctx, "waiting for the migration lock")
		}
		wait = min(wait*2, backoffMax)
	}
}

// stateOf reads the rows of a state query (version, checksum) sent in the
// simple protocol, as text.
func stateOf(res *pgconn.Result) (state, error) {
	if res.Err != nil {
		return nil, res.Err
	}
	st := make(state, len(res.Rows))
	for _, row := range res.Rows {
		if len(row) != 2 {
			return nil, fmt.Errorf("unexpected reply to a state query: %d columns", len(row))
		}
		v, err := strconv.ParseInt(string(row[0]), 10, 64)
		if err != nil {
			return nil, err
		}
		sum, err := strconv.ParseInt(string(row[1]), 10, 64)
		if err != nil {
			return nil, err
		}
		st[v] = sum
	}
	return st, nil
}

func (l lock) fail(ctx context.Context, conn *pgconn.PgConn, err error, doing string) error {
	if ctx.Err() != nil { // wherever the caller's deadline or cancel struck, say it the same way
		return interrupted(ctx, "waiting for the migration lock")
	}
	if f := fault(ctx, conn, err, doing); f != nil {
		return f
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// sleep waits for d, or returns ctx's error when it ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// attempt is the statement of one attempt, followed by then, if not empty.
// The key is a number we computed, so it can be inlined, which lets BEGIN,
// the settings, the attempt and the probe travel in one simple-protocol round
// trip. READ COMMITTED whatever the host's default, so each statement sees
// what other sessions committed. A host's idle_in_transaction_session_timeout
// (and, from PostgreSQL 17, transaction_timeout) is set off for this
// transaction only: it idles while a NO TRANSACTION file runs on another
// connection. From PostgreSQL 14, the server checks every second that the
// client is still there while a statement runs, so a killed migrator's lock
// goes within a second rather than when its statement ends. statement_timeout
// and lock_timeout stay as the host set them.
func (l lock) attempt(pg *pgconn.PgConn, then string) string {
	off := "SET LOCAL idle_in_transaction_session_timeout = 0; "
	major, _, _ := strings.Cut(pg.ParameterStatus("server_version"), ".")
	if atoiOr0(major) >= 14 {
		off += "SET LOCAL client_connection_check_interval = 1000; "
	}
	if atoiOr0(major) >= 17 {
		off += "SET LOCAL transaction_timeout = 0; "
	}
	sql := "BEGIN ISOLATION LEVEL READ COMMITTED; " + off +
		"SELECT pg_catalog.pg_try_advisory_xact_lock(" + strconv.FormatInt(l.key, 10) + "), pg_catalog.pg_backend_pid(); " + l.probe
	if then != "" {
		sql += "; " + then
	}
	return sql
}

// parse reads the replies to attempt at the end of results (with then's
// after them when withThen) and reports whether the lock was taken, and
// then's reply.
func (h *held) parse(results []*pgconn.Result, withThen bool) (got bool, then *pgconn.Result, err error) {
	if withThen {
		if len(results) == 0 {
			return false, nil, errors.New("no reply to the migration lock attempt")
		}
		then, results = results[len(results)-1], results[:len(results)-1]
	}
	if len(results) < 2 {
		return false, nil, fmt.Errorf("unexpected reply to pg_try_advisory_xact_lock: %d results", len(results))
	}
	attempt, probe := results[len(results)-2], results[len(results)-1]
	if len(attempt.Rows) != 1 || len(attempt.Rows[0]) != 2 || len(probe.Rows) != 1 {
		return false, nil, fmt.Errorf("unexpected reply to pg_try_advisory_xact_lock: %d rows", len(attempt.Rows))
	}
	pid, err := strconv.ParseInt(string(attempt.Rows[0][1]), 10, 32)
	if err != nil {
		return false, nil, err
	}
	h.pid, h.probe = int32(pid), make([]string, len(probe.Rows[0]))
	for i, v := range probe.Rows[0] {
		h.probe[i] = string(v)
	}
	return string(attempt.Rows[0][0]) == "t", then, nil
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// commit runs last (if not empty) in the lock's transaction and commits it,
// within ctx; with relock, it then begins the next transaction, attempts the
// lock again and runs then (a query whose reply it returns), in the same
// round trip. committed is false when the transaction certainly did not
// commit, and also when the reply to COMMIT was lost (then err says so and
// the connection is closed).
func (h *held) commit(ctx context.Context, last string, relock bool, then string) (committed, got bool, thenReply *pgconn.Result, err error) {
	sql := "COMMIT"
	if last != "" {
		sql = last + "; COMMIT"
	}
	if relock {
		sql += "; " + h.lock.attempt(h.pg(), then)
	}
	results, err := h.pg().Exec(ctx, sql).ReadAll()
	for _, r := range results {
		// COMMIT of a transaction that failed is answered with ROLLBACK.
		if tag := r.CommandTag.String(); tag == "COMMIT" || tag == "ROLLBACK" {
			committed = tag == "COMMIT"
			if !committed && err == nil {
				err = errors.New("the transaction was rolled back instead of committed")
			}
			break
		}
	}
	if err != nil || !relock {
		return committed, false, nil, err
	}
	got, thenReply, err = h.parse(results, then != "")
	return committed, got, thenReply, err
}

// release ends the lock's transaction, if one is open, and returns the
// connection to the pool. It rolls back, briefly even when ctx has ended; if
// the connection is broken, the server rolls back when it closes.
func (h *held) release(ctx context.Context) error {
	defer h.conn.Close()
	if h.pg().IsClosed() || h.pg().TxStatus() == 'I' {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_, err := h.pg().Exec(ctx, "ROLLBACK").ReadAll()
	return err
}

// keepAlive runs a trivial statement in the lock's transaction every
// heartbeat until stop is called, so that a pooler's idle-transaction timeout
// does not end it while a NO TRANSACTION file runs on another connection.
// A failure is left to the fence to report.
func (h *held) keepAlive() (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(heartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), heartbeat)
				_, err := h.pg().Exec(ctx, "SELECT").ReadAll()
				cancel()
				if err != nil {
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// fencedInsertSQL records a version only while a server process still holds
// an advisory lock on a bigint key, which pg_locks shows as two 32-bit halves:
// the check and the write are one statement, in the migration's transaction.
// Every value is a number the library computed, inlined: one round trip.
// Catalog names are qualified: a role's search_path cannot stand in for them.
const fencedInsertSQL = `INSERT INTO %s (version_id, is_applied) SELECT %d, true WHERE EXISTS (
	SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted
	AND pid = %d AND classid = %d::bigint::oid AND objid = %d::bigint::oid AND objsubid = 1
	AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))`

// heldStore is goose's version store as a holder of the lock uses it. The
// holder read the state under the lock and created the table if missing, so
// the store asks the database neither whether the table exists nor whether
// the version goose is about to apply is recorded (it is not). It records a
// version in one simple statement; on the second connection of a NO
// TRANSACTION file (fenced), only while the lock's transaction still holds
// the lock, so that the version is not recorded after that connection was
// lost, while another migrator may already have taken the lock.
type heldStore struct {
	database.StoreExtender
	table  string
	h      *held
	fenced bool
}

// newHeldStore wraps goose's store for the version table.
func newHeldStore(table string, h *held, fenced bool) (database.Store, error) {
	store, err := database.NewStore(database.DialectPostgres, table)
	if err != nil {
		return nil, err
	}
	ext, ok := store.(database.StoreExtender)
	if !ok {
		return nil, fmt.Errorf("goose's postgres store (%T) no longer reports whether its table exists", store)
	}
	return heldStore{StoreExtender: ext, table: table, h: h, fenced: fenced}, nil
}

// TableExists implements database.StoreExtender: the holder made sure of it.
func (s heldStore) TableExists(context.Context, database.DBTxConn) (bool, error) { return true, nil }

// GetMigration implements database.Store: goose asks before it applies a
// version, which the holder's state shows is not recorded.
func (s heldStore) GetMigration(context.Context, database.DBTxConn, int64) (*database.GetMigrationResult, error) {
	return nil, database.ErrVersionNotFound
}

// Insert implements database.Store.
func (s heldStore) Insert(ctx context.Context, db database.DBTxConn, req database.InsertRequest) error {
	if !s.fenced {
		_, err := db.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (version_id, is_applied) VALUES (%d, true)", s.table, req.Version))
		return err
	}
	res, err := db.ExecContext(ctx, fmt.Sprintf(fencedInsertSQL, s.table, req.Version,
		s.h.pid, int64(uint64(s.h.lock.key)>>32), int64(uint32(s.h.lock.key))))
	if err != nil {
		return fmt.Errorf("recording version %d: %w", req.Version, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return errFenced
	}
	return nil
}

// errFenced: the fence found the lock gone when a version was to be recorded.
var errFenced = fmt.Errorf("%w: the connection holding it was lost before the version was recorded", ErrLockLost)
