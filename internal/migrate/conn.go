package migrate

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"

	"github.com/jackc/pgx/v5/stdlib"
)

// pinnedDB is a database/sql handle for goose whose one connection is c, a
// connection the migrator already holds: goose never asks the pool for
// another. With inLockTx, c is in the lock's transaction, which the migrator
// commits or rolls back itself: the transaction goose begins for a file is
// that one, and its Commit and Rollback leave it to the migrator.
//
// Closing the handle leaves c to the migrator, which releases it.
func pinnedDB(c *stdlib.Conn, inLockTx bool) *sql.DB {
	db := sql.OpenDB(&pinnedConnector{conn: &pinnedConn{Conn: c, inLockTx: inLockTx}})
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	return db
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
	inLockTx bool
}

// BeginTx begins a transaction, or joins the lock's transaction.
func (c *pinnedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if !c.inLockTx {
		return c.Conn.BeginTx(ctx, opts)
	}
	return lockTx{}, nil
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
