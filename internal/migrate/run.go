package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
)

// upLocked migrates under the lock. fast is the plan the fast path made, for
// messages when this session turns out unable to migrate.
func (m *Migrations) upLocked(ctx context.Context, pool *pgxpool.Pool, sf *schemaFiles, fast plan, log *slog.Logger) (Result, error) {
	start := time.Now()
	l := lock{pool: pool, key: lockKey(m.module, sf.schema), probe: sf.probeSQL, check: sf.fastSQL}
	var res Result
	for {
		// While another migrator holds the lock, a waiter looks between
		// attempts whether it is done (the fast path's query), and leaves
		// without taking the lock when it is.
		var p plan
		h, err := l.acquire(ctx, func(st state) (bool, error) {
			var err error
			p, err = m.plan(st, sf.schema)
			return err == nil && p.upToDate(), err
		})
		if err != nil {
			return res, err
		}
		if h == nil {
			res.Version = max(res.Version, p.version)
			p.warnNewer(log, sf.schema, m.Latest())
			return res, nil
		}
		r := holder{m: m, pool: pool, sf: sf, fast: fast, h: h, res: &res}
		again, err := r.migrate(ctx)
		if again && err == nil {
			continue
		}
		if len(res.Applied) > 0 {
			log.LogAttrs(ctx, slog.LevelInfo, "applied migrations",
				slog.String("schema", sf.schema), slog.Any("files", res.Applied),
				slog.Int64("version", res.Version), slog.Duration("took", time.Since(start)))
		}
		if err == nil {
			r.plan.warnNewer(log, sf.schema, m.Latest())
		}
		return res, err
	}
}

// holder migrates while it holds the lock.
type holder struct {
	m        *Migrations
	pool     *pgxpool.Pool
	sf       *schemaFiles
	fast     plan
	h        *held
	res      *Result
	pre      probe           // the session, as the lock's attempt found it
	plan     plan            // read under the lock
	provider *goose.Provider // goose on the lock's connection
}

// migrate applies the pending files, each in a transaction of its own that
// holds the lock, and releases the lock. It reports again when it gave the
// lock up before the end (another migrator took it between two files, or a
// second connection did not come) and should wait for it again.
func (r *holder) migrate(ctx context.Context) (again bool, err error) {
	db := pinnedDB(r.h.conn, true)
	defer db.Close()
	defer func() { _ = r.h.release(ctx) }() // rolls back what is not committed
	// The state is read under the lock: with the lock's attempt after a
	// file, else on its own.
	var st state
	for {
		if r.pre, err = parseProbe(r.h.probe); err != nil {
			return false, err
		}
		if err := r.m.refuse(ctx, r.sf, r.pre, r.fast); err != nil {
			return false, err
		}
		created, err := r.prepare(ctx, r.pre)
		if err != nil {
			return false, err
		}
		if st == nil || created {
			if st, err = r.m.query(ctx, r.h.conn.Conn(), r.sf.stateSQL); err != nil {
				return false, r.m.lockedFault(ctx, r.h, nil, err, fmt.Sprintf("reading the migration state of schema %q", r.sf.schema))
			}
		}
		if r.plan, err = r.m.plan(st, r.sf.schema); err != nil {
			return false, err
		}
		r.res.Version = max(r.res.Version, r.plan.version)
		if len(r.plan.pending) == 0 {
			// Record the checksums of files applied without them.
			_, _, _, err := r.h.commit(ctx, r.sf.recordSQL, false, "")
			return false, r.commitError(ctx, err, nil, false)
		}
		f := r.m.byVersion[r.plan.pending[0]]
		var applied *file
		switch {
		case f.noTx && created:
			// The second connection sees only what is committed: commit
			// what this transaction created first.
		case f.noTx:
			ok, err := r.noTx(ctx, f)
			if err != nil || !ok {
				return err == nil, err
			}
			applied = f
		default:
			if err := r.apply(ctx, r.provider, r.h.conn, f, db); err != nil {
				return false, err
			}
			applied = f
		}
		last := applied != nil && len(r.plan.pending) == 1
		// The next transaction reads the state with its lock attempt.
		committed, got, reply, err := r.h.commit(ctx, r.sf.recordSQL, !last, r.sf.stateSQL)
		if committed && applied != nil {
			r.res.Applied = append(r.res.Applied, applied.name)
			r.res.Version = max(r.res.Version, applied.version)
		}
		if err != nil {
			return false, r.commitError(ctx, err, applied, committed)
		}
		if last {
			return false, nil
		}
		if !got {
			return true, nil // another migrator took the lock between two files: wait like the others
		}
		if st, err = stateOf(reply); err != nil {
			return false, r.m.lockedFault(ctx, r.h, nil, err, fmt.Sprintf("reading the migration state of schema %q", r.sf.schema))
		}
	}
}

// prepare creates what is missing of the schema, goose's version table (as
// goose makes it, with its first row) and the checksum table, in the lock's
// transaction and in one round trip. It reports whether it created anything.
func (r *holder) prepare(ctx context.Context, pre probe) (created bool, err error) {
	var create []string
	if !pre.schemaExists {
		create = append(create, r.sf.createSchemaSQL)
	}
	if !slices.Contains(pre.existing, r.m.versionTable) {
		create = append(create, r.sf.versionsSQL, "INSERT INTO "+r.sf.versionTable+" (version_id, is_applied) VALUES (0, true)")
	}
	if !slices.Contains(pre.existing, r.m.sumTable) {
		create = append(create, r.sf.sumsSQL)
	}
	if len(create) == 0 {
		return false, nil
	}
	if _, err := r.h.pg().Exec(ctx, strings.Join(create, ";\n")).ReadAll(); err != nil {
		return false, r.m.lockedFault(ctx, r.h, nil, err, fmt.Sprintf("creating schema %q and the tables that track its migrations", r.sf.schema))
	}
	return true, nil
}

// noTx applies f, marked NO TRANSACTION, on a second connection while the
// lock's transaction holds the lock. The second connection is taken only if
// it comes within secondWait: otherwise the holder reports !ok after a
// jittered pause, to give the lock and its connection up and wait again, so
// that two holders never wait for each other's connection.
func (r *holder) noTx(ctx context.Context, f *file) (ok bool, err error) {
	if n := r.pool.Config().MaxConns; n < 2 {
		return false, newError(ctx, []error{ErrPoolTooSmall}, nil,
			"migrating schema %q: %s is marked NO TRANSACTION, so it runs on a second connection while the first holds the migration lock, but the pool's MaxConns is %d: raise it to at least 2",
			r.sf.schema, f.name, n)
	}
	doing := fmt.Sprintf("getting a second connection to apply %s", f.name)
	waitCtx, cancel := context.WithTimeout(ctx, secondWait)
	dc, err := stdlib.GetPoolConnector(r.pool).Connect(waitCtx)
	cancel()
	switch {
	case ctx.Err() != nil:
		return false, interrupted(ctx, doing)
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		return false, r.m.lockedFault(ctx, r.h, nil, err, doing)
	case err != nil:
		if err := sleep(ctx, rand.N(secondWait)+time.Millisecond); err != nil {
			return false, interrupted(ctx, doing)
		}
		return false, nil
	}
	second := dc.(*stdlib.Conn)
	defer second.Close()
	defer r.h.keepAlive()()
	db := pinnedDB(second, false)
	defer db.Close()
	return true, r.apply(ctx, nil, second, f, db)
}

// apply runs f with goose on db, whose one connection is conn, and says what
// a failure means. provider is reused if not nil.
func (r *holder) apply(ctx context.Context, provider *goose.Provider, conn *stdlib.Conn, f *file, db *sql.DB) error {
	if provider == nil {
		store, err := newHeldStore(r.sf.versionTable, r.h, conn != r.h.conn)
		if err == nil {
			provider, err = goose.NewProvider(goose.DialectCustom, db, r.sf.fsys,
				goose.WithStore(store),
				goose.WithDisableGlobalRegistry(true), // a host's own goose registrations stay out
			)
		}
		if err != nil {
			return fmt.Errorf("preparing migrations for schema %q: %w", r.sf.schema, err)
		}
		if conn == r.h.conn {
			r.provider = provider
		}
	}
	_, err := provider.ApplyVersion(ctx, f.version, true)
	if err == nil {
		return nil
	}
	var partial *goose.PartialError
	if !errors.As(err, &partial) {
		return r.m.lockedFault(ctx, r.h, conn.Conn().PgConn(), err, fmt.Sprintf("migrating schema %q", r.sf.schema))
	}
	return r.fileError(ctx, conn.Conn().PgConn(), f, partial.Err)
}

// fileError says what a file that did not apply means: the caller's context
// ended, the lock or a connection was lost, a setting or privilege of the
// session stopped it, or its SQL failed.
func (r *holder) fileError(ctx context.Context, conn *pgconn.PgConn, f *file, cause error) error {
	doing := fmt.Sprintf("applying %s to schema %q", f.name, r.sf.schema)
	kept := fmt.Sprintf("the schema stays at version %d and nothing of the file was kept", r.res.Version)
	if f.noTx {
		kept = fmt.Sprintf("the schema stays at version %d, and the file is marked NO TRANSACTION, so its statements before the failing one were kept: undo or finish them by hand", r.res.Version)
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w; %s: give it a longer deadline and start again", interrupted(ctx, doing), kept)
	case f.noTx && errors.Is(cause, errFenced):
		return newError(ctx, nil, r.m.lockedFault(ctx, r.h, conn, cause, doing),
			"%v; the file is marked NO TRANSACTION: its statements ran, but its version was not recorded, so the next start runs it again (write such files to be safe to run twice: IF NOT EXISTS)",
			r.m.lockedFault(ctx, r.h, conn, cause, doing))
	case r.h.pg().IsClosed() || errors.Is(cause, errFenced):
		return r.m.lockedFault(ctx, r.h, conn, cause, doing)
	}
	var pgErr *pgconn.PgError
	if errors.As(cause, &pgErr) && pgErr.Code == "57014" && r.pre.statementTimeout != "0" {
		return newError(ctx, nil, cause,
			"%s: statement_timeout, which is %s for role %q, cancelled a statement (%v): raise it for the migrating role (ALTER ROLE %s SET statement_timeout = ...) or split the file, then start again; %s",
			doing, r.pre.statementTimeout, r.pre.role, cause, r.pre.role, kept)
	}
	if flt := fault(ctx, conn, cause, doing); flt != nil {
		return newError(ctx, nil, flt, "%v; %s", flt, kept)
	}
	return newError(ctx, []error{ErrFailed}, cause, "%s in schema %q: %v; %s; fix the file and start again",
		f.name, r.sf.schema, cause, kept)
}

// commitError says why a transaction of the holder did not commit, or why
// taking the lock for the next file failed after it did.
func (r *holder) commitError(ctx context.Context, err error, applied *file, committed bool) error {
	if err == nil {
		return nil
	}
	if committed {
		return r.m.lockedFault(ctx, r.h, nil, err, "taking the migration lock for the next file")
	}
	doing := "committing the migration lock's transaction"
	if applied != nil {
		doing = fmt.Sprintf("committing %s", applied.name)
	}
	if r.h.pg().IsClosed() {
		// The reply to COMMIT is lost: it may or may not have happened.
		if ctx.Err() != nil {
			return fmt.Errorf("%w; it may or may not have been committed: start again, which applies only what is missing", interrupted(ctx, doing))
		}
		return newError(ctx, []error{ErrRetryable}, err,
			"%s: the connection was lost (%v), so it may or may not have been committed: start again, which applies only what is missing", doing, err)
	}
	if applied != nil {
		// A check deferred to COMMIT failed: it is the file's.
		return r.fileError(ctx, r.h.pg(), applied, err)
	}
	return r.m.lockedFault(ctx, r.h, nil, err, doing)
}

// lockedFault says what an error while holding the lock means. A lost lock
// connection is a lost lock, whichever connection noticed first.
func (m *Migrations) lockedFault(ctx context.Context, h *held, conn *pgconn.PgConn, err error, doing string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: give it a longer deadline and start again", interrupted(ctx, doing))
	}
	if h.pg().IsClosed() || errors.Is(err, errFenced) {
		return newError(ctx, []error{ErrLockLost, ErrRetryable}, err,
			"%s: migration lock lost: the connection holding it failed (%v): its backend was terminated, the server restarted or failed over, or a pooler closed it; its transaction was rolled back, and nothing ran unlocked; start again",
			doing, err)
	}
	if f := fault(ctx, conn, err, doing); f != nil {
		return f
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// refuse fails closed, before anything is created, when this session cannot
// migrate the schema (a read-only server, a role without CREATE) or the schema
// holds tables under the library's names that the library did not make.
func (m *Migrations) refuse(ctx context.Context, sf *schemaFiles, pre probe, fast plan) error {
	behind := fmt.Sprintf("schema %q is behind this code (pending: %s)", sf.schema, m.names(fast.pending))
	if len(fast.pending) == 0 {
		behind = fmt.Sprintf("schema %q has applied files whose checksums are not recorded yet", sf.schema)
	}
	migrate := fmt.Sprintf("`%s migrate -schema %s`", m.module, sf.schema)
	switch {
	case pre.readOnly:
		why := "default_transaction_read_only is on for this session"
		if pre.inRecovery {
			why = "it is a hot standby, in recovery"
		}
		return newError(ctx, []error{ErrNotMigrated}, nil,
			"%s, and the server is read-only (%s): migrate on the primary: run %s with the primary's DSN, or add target_session_attrs=read-write to the DSN",
			behind, why, migrate)
	case !pre.canCreate && !pre.schemaExists:
		return newError(ctx, []error{ErrNotMigrated}, nil,
			"schema %q does not exist, and role %q may not create it (permission denied: it has no CREATE on the database): run %s with a role that may, or create the schema for the role that will own it (CREATE SCHEMA %s AUTHORIZATION <role>)",
			sf.schema, pre.role, migrate, sf.schema)
	case !pre.canCreate:
		return newError(ctx, []error{ErrNotMigrated}, nil,
			"%s, and role %q cannot migrate it (permission denied: it has no CREATE on the schema): run %s with the schema owner's DSN (a deploy step), then start again",
			behind, pre.role, migrate)
	}
	if slices.Contains(pre.existing, m.versionTable) {
		return nil
	}
	var clash []string
	for _, t := range pre.existing {
		if slices.Contains(m.tables, t) {
			clash = append(clash, sf.schema+"."+t)
		}
	}
	if len(clash) > 0 {
		return newError(ctx, []error{ErrSchemaClash}, nil,
			"schema %q already holds %s, which the library's migrations create, but the library has never migrated it (there is no %s.%s): lend the library a schema of its own; nothing was created",
			sf.schema, strings.Join(clash, ", "), sf.schema, m.versionTable)
	}
	return nil
}
