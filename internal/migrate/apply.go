package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
)

// Backoff after a try that gave the lock up: a statement ran out of
// lock_timeout, or a conflict with another session. Long enough that the
// host's queries run between tries, short enough that the migration follows
// within a second once the blocker is gone.
const (
	retryFirst = 50 * time.Millisecond
	retryMax   = 500 * time.Millisecond
)

// pause says why a holder gave the lock up before it was done, and when to
// try again.
type pause struct {
	blocked  *blockage    // a statement ran out of lock_timeout
	lease    *leaseHolder // another migrator holds the lease
	conflict error        // a deadlock or serialization conflict failed a statement
}

// upLocked migrates under the lock, toward target (nil: every file). fast is
// the plan the fast path made, for messages when this session turns out
// unable to migrate.
func (m *Migrations) upLocked(ctx context.Context, pool *pgxpool.Pool, sf *schemaFiles, fast plan, cfg Config, target *int64) (Result, error) {
	start := time.Now()
	l := lock{pool: pool, key: lockKey(m.module, sf.schema), cfg: cfg, probe: sf.probeSQL, check: sf.fastSQL}
	var res Result
	wait := retryFirst
	var last *pause
	for {
		// While another migrator holds the lock, a waiter looks between
		// attempts whether it is done (the fast path's query), and leaves
		// without taking the lock when it is. Moving toward a target, it
		// always migrates itself.
		var lease *leaseWait
		if last != nil && last.lease != nil {
			lease = &leaseWait{free: leaseSQL{table: sf.leaseTable, module: m.module}.free()}
		}
		h, err := l.acquire(ctx, func(r *pgconn.Result) bool { return target == nil && m.current(r) }, lease)
		if err != nil {
			return res, last.explain(ctx, sf.schema, err)
		}
		if h == nil {
			res.Version = max(res.Version, m.Latest())
			return res, nil
		}
		r := holder{m: m, sf: sf, cfg: cfg, fast: fast, h: h, res: &res, target: target}
		p, err := r.migrate(ctx)
		if err == nil && p != nil && p.blocked == nil && p.lease == nil && p.conflict == nil {
			continue // another migrator took the lock between two files: wait like the others
		}
		if err == nil && p != nil && p.lease != nil {
			last = p
			continue // acquire waits for the lease to go
		}
		if err == nil && p != nil {
			last = p
			if err := sleep(ctx, wait/2+rand.N(wait/2)); err != nil {
				return res, last.explain(ctx, sf.schema, interrupted(ctx, "waiting for the migration lock"))
			}
			wait = min(wait*2, retryMax)
			continue
		}
		took := slog.Duration("took", time.Since(start))
		if len(res.Applied) > 0 {
			cfg.Log.LogAttrs(ctx, slog.LevelInfo, "applied migrations", slog.String("schema", sf.schema),
				slog.Any("files", res.Applied), slog.Int64("version", res.Version), took)
		}
		if len(res.Undone) > 0 {
			cfg.Log.LogAttrs(ctx, slog.LevelInfo, "undid migrations", slog.String("schema", sf.schema),
				slog.Any("files", res.Undone), slog.Int64("version", res.Version), took)
		}
		if err == nil && target == nil {
			r.plan.warnNewer(cfg.Log, sf.schema, m.Latest())
		}
		if err != nil {
			err = last.explain(ctx, sf.schema, err)
		}
		return res, err
	}
}

// holder migrates while it holds the lock, on the lock's one connection.
type holder struct {
	m      *Migrations
	sf     *schemaFiles
	cfg    Config
	fast   plan
	h      *held
	res    *Result
	target *int64
	pre    probe // the session, as the lock's attempt found it
	plan   plan  // read under the lock
	// state is what is applied, as this holder knows it: read under the
	// lock, then kept as it applies and undoes files.
	state state
	// pending are statements to send together, in the lock's transaction:
	// a file's, with its version row and its checksum (see record), or
	// what travels with the lease (see takeLease).
	pending  []string
	lease    *lease // held while a NO TRANSACTION file runs
	leaseSQL leaseSQL
	// dirty: the session's lock_timeout was set for a statement that
	// cannot run in a transaction, and must be reset.
	dirty    bool
	db       *sql.DB
	conn     *pinnedConn
	provider *goose.Provider
}

// migrate applies (or undoes) the files the plan names, each in a
// transaction of its own that holds the lock, and releases the lock. It
// returns a pause when it gave the lock up before the end, to wait and try
// again.
func (r *holder) migrate(ctx context.Context) (_ *pause, err error) {
	r.db, r.conn = pinnedDB(r.h.conn)
	r.conn.hook = r.m.hook
	defer r.db.Close()
	defer r.release(ctx)
	r.leaseSQL = leaseSQL{table: r.sf.leaseTable, module: r.m.module}
	if r.pre, err = parseProbe(r.h.probe); err != nil {
		return nil, err
	}
	if err := r.m.refuse(ctx, r.sf, r.pre, r.fast); err != nil {
		return nil, err
	}
	if r.state, err = r.prepare(ctx); err != nil {
		// A lock of the schema's tables or name, held by another session.
		if pgErr := (*pgconn.PgError)(nil); ctx.Err() == nil && errors.As(err, &pgErr) && giveWay[pgErr.Code] {
			return r.gaveWay(ctx, fmt.Sprintf("preparing schema %q", r.sf.schema), pgErr)
		}
		return nil, err
	}
	if r.plan, err = r.m.plan(r.state, r.sf.schema); err != nil {
		return nil, err
	}
	r.res.Version = max(r.res.Version, r.plan.version)
	steps, up, err := r.m.steps(r.plan, r.target, r.sf.schema)
	if err != nil {
		return nil, err
	}
	if r.plan.backfill {
		r.pending = append(r.pending, r.sf.recordSQL) // the checksums of files applied without them
	}
	if len(steps) == 0 {
		_, _, _, err := r.h.commit(ctx, r.flush(), false, "")
		return nil, r.commitError(ctx, err, nil, false)
	}
	if r.provider, err = goose.NewProvider(goose.DialectCustom, r.db, r.sf.fsys,
		goose.WithStore(store{Store: r.sf.goose, holder: r}),
		goose.WithDisableGlobalRegistry(true), // a host's own goose registrations stay out
	); err != nil {
		return nil, fmt.Errorf("preparing migrations for schema %q: %w", r.sf.schema, err)
	}
	for i, v := range steps {
		f := r.m.byVersion[v]
		r.conn.exec = r.buffer
		if f.noTx {
			if p, err := r.takeLease(ctx, f); p != nil || err != nil {
				return p, err
			}
		}
		if _, err := r.provider.ApplyVersion(ctx, f.version, up); err != nil {
			return r.failed(ctx, f, err)
		}
		last := i == len(steps)-1
		committed, got, top, err := r.h.commit(ctx, "", !last, r.sf.topSQL)
		if committed {
			r.done(f, up)
		}
		if err != nil {
			return nil, r.commitError(ctx, err, f, committed)
		}
		if last {
			return nil, nil
		}
		if !got || !r.unchanged(top) {
			// Another migrator took the lock between two files, and may
			// have applied or undone some: wait like the others, and read
			// the state again.
			return &pause{}, nil
		}
	}
	return nil, nil
}

// prepare creates what is missing of the schema, goose's version table (as
// goose makes it, with its first row) and the checksum table, in the lock's
// transaction, and reads what is applied, in one round trip.
func (r *holder) prepare(ctx context.Context) (state, error) {
	var create []string
	if !r.pre.schemaExists {
		create = append(create, r.sf.createSchemaSQL)
	}
	newVersions := !slices.Contains(r.pre.existing, r.m.versionTable)
	if newVersions {
		create = append(create, r.sf.versionsSQL, "INSERT INTO "+r.sf.versionTable+" (version_id, is_applied) VALUES (0, true)")
	}
	if !slices.Contains(r.pre.existing, r.m.sumTable) {
		create = append(create, r.sf.sumsSQL)
	}
	doing := fmt.Sprintf("reading the migration state of schema %q", r.sf.schema)
	if len(create) > 0 {
		doing = fmt.Sprintf("creating schema %q and the tables that track its migrations", r.sf.schema)
	}
	if newVersions {
		if _, err := r.h.pg().Exec(ctx, strings.Join(create, ";\n")).ReadAll(); err != nil {
			return nil, r.m.lockedFault(ctx, r.h, nil, err, doing)
		}
		return state{}, nil
	}
	results, err := r.h.pg().Exec(ctx, strings.Join(append(create, r.sf.stateSQL), ";\n")).ReadAll()
	if err != nil {
		return nil, r.m.lockedFault(ctx, r.h, nil, err, doing)
	}
	st, err := stateOf(results[len(results)-1])
	if err != nil {
		return nil, r.m.lockedFault(ctx, r.h, nil, err, doing)
	}
	return st, nil
}

// unchanged reports whether a reply to topSQL, read with the lock taken back
// after a COMMIT, is the highest version this holder knows applied: whether
// no other migrator applied or undid a file in the moment between the two.
func (r *holder) unchanged(top *pgconn.Result) bool {
	var want int64
	for v := range r.state {
		want = max(want, v)
	}
	return top != nil && len(top.Rows) == 1 && len(top.Rows[0]) == 1 && string(top.Rows[0][0]) == strconv.FormatInt(want, 10)
}

// flush returns the pending statements, joined, and forgets them.
func (r *holder) flush() string {
	sql := strings.Join(r.pending, ";\n")
	r.pending = r.pending[:0]
	return sql
}

// done notes a file applied or undone, once committed.
func (r *holder) done(f *file, up bool) {
	if up {
		r.state[f.version] = f.checksum
		r.res.Applied = append(r.res.Applied, f.name)
		r.res.Version = max(r.res.Version, f.version)
		return
	}
	delete(r.state, f.version)
	r.res.Undone = append(r.res.Undone, f.name)
	r.res.Version = 0
	for v := range r.state {
		r.res.Version = max(r.res.Version, v)
	}
}

// buffer keeps a statement of a file that runs in the lock's transaction,
// to send with the others when goose records the file (see record). A
// newline ends it, so that a trailing -- comment cannot take the next one
// with it.
func (r *holder) buffer(_ context.Context, stmt string) error {
	r.pending = append(r.pending, stmt+"\n")
	return nil
}

// record runs, once goose has run (or buffered) a file, what is pending (the
// file's statements, in the lock's transaction) with the file's version row
// and its checksum (or, undoing it, their deletion), in one round trip: the
// COMMIT then travels with the next file's attempt. A statement that fails
// stops the rest and is the file's error. The checksum is inserted without
// ON CONFLICT: if another migrator recorded the file in the moment between
// this one's COMMIT and its next attempt, the insert fails on the key, and
// nothing is applied twice. Under the lease, it first takes the lock back.
func (r *holder) record(ctx context.Context, version int64, up bool) error {
	if r.lease != nil {
		if err := r.reclaim(ctx); err != nil {
			return err
		}
	}
	if up {
		r.pending = append(r.pending,
			fmt.Sprintf("INSERT INTO %s (version_id, is_applied) VALUES (%d, true)", r.sf.versionTable, version),
			fmt.Sprintf("INSERT INTO %s (version_id, checksum) VALUES (%d, %d)", r.sf.sums, version, r.m.byVersion[version].checksum))
	} else {
		r.pending = append(r.pending,
			fmt.Sprintf("DELETE FROM %s WHERE version_id = %d", r.sf.versionTable, version),
			fmt.Sprintf("DELETE FROM %s WHERE version_id = %d", r.sf.sums, version))
	}
	_, err := r.h.pg().Exec(ctx, r.flush()).ReadAll()
	return err
}

// takeLease turns the lock into the lease, for f, which cannot run in a
// transaction: it commits what is pending with the lease, which ends the
// lock's transaction. Then it drops what an earlier failed run of f left:
// an index f names that a concurrent build left invalid. It returns a pause
// when another migrator holds the lease.
func (r *holder) takeLease(ctx context.Context, f *file) (*pause, error) {
	l := newLease(f.version)
	r.pending = append(r.pending, r.leaseSQL.create(), r.leaseSQL.take(l, r.cfg.Lease))
	sql := r.flush() + ";\nCOMMIT;\n" + r.sf.invalidSQL
	results, err := r.h.pg().Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, r.m.lockedFault(ctx, r.h, nil, err, fmt.Sprintf("taking the migration lease to apply %s", f.name))
	}
	got, other, err := parseLeaseState(results[len(results)-3], l)
	if err != nil {
		return nil, fmt.Errorf("taking the migration lease to apply %s: %w", f.name, err)
	}
	if !got {
		return &pause{lease: &other}, nil
	}
	r.lease = &l
	r.conn.exec = r.execLeased
	for _, idx := range r.m.leftBy(f, results[len(results)-1]) {
		doing := fmt.Sprintf("dropping the invalid index %s.%s, which an earlier run of %s left, before running it again", r.sf.schema, idx, f.name)
		r.cfg.Log.LogAttrs(ctx, slog.LevelWarn, doing, slog.String("schema", r.sf.schema), slog.String("index", idx))
		if err := r.execLeased(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+qualified(r.sf.schema, idx)); err != nil {
			return nil, r.m.lockedFault(ctx, r.h, nil, err, doing)
		}
	}
	return nil, nil
}

// checkClient makes the server check every second, while a statement runs,
// that the client is still there: a statement of a migrator that died stops
// within a second, so that the lease it held can be taken over (see lock.go).
const checkClient = "SET client_connection_check_interval = 1000"

// resetSession undoes what execLeased set for the session.
const resetSession = "RESET lock_timeout; RESET client_connection_check_interval"

// execLeased runs a statement of a file marked NO TRANSACTION under the
// lease: it renews the lease, then runs the statement with the lease's tag.
// A statement that can run in a transaction runs in one of its own, with the
// migration's lock_timeout; one that cannot runs alone, with the session's
// lock_timeout set for it: none for a concurrent index build (see
// concurrentIndexOp), the migration's otherwise.
func (r *holder) execLeased(ctx context.Context, stmt string) error {
	renew := r.leaseSQL.renew(*r.lease, r.cfg.Lease)
	concurrent := concurrentIndexOp(stmt)
	if concurrent {
		renew += "; SET lock_timeout = 0; " + checkClient
		r.dirty = true
	}
	results, err := r.h.pg().Exec(ctx, renew).ReadAll()
	if err != nil {
		return err
	}
	if results[0].CommandTag.RowsAffected() != 1 {
		return errLeaseLost
	}
	tag := r.leaseSQL.tag(*r.lease)
	if concurrent {
		_, err := r.h.pg().Exec(ctx, tag+stmt).ReadAll()
		return err
	}
	timeout := strconv.FormatInt(r.cfg.LockTimeout.Milliseconds(), 10)
	_, err = r.h.pg().Exec(ctx, tag+"SET LOCAL lock_timeout = "+timeout+"; SET LOCAL "+checkClient[len("SET "):]+";\n"+stmt).ReadAll()
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "25001" {
		// It cannot run in a transaction block: alone, then.
		r.dirty = true
		_, err = r.h.pg().Exec(ctx, "SET lock_timeout = "+timeout+"; "+checkClient+";\n"+tag+stmt).ReadAll()
	}
	return err
}

// reclaim takes the lock back after a file ran under the lease, and ends the
// lease, in a new lock's transaction, so that the file's version commits
// with the lock held. Migrators that look at the lock meanwhile hold it for
// a moment only: the wait for it is bounded. The lease is gone if another
// migrator took it over.
func (r *holder) reclaim(ctx context.Context) error {
	sql := resetSession + "; " + r.h.lock.begin(r.h.pg(), time.Second) + ";\n" + r.leaseSQL.end(*r.lease) + ";\n" + r.sf.invalidSQL
	results, err := r.h.pg().Exec(ctx, sql).ReadAll()
	r.dirty = false
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "55P03" {
		return errLeaseLost // another migrator has held the lock since it took the lease over
	}
	if err != nil {
		return err
	}
	if results[len(results)-2].CommandTag.RowsAffected() != 1 {
		return errLeaseLost
	}
	f := r.m.byVersion[r.lease.version]
	r.lease, r.conn.exec = nil, r.buffer
	if left := r.m.leftBy(f, results[len(results)-1]); len(left) > 0 {
		return &invalidIndexes{names: left}
	}
	return nil
}

// release ends the lock's transaction or the lease, and returns the
// connection to the pool as it was lent.
func (r *holder) release(ctx context.Context) {
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	switch {
	case (r.lease != nil || r.dirty) && !r.h.pg().IsClosed():
		sql := resetSession
		if r.h.pg().TxStatus() != 'I' {
			sql = "ROLLBACK; " + sql // a failed attempt to take the lock back
		}
		if r.lease != nil {
			sql += "; " + r.leaseSQL.end(*r.lease) // so that no one waits for it to expire
		}
		_, _ = r.h.pg().Exec(c, sql).ReadAll()
	case r.lease != nil:
		// The connection is gone (the caller's deadline closes it), and
		// its last statement may still run on the server for a moment: let
		// the lease lapse now, on another connection once this one is
		// given back, so that the next migrator takes it over as soon as
		// that statement ends, rather than when the lease expires.
		_ = r.h.release(ctx)
		_, _ = r.h.lock.pool.Exec(c, r.leaseSQL.lapse(*r.lease))
		return
	}
	_ = r.h.release(ctx)
}

// failed says what a file that did not apply means, and gives the lock up:
// a pause when a lock wait ran out of lock_timeout (the host's queries go on,
// and the file is tried again), an error otherwise.
func (r *holder) failed(ctx context.Context, f *file, err error) (*pause, error) {
	if partial := (*goose.PartialError)(nil); errors.As(err, &partial) {
		err = partial.Err
	}
	var inv *invalidIndexes
	switch pgErr := (*pgconn.PgError)(nil); {
	case ctx.Err() == nil && errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.TableName == r.m.sumTable:
		// Another migrator recorded the file between this one's COMMIT
		// and its next attempt: read the state again.
		return &pause{}, nil
	case ctx.Err() == nil && errors.As(err, &pgErr) && giveWay[pgErr.Code]:
		return r.gaveWay(ctx, f.name, pgErr)
	case errors.Is(err, errLeaseLost):
		return nil, newError(ctx, []error{ErrLockLost, ErrRetryable}, err,
			"applying %s to schema %q: migration lock lost: %v, after this one stopped renewing it for longer than %v (a frozen or partitioned process); its version was not recorded here, and the other migrator runs the file; start again",
			f.name, r.sf.schema, err, r.cfg.Lease)
	case errors.As(err, &inv):
		return nil, newError(ctx, []error{ErrRetryable}, nil,
			"applying %s to schema %q: the file ran, but left the invalid index %s (a concurrent build that did not finish), so its version was not recorded; start again: the next start drops the index and runs the file again",
			f.name, r.sf.schema, strings.Join(inv.qualified(r.sf.schema), ", "))
	}
	ferr := r.fileError(ctx, r.h.pg(), f, err)
	if f.noTx && r.lease != nil && ctx.Err() == nil && !r.h.pg().IsClosed() {
		ferr = r.dropLeftovers(ctx, f, ferr)
	}
	return nil, ferr
}

// giveWay are the errors after which a file gives the lock up and is tried
// again after a pause, until the context ends: a lock wait that ran out of
// lock_timeout, and a deadlock or serialization conflict with another
// session (concurrent index builds of several schemas can deadlock), which
// the server resolved by failing this statement.
var giveWay = map[string]bool{"55P03": true, "40P01": true, "40001": true}

// gaveWay gives the lock up after a statement of what (a file, or the
// holder's own work) failed with an error of giveWay, and returns a pause
// that names what blocked it.
func (r *holder) gaveWay(ctx context.Context, what string, pgErr *pgconn.PgError) (*pause, error) {
	if pgErr.Code != "55P03" {
		return &pause{conflict: fmt.Errorf("%s: %w", what, pgErr)}, nil
	}
	b, err := r.blockers(ctx, what)
	if err != nil {
		return nil, r.m.lockedFault(ctx, r.h, nil, err, "finding what blocked "+what)
	}
	return &pause{blocked: b}, nil
}

// dropLeftovers drops, after f failed, the indexes f names that a
// concurrent build left invalid: such an index enforces nothing, no query
// uses it, and every write pays to maintain it. What it cannot drop now,
// the next run of f drops first.
func (r *holder) dropLeftovers(ctx context.Context, f *file, ferr error) error {
	results, err := r.h.pg().Exec(ctx, r.sf.invalidSQL).ReadAll()
	if err != nil {
		return ferr
	}
	var dropped []string
	for _, idx := range r.m.leftBy(f, results[0]) {
		if err := r.execLeased(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+qualified(r.sf.schema, idx)); err != nil {
			return fmt.Errorf("%w; its concurrent build left the invalid index %s.%s, which could not be dropped now (%v): the next run of the file drops it first", ferr, r.sf.schema, idx, err)
		}
		dropped = append(dropped, r.sf.schema+"."+idx)
	}
	if len(dropped) == 0 {
		return ferr
	}
	return fmt.Errorf("%w; the invalid index %s that its concurrent build left was dropped", ferr, strings.Join(dropped, ", "))
}

// invalidIndexes: a file ran, but an index it names is invalid.
type invalidIndexes struct{ names []string }

func (e *invalidIndexes) Error() string { return "invalid index " + strings.Join(e.names, ", ") }

func (e *invalidIndexes) qualified(schema string) []string {
	out := make([]string, len(e.names))
	for i, n := range e.names {
		out[i] = schema + "." + n
	}
	return out
}

// leftBy lists, from a reply to invalidSQL, the invalid indexes that f
// names: those it may drop and build again.
func (m *Migrations) leftBy(f *file, res *pgconn.Result) []string {
	if res == nil || res.Err != nil {
		return nil
	}
	var out []string
	for _, row := range res.Rows {
		if name := string(row[0]); f.names(name) {
			out = append(out, name)
		}
	}
	return out
}

// store is goose's version store as a holder uses it: the holder read the
// state under the lock and created the table if missing, so the store asks
// the database nothing, and version rows travel with the file's COMMIT.
type store struct {
	database.Store // goose's own, for what a holder never asks
	holder         *holder
}

// TableExists implements database.StoreExtender: the holder made sure of it.
func (s store) TableExists(context.Context, database.DBTxConn) (bool, error) { return true, nil }

// GetMigration implements database.Store from the holder's state.
func (s store) GetMigration(_ context.Context, _ database.DBTxConn, version int64) (*database.GetMigrationResult, error) {
	if _, ok := s.holder.state[version]; ok {
		return &database.GetMigrationResult{IsApplied: true}, nil
	}
	return nil, database.ErrVersionNotFound
}

// Insert implements database.Store.
func (s store) Insert(ctx context.Context, _ database.DBTxConn, req database.InsertRequest) error {
	return s.holder.record(ctx, req.Version, true)
}

// Delete implements database.Store.
func (s store) Delete(ctx context.Context, _ database.DBTxConn, version int64) error {
	return s.holder.record(ctx, version, false)
}
