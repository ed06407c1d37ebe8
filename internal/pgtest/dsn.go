package pgtest

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// ConnDSN returns dsn with its database replaced by database, keeping everything else (host, user,
// password, options). dsn may be a URL (postgres://...) or keyword/value pairs (host=... dbname=...).
func ConnDSN(dsn, database string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.Path, u.RawPath = "/"+database, ""
			if q := u.Query(); q.Has("dbname") { // libpq lets a dbname parameter override the path
				q.Set("dbname", database)
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
	}
	return setKeyword(dsn, "dbname", database)
}

// MultiHostDSN returns a connection string that lists the hosts and ports of every dsn, in order, with
// the rest (database, user, password, parameters) of the first: for two pgtemp servers,
// postgres://postgres@/postgres?host=/dev/shm/pgtemp-1/sock,/dev/shm/pgtemp-2/sock&port=5432,5432&...
// (URL-escaped). pgx, like libpq, tries the hosts in turn; with target_session_attrs=read-write
// ([SetParam]) it passes over a server that is down or read-only, as a client of a primary and its
// standby ([Standby]) does to find whichever takes writes, before and after a failover.
func MultiHostDSN(t testing.TB, dsns ...string) string {
	t.Helper()
	if len(dsns) == 0 {
		t.Fatal("pgtest: MultiHostDSN needs at least one connection string")
	}
	var hosts, ports []string
	for _, dsn := range dsns {
		cc, err := pgconn.ParseConfig(dsn)
		if err != nil {
			t.Fatal("pgtest: MultiHostDSN: not a valid connection string") // pgx's error quotes the DSN, password included
		}
		// A host with TLS to try, then none (sslmode=prefer) is one host, listed once.
		seen := map[string]bool{}
		for _, f := range append([]*pgconn.FallbackConfig{{Host: cc.Host, Port: cc.Port}}, cc.Fallbacks...) {
			port := strconv.Itoa(int(f.Port))
			if !seen[f.Host+"\x00"+port] {
				seen[f.Host+"\x00"+port] = true
				hosts, ports = append(hosts, f.Host), append(ports, port)
			}
		}
	}
	return reroute(dsns[0], strings.Join(hosts, ","), strings.Join(ports, ","))
}

// reroute returns dsn with its host and port replaced: in a URL, in the query, where a list of unix
// socket directories can go.
func reroute(dsn, host, port string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.Host = "" // host and port go in the query; user and password stay
			dsn = u.String()
		}
	}
	return SetParam(SetParam(dsn, "host", host), "port", port)
}

// setKeyword sets key to value in a keyword/value connection string, replacing an existing setting.
func setKeyword(dsn, key, value string) string {
	var out []string
	found := false
	for _, kv := range splitKeywords(dsn) {
		if kv[0] == key {
			kv[1], found = value, true
		}
		out = append(out, kv[0]+"="+quoteValue(kv[1]))
	}
	if !found {
		out = append(out, key+"="+quoteValue(value))
	}
	return strings.Join(out, " ")
}

// splitKeywords parses "k1=v1 k2 = 'v 2'" by libpq's rules: spaces around "=" are allowed, a value may
// be single-quoted, and a backslash escapes the next character.
func splitKeywords(s string) [][2]string {
	var pairs [][2]string
	for {
		s = strings.TrimLeft(s, " \t\n\r")
		if s == "" {
			return pairs
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return append(pairs, [2]string{strings.TrimSpace(s), ""})
		}
		key := strings.TrimSpace(s[:eq])
		s = strings.TrimLeft(s[eq+1:], " \t\n\r")
		var value strings.Builder
		quoted := strings.HasPrefix(s, "'")
		if quoted {
			s = s[1:]
		}
		i := 0
		for ; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				value.WriteByte(s[i])
				continue
			}
			if (quoted && c == '\'') || (!quoted && strings.IndexByte(" \t\n\r", c) >= 0) {
				break
			}
			value.WriteByte(c)
		}
		if quoted && i < len(s) {
			i++ // the closing quote
		}
		s = s[i:]
		pairs = append(pairs, [2]string{key, value.String()})
	}
}

func quoteValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r'\\") {
		return v
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}
