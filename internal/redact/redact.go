// Package redact keeps passwords out of error messages.
//
// pgx redacts the password in its own parse errors on a best-effort basis,
// and some nested errors (url.Parse's, for one) quote the connection string
// verbatim. Every error built from a DSN goes through Error before a user
// sees it.
package redact

import (
	"cmp"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

const mask = "xxxxx"

// minSecret is the shortest secret masked: masking a one- or two-letter
// password would garble every message it occurs in and protect nothing.
const minSecret = 3

var (
	urlPassword = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/?#]*:([^@]*)@`)
	kvPassword  = regexp.MustCompile(`(?:^|\s)(?:ssl)?password\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))`)
	queryParam  = regexp.MustCompile(`[?&](?:ssl)?password=([^&#\s]*)`)
)

// Secrets returns the passwords written in dsn, in the forms they may take in
// a message: as written, URL-unescaped, and with key/value escapes removed.
func Secrets(dsn string) []string {
	var found []string
	add := func(s string) {
		if s == "" {
			return
		}
		found = append(found, s)
		if u, err := url.PathUnescape(s); err == nil && u != s {
			found = append(found, u)
		}
		if u := strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(s); u != s {
			found = append(found, u)
		}
	}
	if m := urlPassword.FindStringSubmatch(dsn); m != nil {
		add(m[1])
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		add(m[1] + m[2])
	}
	for _, m := range queryParam.FindAllStringSubmatch(dsn, -1) {
		add(m[1])
	}
	return found
}

// String returns msg with every secret replaced by a mask, longest first so
// that a secret containing another is masked whole.
func String(msg string, secrets ...string) string {
	for _, s := range sortedByLength(secrets) {
		if len(s) >= minSecret {
			msg = strings.ReplaceAll(msg, s, mask)
		}
	}
	return msg
}

func sortedByLength(s []string) []string {
	out := slices.Clone(s)
	slices.SortFunc(out, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	return out
}

// Error wraps err so that its message shows no secret. errors.Is and errors.As
// still see err; only the text is changed. It returns err unchanged when its
// message holds no secret, and nil for nil.
func Error(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := String(msg, secrets...)
	if clean == msg {
		return err
	}
	return &redacted{msg: clean, err: err}
}

type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }
func (r *redacted) Unwrap() error { return r.err }
