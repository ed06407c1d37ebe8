package migrate

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"

	"github.com/jackc/pgx/v5/stdlib"
)

// pinnedDB is a database/sql handle for goose whose one connection is c, the
// connection the migrator holds: goose never asks the pool for another. The
// transaction goose begins for a file is the lock's, which the migrator
// commits or rolls back itself. While exec is set (a file marked NO
// TRANSACTION, run under the lease), goose's statements go through it.
//
// Closing the handle leaves c to the migrator, which releases it.
func pinnedDB(c *stdlib.Conn) (*sql.DB, *pinnedConn) {
	pc := &pinnedConn{Conn: c}
	db := sql.OpenDB(&pinnedConnector{conn: pc})
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	return db, pc
}

type pinnedConnector struct {
	conn   *pinnedConn
	handed bool
}

// Connect hands out the pinned connection once. database/sql asks again only
// after it discarded the connection as broken: there is no other to give.
func (p *pinnedConnector) Connect(context.Context) (driver.Conn, error) {
	if p.handed {
		return nil, errLostPinned
	}
	p.handed = true
	return p.conn, nil
}

func (p *pinnedConnector) Driver() driver.Driver { return stdlib.GetDefaultDriver() }

var errLostPinned = errors.New("the migration's connection was closed")

// pinnedConn is stdlib's connection with the transaction and lifetime
// methods that pinning needs.
type pinnedConn struct {
	*stdlib.Conn
	exec func(ctx context.Context, stmt string) error
	hook func(stmt string) // Migrations.hook
}

// BeginTx joins the lock's transaction.
func (c *pinnedConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) {
	return lockTx{}, nil
}

// ExecContext runs a statement of a file: in the lock's transaction as it
// is, or through exec under the lease.
func (c *pinnedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if c.hook != nil {
		c.hook(query)
	}
	if c.exec == nil || len(args) > 0 {
		return c.Conn.ExecContext(ctx, query, args)
	}
	if err := c.exec(ctx, query); err != nil {
		return nil, err
	}
	return driver.RowsAffected(0), nil
}

// ResetSession keeps the connection: it is in the lock's transaction by design.
func (c *pinnedConn) ResetSession(context.Context) error {
	if c.Conn.Conn().IsClosed() {
		return driver.ErrBadConn
	}
	return nil
}

// IsValid implements driver.Validator.
func (c *pinnedConn) IsValid() bool { return !c.Conn.Conn().IsClosed() }

// Close leaves the connection to the migrator.
func (c *pinnedConn) Close() error { return nil }

// lockTx is goose's view of the lock's transaction: the migrator ends it.
type lockTx struct{}

func (lockTx) Commit() error   { return nil }
func (lockTx) Rollback() error { return nil }
