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
)

// The migration lock is a transaction-level advisory lock, taken with
// pg_try_advisory_xact_lock in a transaction on one connection, and each
// migration file runs in such a transaction of its own, on that connection:
// the file, its version row and its checksum commit together with the lock
// held, and the COMMIT travels with the next file's BEGIN and lock attempt.
// One connection per migrator, always:
//   - no hold-and-wait: a migrator never holds a connection while it waits
//     for another, so any number of concurrent starts on a pool of any size
//     complete, and behind PgBouncer in transaction pooling mode each needs
//     one server connection at a time;
//   - nothing runs unlocked: a lost connection loses the lock and the file
//     in flight together;
//   - no lock outlives a holder that stopped talking: the lock's transaction
//     sets idle_in_transaction_session_timeout to the lease (Config.Lease),
//     so the server ends it when a frozen or partitioned holder leaves it
//     idle that long; it is never idle otherwise (the next statement follows
//     each reply at once), and a killed holder's goes at once.
//
// A file marked NO TRANSACTION cannot run inside a transaction. For it the
// holder turns the lock into a lease (lease.go): a row that names it, which
// it renews before each statement, runs the file on the same connection with
// no transaction open, and takes the lock back to record the version. No
// transaction of a migrator stays open while a concurrent index build runs,
// so the build never waits for one.
//
// Waiters hold no connection while they back off: a blocking lock would pin
// a server connection behind PgBouncer, and a session lock outlives its
// transaction on a pooled server connection that nobody owns (both measured).
type lock struct {
	pool *pgxpool.Pool
	key  int64
	cfg  Config
	// probe is a query of one row that travels with the first attempt, in a
	// statement of its own after the lock is taken, so that it sees what
	// the previous holder committed; held.probe is its answer.
	probe string
	// check is the fast path's query: a waiter runs it when it looks, and
	// stops waiting when done says it may.
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

// Backoff between a waiter's looks: short at first, because a migration of
// a few files takes a few milliseconds and a waiter notices the holder is
// done only when it next looks; then longer, so that the waiters of a long
// migration do not load the server; jittered, so a fleet does not look in
// step. A look is one statement outside a transaction (a peek at the lock
// and the fast path's query). Measured here, 8 concurrent starts on one
// empty schema against one start (BenchmarkConcurrentStart), the first 30 ms
// at 1 to 3 ms: see BENCHMARKS.md; before, 2.0 to 2.2x with 1 to 5 ms, 2.2x
// with 4 to 10 ms, 2.6x with 2 to 20 ms, and 3.2x looking with a full
// attempt (BEGIN, the settings, the lock, ROLLBACK) instead of a peek.
const (
	backoffFirst = 1 * time.Millisecond
	backoffSoon  = 30 * time.Millisecond // waited this long, looks grow further apart
	backoffMax   = 100 * time.Millisecond
	// relockWait is how long a holder waits to take the lock back for its
	// next file: longer than a waiter's peek holds it, shorter than a
	// holder would.
	relockWait = 50 * time.Millisecond
)

// leaseWait is a lease another migrator holds, which a waiter waits out.
type leaseWait struct {
	free string // true when the lease is gone, or may be taken over
}

// held is an acquired lock: an open transaction on a connection of the pool.
type held struct {
	lock  lock
	conn  *stdlib.Conn
	probe []string // the probe's row, as text
}

func (h *held) pg() *pgconn.PgConn { return h.conn.Conn().PgConn() }

// acquire takes the lock, waiting as long as ctx allows. An attempt is one
// round trip: it begins the lock's transaction, tries the lock and runs the
// probe. While another migrator holds it, a waiter peeks instead, in one
// statement outside any transaction of its own: whether the lock is free at
// that moment, and the check query, from whose answer done says whether the
// holder has already finished the work (then acquire returns (nil, nil)
// without the lock). It attempts again once the lock is free, and holds no
// connection while it sleeps between peeks.
func (l lock) acquire(ctx context.Context, done func(*pgconn.Result) bool, lease *leaseWait) (*held, error) {
	connector := stdlib.GetPoolConnector(l.pool)
	wait, began := backoffFirst, time.Now()
	free := true // as far as this waiter knows: attempt, rather than peek
	peek := "SELECT pg_catalog.pg_try_advisory_xact_lock(" + strconv.FormatInt(l.key, 10) + "); " + l.check
	if lease != nil {
		// Another migrator holds the lease, and no lock: the lock looks
		// free until the lease is gone. A file that runs under the lease
		// may take a moment or an hour: look soon, then less often.
		free = false
		peek = "SELECT " + lease.free + " AND pg_catalog.pg_try_advisory_xact_lock(" +
			strconv.FormatInt(l.key, 10) + "); " + l.check
	}
	for {
		dc, err := connector.Connect(ctx)
		if err != nil {
			return nil, l.fail(ctx, nil, err, "getting a connection for the migration lock")
		}
		h := &held{lock: l, conn: dc.(*stdlib.Conn)}
		sql := peek
		if free {
			sql = l.attempt(h.pg()) + "; " + l.probe
		}
		results, err := h.pg().Exec(ctx, sql).ReadAll()
		if free {
			got := false
			if err == nil {
				got, err = h.parse(results)
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
		// The peek's answer comes first; the check may fail after it (its
		// tables not there yet, or never, if the holder died first).
		if len(results[0].Rows) == 1 && len(results[0].Rows[0]) == 1 && string(results[0].Rows[0][0]) == "t" {
			free = true // the peek found it free
		}
		// An error of the check is the holder not done yet (a table not
		// there), or a passing one: the next look tells.
		if err == nil && done(results[len(results)-1]) {
			return nil, nil
		}
		if free {
			continue
		}
		if err := sleep(ctx, rand.N(wait)+time.Millisecond); err != nil {
			return nil, interrupted(ctx, "waiting for the migration lock")
		}
		if time.Since(began) > backoffSoon {
			wait = min(wait*2, backoffMax)
		} else {
			wait = 2 * backoffFirst
		}
	}
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

// attempt is the statement of one attempt: it begins the lock's transaction
// and tries the lock (see begin).
func (l lock) attempt(pg *pgconn.PgConn) string { return l.begin(pg, 0) }

// begin begins the lock's transaction and takes the lock: it tries, or,
// given a wait, it waits that long for the lock at most. The key is a number we
// computed, so it can be inlined, which lets it travel in one simple-protocol
// round trip with what comes before and after. READ COMMITTED whatever the
// host's default, so each statement sees what other sessions committed. The
// settings last as long as the transaction:
//   - idle_in_transaction_session_timeout is the lease: a holder that stops
//     talking (frozen, partitioned) loses the lock that long after its last
//     statement, while a working holder is never idle;
//   - lock_timeout bounds every lock wait of the migration, so that the
//     host's queries never queue behind a migration's ALTER for longer;
//   - client_connection_check_interval: the server checks every second
//     that the client is still there while a statement runs, so a killed
//     migrator's lock goes within a second rather than when its statement
//     ends;
//   - transaction_timeout (PostgreSQL 17) is off: a long file is not a fault.
//
// statement_timeout stays as the host set it.
func (l lock) begin(pg *pgconn.PgConn, wait time.Duration) string {
	settings := []string{
		setLocal("idle_in_transaction_session_timeout", l.cfg.Lease),
		setLocal("lock_timeout", l.cfg.LockTimeout),
		"pg_catalog.set_config('client_connection_check_interval', '1000', true)",
	}
	major, _, _ := strings.Cut(pg.ParameterStatus("server_version"), ".")
	if n, _ := strconv.Atoi(major); n >= 17 {
		settings = append(settings, "pg_catalog.set_config('transaction_timeout', '0', true)")
	}
	key := strconv.FormatInt(l.key, 10)
	if wait > 0 {
		// Separate statements: the wait must see its own lock_timeout.
		return "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT " + setLocal("lock_timeout", wait) + "; " +
			"SELECT pg_catalog.pg_advisory_xact_lock(" + key + "); SELECT " + strings.Join(settings, ", ")
	}
	return "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_catalog.pg_try_advisory_xact_lock(" + key + "), " + strings.Join(settings, ", ")
}

// setLocal is a call that sets a setting in milliseconds for the transaction.
func setLocal(name string, d time.Duration) string {
	return "pg_catalog.set_config('" + name + "', '" + strconv.FormatInt(d.Milliseconds(), 10) + "', true)"
}

// parse reads the replies to an attempt and the probe, at the end of
// results, and reports whether the lock was taken.
func (h *held) parse(results []*pgconn.Result) (got bool, err error) {
	if len(results) < 2 {
		return false, fmt.Errorf("unexpected reply to pg_try_advisory_xact_lock: %d results", len(results))
	}
	attempt, probe := results[len(results)-2], results[len(results)-1]
	if len(attempt.Rows) != 1 || len(attempt.Rows[0]) < 1 || len(probe.Rows) != 1 {
		return false, fmt.Errorf("unexpected reply to pg_try_advisory_xact_lock: %d rows", len(attempt.Rows))
	}
	h.probe = make([]string, len(probe.Rows[0]))
	for i, v := range probe.Rows[0] {
		h.probe[i] = string(v)
	}
	return string(attempt.Rows[0][0]) == "t", nil
}

// commit runs first (if not empty) in the lock's transaction and commits it;
// with relock, it then begins the next transaction and takes the lock again
// (waiting relockWait at most), and runs then, a query whose reply it
// returns, in the same round trip. committed is false when the transaction
// certainly did not commit, and also when the reply to COMMIT was lost (then
// err says so and the connection is closed).
func (h *held) commit(ctx context.Context, first string, relock bool, then string) (committed, got bool, reply *pgconn.Result, err error) {
	sql := "COMMIT"
	if first != "" {
		sql = first + "; COMMIT"
	}
	if relock {
		// A waiter's peek holds the lock for a moment: wait that long,
		// rather than give the lock up to whoever looked.
		sql += "; " + h.lock.begin(h.pg(), relockWait) + "; " + then
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
	if pgErr := (*pgconn.PgError)(nil); committed && relock && errors.As(err, &pgErr) && pgErr.Code == "55P03" {
		return true, false, nil, nil // another migrator holds the lock now
	}
	if err != nil || !relock {
		return committed, false, nil, err
	}
	return committed, true, results[len(results)-1], nil
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
