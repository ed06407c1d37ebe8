// Package stmtcache decides how the library's statements run on a pool that
// many Clients share: prepared and cached by pgx while they fit in a share of
// each connection's statement cache, unnamed otherwise.
package stmtcache

import (
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgdual/mylib/internal/sqltmpl"
)

// How the library's statements are executed on a pool that many Clients
// share.
//
// In its default mode pgx prepares every statement it runs and keeps it in a
// per-connection cache of 512 (StatementCacheCapacity), evicting the least
// recently used. Every schema's SQL is a different statement, so one pool
// serving hundreds of tenants would thrash that cache: each call prepares a
// statement (an extra round trip) and deallocates another, slower than not
// caching at all. The library therefore admits its statements into the cache
// while they fit in a share of it, and runs the rest as unnamed statements
// (pgx.QueryExecModeExec: one round trip, parsed and planned each time). The
// host's own statements keep the remaining share.

// hostShare is the part of a pool's statement cache left to the host's own
// statements: a quarter, so with pgx's default of 512 the library keeps up to
// 384 of its statements prepared on every connection of the pool.
const hostShare = 4

// Statement is a statement rendered for a Client's schema, and how to run it.
type Statement struct {
	// SQL is the statement as the Client's schema runs it.
	SQL string
	// exec says the statement runs unnamed: its pool's statement cache is
	// full of the library's other statements.
	exec bool
	// admitted says the statement holds a place in poolStatements.
	admitted bool
}

// Args returns the arguments of a query, led by the execution mode when the
// statement runs unnamed (pgx reads a leading QueryExecMode as an option).
func (s *Statement) Args(args ...any) []any {
	if !s.exec {
		return args
	}
	return append([]any{pgx.QueryExecModeExec}, args...)
}

// Statements are a Client's statements, rendered and admitted on first use.
type Statements struct {
	render *sqltmpl.Renderer
	pool   *poolStatements
	closed bool
	byStmt sync.Map // *sqltmpl.Statement -> *statement
}

// Get returns s rendered for the Client's schema, with how to run it. After
// the first call for a statement it costs one map lookup.
func (st *Statements) Get(s *sqltmpl.Statement) *Statement { return st.lookup(s, true) }

// Planned is Get for a statement that the server must plan for its
// arguments on every call: it is never kept prepared, where a generic plan
// made while a table was small would outlive the table's growth. It runs
// unnamed (exec mode) when the pool prepares statements, and in the pool's
// own mode otherwise, which keeps no plan.
func (st *Statements) Planned(s *sqltmpl.Statement) *Statement { return st.lookup(s, false) }

func (st *Statements) lookup(s *sqltmpl.Statement, cache bool) *Statement {
	if v, ok := st.byStmt.Load(s); ok {
		return v.(*Statement)
	}
	p := st.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := st.byStmt.Load(s); ok {
		return v.(*Statement)
	}
	out := &Statement{SQL: st.render.SQL(s)}
	switch {
	case st.closed:
	case cache:
		out.admitted = p.admit(out.SQL)
		out.exec = !out.admitted
	default:
		out.exec = p.prepares
	}
	st.byStmt.Store(s, out)
	return out
}

// Release gives back the Client's places in its pool's statement cache.
func (st *Statements) Release() {
	p := st.pool
	sharedPools.mu.Lock()
	defer sharedPools.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	st.closed = true
	st.byStmt.Range(func(_, v any) bool {
		if s := v.(*Statement); s.admitted {
			p.drop(s.SQL)
		}
		return true
	})
	if p.clients--; p.clients == 0 {
		delete(sharedPools.byPool, p.key)
	}
}

// poolStatements is what the Clients on one pool keep in its connections'
// statement caches: at most room distinct statements.
type poolStatements struct {
	key  *pgxpool.Pool
	room int
	// prepares says the pool's mode prepares statements and keeps their
	// plans (pgx's default, QueryExecModeCacheStatement).
	prepares bool
	clients  int // guarded by sharedPools.mu

	mu       sync.Mutex
	admitted map[string]int // SQL -> Clients that hold it
}

// admit reports whether sql may be kept in the pool's statement caches.
func (p *poolStatements) admit(sql string) bool {
	if n, ok := p.admitted[sql]; ok {
		p.admitted[sql] = n + 1
		return true
	}
	if len(p.admitted) >= p.room {
		return false
	}
	p.admitted[sql] = 1
	return true
}

func (p *poolStatements) drop(sql string) {
	if p.admitted[sql]--; p.admitted[sql] <= 0 {
		delete(p.admitted, sql)
	}
}

// sharedPools are the pools this process's Clients run on, standalone or
// borrowed, each with what the Clients keep in its statement caches.
var sharedPools = struct {
	mu     sync.Mutex
	byPool map[*pgxpool.Pool]*poolStatements
}{byPool: make(map[*pgxpool.Pool]*poolStatements)}

// New registers a Client on pool; Release unregisters it.
func New(pool *pgxpool.Pool, render *sqltmpl.Renderer) *Statements {
	sharedPools.mu.Lock()
	defer sharedPools.mu.Unlock()
	p, ok := sharedPools.byPool[pool]
	if !ok {
		cc := pool.Config().ConnConfig
		p = &poolStatements{key: pool, room: cacheRoom(cc), prepares: cc.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement,
			admitted: make(map[string]int)}
		sharedPools.byPool[pool] = p
	}
	p.clients++
	return &Statements{render: render, pool: p}
}

// cacheRoom is how many of the library's statements a pool's connections may
// cache: a share of the cache the pool's query mode fills. In the modes that
// cache nothing (exec, simple protocol, describe exec) there is no limit, and
// the library never changes the host's mode.
func cacheRoom(cc *pgx.ConnConfig) int {
	capacity := 0
	switch cc.DefaultQueryExecMode {
	case pgx.QueryExecModeCacheStatement:
		capacity = cc.StatementCacheCapacity
	case pgx.QueryExecModeCacheDescribe:
		capacity = cc.DescriptionCacheCapacity
	default:
		return int(^uint(0) >> 1)
	}
	return capacity - capacity/hostShare
}
