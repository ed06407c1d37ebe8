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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3/database"
)

// ErrLockLost is returned when the migration lock's transaction ended while
// migrations ran (the backend was terminated, or a pooler's idle transaction
// timeout closed it). Nothing ran unlocked: the migration in flight is cancelled.
var ErrLockLost = errors.New("migration lock lost")

// The migration lock is a transaction-level advisory lock, taken with
// pg_try_advisory_xact_lock in a transaction that the holder keeps open while
// goose migrates on another connection. This is the one design measured to be
// correct both directly and behind PgBouncer in transaction pooling mode:
//   - a session lock outlives its transaction on a pooled server connection
//     that nobody owns;
//   - a blocking pg_advisory_xact_lock makes every waiter pin a server
//     connection, so the holder cannot get one to migrate.
//
// Waiters hold no connection while they back off. The lock dies with the
// holder's transaction: a killed migrator releases it at once.
type lock struct {
	pool *pgxpool.Pool
	key  int64
	// probe, if set, is a query of one boolean that travels with each
	// attempt, in a statement of its own after the lock is taken, so that
	// it sees what the previous holder committed; held.probed is its answer.
	probe string
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

// Backoff between attempts: short, because a migration of a few files takes
// tens of milliseconds and a waiter notices the holder is done only when it
// next looks; jittered, so a fleet does not retry in step. Measured here: a
// cap of 50 ms put 8 concurrent starts at 3.1x one start, 10 ms at 2.1x; an
// attempt is one round trip on a connection held for no longer than that.
const (
	backoffFirst = 2 * time.Millisecond
	backoffMax   = 10 * time.Millisecond
	// heartbeat keeps the lock's transaction from looking idle to a pooler and
	// notices within this interval when it has been ended.
	heartbeat = time.Second
)

// held is an acquired lock: an open transaction on a connection of the pool.
type held struct {
	conn   *pgxpool.Conn
	key    int64
	pid    int32 // the server process of the lock's transaction
	probed bool  // the answer to lock.probe
}

// acquire takes the lock, waiting as long as ctx allows. Each attempt is one
// round trip; a failed attempt rolls back and returns its connection, then
// asks done whether the holder has already finished the work: if so acquire
// returns (nil, nil) without the lock, else it sleeps and tries again.
func (l lock) acquire(ctx context.Context, done func(context.Context) (bool, error)) (h *held, err error) {
	defer func() {
		// Wherever the caller's deadline or cancel struck, say it the same way.
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("waiting for the migration lock: %w", context.Cause(ctx))
		}
	}()
	wait := backoffFirst
	for {
		conn, err := l.pool.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("getting a connection for the migration lock: %w", err)
		}
		got, pid, probed, err := tryLock(ctx, conn.Conn().PgConn(), l.attempt(conn.Conn().PgConn()))
		if err != nil {
			conn.Release() // pgx closes a connection left mid-transaction on release
			return nil, fmt.Errorf("taking the migration lock: %w", err)
		}
		if got {
			return &held{conn: conn, key: l.key, pid: pid, probed: probed}, nil
		}
		if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
			conn.Release()
			return nil, fmt.Errorf("leaving a migration lock attempt: %w", err)
		}
		conn.Release()
		if ok, err := done(ctx); ok || err != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the migration lock: %w", context.Cause(ctx))
		case <-time.After(rand.N(wait) + time.Millisecond):
		}
		wait = min(wait*2, backoffMax)
	}
}

// attempt is the statement of one attempt. The key is a number we computed,
// so it can be inlined, which lets BEGIN, the settings and the attempt travel
// in one simple-protocol round trip. READ COMMITTED whatever the host's
// default, so the checksums recorded at release see what goose committed. A
// host's idle_in_transaction_session_timeout (and, from PostgreSQL 17,
// transaction_timeout) is set off for this transaction only: it is idle by
// design while goose works, and may last as long as the migrations.
func (l lock) attempt(conn *pgconn.PgConn) string {
	off := "SET LOCAL idle_in_transaction_session_timeout = 0; "
	if major, _, _ := strings.Cut(conn.ParameterStatus("server_version"), "."); atoiOr0(major) >= 17 {
		off += "SET LOCAL transaction_timeout = 0; "
	}
	probe := "SELECT false"
	if l.probe != "" {
		probe = l.probe
	}
	return "BEGIN ISOLATION LEVEL READ COMMITTED; " + off +
		"SELECT pg_try_advisory_xact_lock(" + strconv.FormatInt(l.key, 10) + "), pg_backend_pid(); " + probe
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func tryLock(ctx context.Context, conn *pgconn.PgConn, sql string) (got bool, pid int32, probed bool, err error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return false, 0, false, err
	}
	attempt, probe := results[len(results)-2], results[len(results)-1]
	if len(attempt.Rows) != 1 || len(attempt.Rows[0]) != 2 || len(probe.Rows) != 1 || len(probe.Rows[0]) != 1 {
		return false, 0, false, errors.New("unexpected reply to pg_try_advisory_xact_lock")
	}
	n, err := strconv.ParseInt(string(attempt.Rows[0][1]), 10, 32)
	return string(attempt.Rows[0][0]) == "t", int32(n), string(probe.Rows[0][0]) == "t", err
}

// fencedInsertSQL records a version only while a server process still holds
// an advisory lock on a bigint key, which pg_locks shows as two 32-bit halves:
// the check and the write are one statement, in the migration's transaction.
const fencedInsertSQL = `INSERT INTO %s (version_id, is_applied) SELECT $4, $5 WHERE EXISTS (
	SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted
	AND pid = $1 AND classid = $2::bigint::oid AND objid = $3::bigint::oid AND objsubid = 1
	AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`

// fencedStore is goose's version store, but a version is recorded only while
// the lock's transaction still holds the lock. goose records it in each
// migration's own transaction, so a migration does not commit after the lock
// is lost, in the second before the heartbeat notices, while another migrator
// may already have taken the lock and started the same migration. What
// remains is the gap between this statement and the COMMIT.
type fencedStore struct {
	database.StoreExtender
	insert string
	h      *held
}

// newFencedStore wraps goose's store for the version table.
func newFencedStore(table string, h *held) (database.Store, error) {
	store, err := database.NewStore(database.DialectPostgres, table)
	if err != nil {
		return nil, err
	}
	ext, ok := store.(database.StoreExtender)
	if !ok {
		return nil, fmt.Errorf("goose's postgres store (%T) no longer reports whether its table exists", store)
	}
	return fencedStore{StoreExtender: ext, insert: fmt.Sprintf(fencedInsertSQL, table), h: h}, nil
}

// Insert implements database.Store.
func (s fencedStore) Insert(ctx context.Context, db database.DBTxConn, req database.InsertRequest) error {
	if req.Version == 0 { // the version table's first row, written before any migration
		return s.StoreExtender.Insert(ctx, db, req)
	}
	res, err := db.ExecContext(ctx, s.insert, s.h.pid, int64(uint64(s.h.key)>>32), int64(uint32(s.h.key)), req.Version, true)
	if err != nil {
		return fmt.Errorf("recording version %d: %w", req.Version, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("%w: its transaction ended while migrating; the migration was rolled back", ErrLockLost)
	}
	return nil
}

// keepAlive runs first (if not empty) in the lock's transaction, then pings
// the transaction every heartbeat until stop is called. Work in first runs
// while the caller goes on with other connections. When first or a ping
// fails, cancel is called with the error (ErrLockLost for a ping), so the
// work done under the lock stops rather than run unlocked; stop returns it.
func (h *held) keepAlive(ctx context.Context, cancel context.CancelCauseFunc, first string) (stop func() error) {
	done := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		if first != "" {
			if _, err := h.conn.Exec(ctx, first, pgx.QueryExecModeSimpleProtocol); err != nil {
				if ctx.Err() != nil {
					result <- nil
					return
				}
				if h.conn.Conn().IsClosed() { // the connection, and the lock with it, is gone
					err = fmt.Errorf("%w: its transaction ended (%v): its backend was terminated, the server restarted or failed over, or a pooler closed it; start again", ErrLockLost, err)
				} else {
					err = fmt.Errorf("creating the checksum table: %w", err)
				}
				cancel(err)
				result <- err
				return
			}
		}
		t := time.NewTicker(heartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				result <- nil
				return
			case <-t.C:
				if _, err := h.conn.Exec(ctx, "SELECT 1"); err != nil {
					if ctx.Err() != nil { // cancelled by the caller: not a lost lock
						result <- nil
						return
					}
					err = fmt.Errorf("%w: its transaction ended while migrating (%v): its backend was terminated, the server restarted or failed over, or a pooler's idle_transaction_timeout (keep it above %s) closed it; start again", ErrLockLost, err, heartbeat)
					cancel(err)
					result <- err
					return
				}
			}
		}
	}()
	return func() error {
		close(done)
		return <-result
	}
}

// release ends the lock's transaction. With commit, it first runs last (if not
// empty) in the transaction and then commits, in one round trip; otherwise it
// rolls back. It runs even when ctx is cancelled, bounded by a short timeout;
// if the connection is broken, the server ends the transaction, and the lock
// with it, when it closes.
func (h *held) release(ctx context.Context, commit bool, last string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	defer h.conn.Release()
	if !commit {
		_, err := h.conn.Exec(ctx, "ROLLBACK")
		return err
	}
	if last != "" {
		last += "; "
	}
	results, err := h.conn.Conn().PgConn().Exec(ctx, last+"COMMIT").ReadAll()
	if err != nil {
		return err
	}
	// COMMIT of a transaction that failed is answered with ROLLBACK.
	if tag := results[len(results)-1].CommandTag; tag.String() != "COMMIT" {
		return fmt.Errorf("%w: the transaction holding it was rolled back", ErrLockLost)
	}
	return nil
}
