package pgtest

import (
	"net/url"
	"strings"
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
