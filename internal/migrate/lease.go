package migrate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// A lease stands in for the migration lock while a file marked NO
// TRANSACTION runs: a row of <schema>.<module>_goose_lease that names its
// holder (a random token), the file and when it expires. The holder takes it
// inside the lock's transaction and commits, so the row and the end of the
// transaction are one step; from then on it holds no transaction at all, so
// a concurrent index build, which waits for older transactions, never waits
// for a migrator.
//
// Only one lease can exist (the row's key is fixed), and a migrator with the
// lock takes it only when it has expired and the holder is not running a
// statement: the holder renews it before each statement of the file, and
// sends each statement with its token in a leading comment, so that
// pg_stat_activity shows a long concurrent index build as the holder at
// work, not as a holder that stopped talking. A holder that stops (frozen,
// partitioned) loses the lease Config.Lease after its last statement ended;
// the next migrator takes it over, and the old holder, if it resumes, finds
// its token gone at its next renewal or when it takes the lock back to
// record the version: ErrLockLost, with nothing recorded twice.
//
// Seeing another session's statement needs the same role (or
// pg_read_all_stats): every migrator of a schema normally runs as its owner.
type lease struct {
	token   int64
	version int64 // the file the lease is for
}

// leaseSQL are the statements of the lease of one schema.
type leaseSQL struct {
	table  string // quoted, schema-qualified
	module string // names the library in the tag, for a person reading pg_stat_activity
}

// create makes the lease table, if missing, in the lock's transaction.
func (s leaseSQL) create() string {
	return `CREATE TABLE IF NOT EXISTS ` + s.table + ` (
	id integer PRIMARY KEY CHECK (id = 1),
	token bigint NOT NULL,
	version bigint NOT NULL,
	expires_at timestamptz NOT NULL
)`
}

// tag is the comment that leads every statement sent under the lease.
func (s leaseSQL) tag(l lease) string {
	return "/* " + s.module + ": migration lease " + strconv.FormatInt(l.token, 10) + " */ "
}

// stale is true of the lease row held when it may be taken over: it has
// expired, and no statement of its holder runs.
func (s leaseSQL) stale(held string) string {
	return fmt.Sprintf(`%[1]s.expires_at < pg_catalog.clock_timestamp() AND NOT EXISTS (
	SELECT FROM pg_catalog.pg_stat_activity a
	WHERE a.datname = pg_catalog.current_database() AND a.state = 'active'
	AND pg_catalog.starts_with(a.query, '/* %[2]s: migration lease ' || %[1]s.token || ' */'))`, held, s.module)
}

// free is true when there is no lease that a migrator must wait out.
func (s leaseSQL) free() string {
	return "NOT EXISTS (SELECT FROM " + s.table + " held WHERE NOT (" + s.stale("held") + "))"
}

// take is the statement, in the lock's transaction, that takes the lease
// when there is none, or when the one there expired and its holder is not
// running a statement; then the state of the lease, as (token, version,
// seconds left), whoever holds it.
func (s leaseSQL) take(l lease, ttl time.Duration) string {
	return fmt.Sprintf(`INSERT INTO %[1]s AS held (id, token, version, expires_at)
VALUES (1, %[2]d, %[3]d, pg_catalog.clock_timestamp() + %[4]s)
ON CONFLICT (id) DO UPDATE SET token = excluded.token, version = excluded.version, expires_at = excluded.expires_at
WHERE %[5]s;
SELECT token, version, extract(epoch FROM expires_at - pg_catalog.clock_timestamp()) FROM %[1]s`,
		s.table, l.token, l.version, interval(ttl), s.stale("held"))
}

// renew extends the lease before a statement; no row means it was taken.
func (s leaseSQL) renew(l lease, ttl time.Duration) string {
	return fmt.Sprintf("UPDATE %s SET expires_at = pg_catalog.clock_timestamp() + %s WHERE id = 1 AND token = %d",
		s.table, interval(ttl), l.token)
}

// lapse makes the lease expire now, for a holder whose connection is gone.
func (s leaseSQL) lapse(l lease) string {
	return fmt.Sprintf("UPDATE %s SET expires_at = pg_catalog.clock_timestamp() WHERE id = 1 AND token = %d", s.table, l.token)
}

// end gives the lease back, in the lock's transaction or on its own.
func (s leaseSQL) end(l lease) string {
	return fmt.Sprintf("DELETE FROM %s WHERE id = 1 AND token = %d", s.table, l.token)
}

func interval(d time.Duration) string {
	return "'" + strconv.FormatInt(d.Milliseconds(), 10) + " milliseconds'::interval"
}

// newLease draws a token for a lease of the file of version.
func newLease(version int64) lease {
	return lease{token: rand.Int64N(1<<62) + 1, version: version}
}

// leaseHolder is what a migrator that did not get the lease knows of it.
type leaseHolder struct {
	version int64
	left    time.Duration // until it expires, if its holder stops renewing it
}

// parseLeaseState reads the reply to the second statement of take.
func parseLeaseState(res *pgconn.Result, mine lease) (got bool, other leaseHolder, err error) {
	if res.Err != nil {
		return false, other, res.Err
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 3 {
		return false, other, fmt.Errorf("unexpected reply to the lease: %d rows", len(res.Rows))
	}
	row := res.Rows[0]
	token, err := strconv.ParseInt(string(row[0]), 10, 64)
	if err != nil {
		return false, other, err
	}
	if other.version, err = strconv.ParseInt(string(row[1]), 10, 64); err != nil {
		return false, other, err
	}
	secs, err := strconv.ParseFloat(string(row[2]), 64)
	if err != nil {
		return false, other, err
	}
	other.left = time.Duration(secs * float64(time.Second))
	return token == mine.token, other, nil
}

// errLeaseLost: the lease was taken over while its holder was away.
var errLeaseLost = errors.New("the lease that stood in for the migration lock was taken over by another migrator")

// concurrentIndexOp reports whether stmt builds, rebuilds or drops an index
// CONCURRENTLY. Such a statement takes no lock that blocks reads or writes,
// but waits for every older transaction of the database, and lock_timeout
// counts that wait: it runs with no lock_timeout, bounded by the caller's
// context, or it would fail (leaving an invalid index) whenever any
// transaction of the host lasts longer. The first words decide, after
// comments: CREATE [UNIQUE] INDEX CONCURRENTLY, DROP INDEX CONCURRENTLY,
// REINDEX [(options)] {INDEX|TABLE|SCHEMA|DATABASE|SYSTEM} CONCURRENTLY.
func concurrentIndexOp(stmt string) bool {
	w := words(stmt, 6)
	switch {
	case len(w) >= 3 && w[0] == "create" && w[1] == "index":
		return w[2] == "concurrently"
	case len(w) >= 4 && w[0] == "create" && w[1] == "unique" && w[2] == "index":
		return w[3] == "concurrently"
	case len(w) >= 3 && w[0] == "drop" && w[1] == "index":
		return w[2] == "concurrently"
	case len(w) >= 3 && w[0] == "reindex":
		return w[2] == "concurrently" || len(w) >= 4 && w[3] == "concurrently"
	}
	return false
}

// words returns up to n leading words of an SQL statement, lowercased,
// skipping white space, -- comments, /* */ comments (nested, as PostgreSQL
// reads them) and a parenthesised option list.
func words(sql string, n int) []string {
	var out []string
	for i := 0; i < len(sql) && len(out) < n; {
		switch c := sql[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			i++
		case strings.HasPrefix(sql[i:], "--"):
			end := strings.IndexByte(sql[i:], '\n')
			if end < 0 {
				return out
			}
			i += end + 1
		case strings.HasPrefix(sql[i:], "/*"):
			depth := 0
			for i < len(sql) {
				if strings.HasPrefix(sql[i:], "/*") {
					depth, i = depth+1, i+2
				} else if strings.HasPrefix(sql[i:], "*/") {
					depth, i = depth-1, i+2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
		case c == '(':
			end := strings.IndexByte(sql[i:], ')')
			if end < 0 {
				return out
			}
			i += end + 1
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_':
			j := i
			for j < len(sql) && (sql[j] >= 'a' && sql[j] <= 'z' || sql[j] >= 'A' && sql[j] <= 'Z' || sql[j] == '_' || sql[j] >= '0' && sql[j] <= '9') {
				j++
			}
			out = append(out, strings.ToLower(sql[i:j]))
			i = j
		default:
			return out
		}
	}
	return out
}
