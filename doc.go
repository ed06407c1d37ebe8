// Package mylib is an audit log kept in PostgreSQL: who did what to what, and
// when ([Client.Record]), listed per subject newest first ([Client.List]). It
// is also a template for Go libraries that keep their data in PostgreSQL:
// internal/newlib copies it into a new library, whose own domain replaces the
// audit log, and brings the new library the template's later fixes.
//
// The library owns its tables. It keeps them in one schema of the database,
// creates and migrates them itself, and lives beside the host application's
// own tables, other libraries and other copies of itself in other schemas.
//
// # Standalone
//
// Given a DSN, the library builds its own pool, owns it and closes it in
// [Client.Close]:
//
//	client, err := mylib.New(ctx, mylib.WithDSN(os.Getenv("DATABASE_URL")))
//	if err != nil {
//		return err
//	}
//	defer client.Close()
//
// The schema is [DefaultSchema] unless [WithSchema] names another.
// [WithPoolConfig] adjusts the pool before it is built: sizes, hooks, a
// tracer (see the example of WithPoolConfig: a pgx.QueryTracer is also the
// way to OpenTelemetry, through any pgx tracing package).
//
// A process should open one pool per database. A second standalone pool to
// the same server, database and user logs a warning that points at embedded
// mode.
//
// # Embedded and shared pools
//
// A host application that has a *pgxpool.Pool lends it with [WithManager]. A
// [Manager] is any type of the host's with two methods, Pool and Schema; the
// host imports nothing of this package to write one. The library borrows the
// pool and never closes it:
//
//	client, err := mylib.New(ctx, mylib.WithManager(tenant{pool, "tenant_acme"}))
//
// Several libraries, or one library per tenant, share one pool this way, each
// in a schema of its own. A Client's schema is fixed for its life: open one
// Client per schema. [Client.RecordTx] records inside the host's own
// transaction, so that the host's write and its audit record commit or roll
// back together.
//
// Embedded mode needs a pgx pool. A host that talks to PostgreSQL only
// through database/sql cannot lend one: it opens the library standalone with
// its DSN, or opens a pgxpool.Pool beside its database/sql code and lends
// that: [github.com/jackc/pgx/v5/stdlib.OpenDBFromPool] gives the
// database/sql code a *sql.DB on the same pool, so the process still has one
// pool.
//
// # Migrations
//
// In both modes [New] brings the schema up to date with the migrations
// embedded in the library (goose SQL files), tracked in a version table named
// after the library, <schema>.mylib_goose_db_version, beside a table of the
// applied files' checksums. A start on an up-to-date schema costs one query
// and takes no lock. Otherwise New takes a lock keyed on the library and the
// schema, so that concurrent starts, across processes and behind PgBouncer in
// transaction pooling mode, migrate once; each file runs in a transaction of
// its own that holds the lock, on one connection, so a migrator never waits
// for a second connection while it holds one. A file marked NO TRANSACTION
// (CREATE INDEX CONCURRENTLY) runs on that connection under a lease that
// holds no transaction, so a concurrent index build never waits for a
// migrator. A migrator that stops talking (frozen, partitioned) loses the
// lock after 15 s, and each statement waits at most [WithLockTimeout] (100
// ms) for a lock before it gives way and tries again, so the host's queries
// never queue behind a migration for longer. New never migrates down: a
// schema newer than the code (an older replica during a rolling deploy, a
// rolled back binary) starts with a warning. [MigrateTo], run with the newer
// release, takes the schema back through the files' Down sections.
//
// A host that migrates in a deploy step, and runs the application with a role
// that cannot change the schema, calls [Migrate] there (or the library's
// command, cmd/mylib), gives the application's role what it needs with
// [Grants], and reads where a schema stands (and its invalid indexes) with
// [Status]; [Script] is the SQL for a DBA to run with psql.
//
// Never edit, delete or renumber an applied migration: New refuses a schema
// whose applied files changed ([ErrDrift]), a file numbered below the applied
// version ([ErrOutOfOrder]) and an applied version whose file is gone
// ([ErrUnknownVersion]). Add a new file instead.
//
// # Errors
//
// New checks every option before it touches the database. The errors a
// caller branches on are sentinels to test with errors.Is: [ErrInvalidConfig]
// and [ErrInvalidSchema] for what the caller passed, [ErrMigration] and the
// more precise errors it comes with for the migrations, [ErrRetryable] for
// faults that starting again fixes, [ErrNotMigrated] for a role or a server
// that cannot migrate, and [ErrClosed] for a Client used after Close. An
// error matches every sentinel that is true of it. No error and no log line
// holds the DSN's password.
//
// # Logging
//
// The library logs through log/slog: migrations applied, a schema newer than
// the code, a second pool to one database. [WithLogger] sets the logger
// (slog.Default() otherwise). Every line carries the attribute "library",
// whose value is the library's name, so that several libraries on one logger
// can be told apart.
//
// # Testing
//
// Package [github.com/pgdual/mylib/mylibtest] gives a host's tests a Client in
// a fresh schema of its own on the host's test pool, dropped when the test
// ends and safe with t.Parallel(). It brings no container runtime into the
// host's build: the host's tests bring the database.
package mylib

// The library's own (newlib.manifest): a library made from the template
// rewrites the opening of the package comment above; its sections on modes,
// migrations, errors and logging hold for it too.
