// Package sqltmpl renders SQL written with schema placeholders.
//
// SQL in a library made from this template never names its schema. Tables are
// written as {{tables.name}} and the schema itself as {{schema}}; rendering for
// schema "billing" turns {{tables.events}} into "billing"."events". A malformed
// or unknown placeholder is an error, so it never reaches the server.
//
// Statements in Go code are parsed once (Parse, Must) and rendered once per
// schema by a Renderer, which caches the result: the query path does a map
// lookup, not a regular expression.
package sqltmpl

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/pgdual/mylib/internal/errs"
)

// ErrPlaceholder is wrapped by every error about a malformed or unknown placeholder.
var ErrPlaceholder = errors.New("bad placeholder")

// ErrSchemaName is matched by every error about an invalid schema name: it
// is the library's errs.InvalidSchema.
var ErrSchemaName = errs.InvalidSchema

// identifier is a schema name, and what may follow "tables." in a placeholder.
var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// literalHint is for braces that are SQL, not placeholders.
const literalHint = `; "{{" and "}}" are reserved for placeholders: in a literal such as '{{1,2},{3,4}}' put a space between the braces ('{ {1,2},{3,4} }'), or pass the value as a parameter`

// ValidateSchema reports whether name can be a library's schema: a lowercase
// identifier of at most 63 bytes that is not reserved by PostgreSQL. Names are
// kept lowercase so that quoted and unquoted spellings agree (goose, for one,
// pastes its table name into SQL unquoted).
func ValidateSchema(name string) error {
	switch {
	case name == "":
		return errs.New([]error{ErrSchemaName}, nil, "invalid schema name: the name is empty; use a lowercase identifier such as \"audit\"")
	case !identifier.MatchString(name):
		return errs.New([]error{ErrSchemaName}, nil, "invalid schema name %q: it must match ^[a-z_][a-z0-9_]{0,62}$ (lowercase letters, digits and underscores, at most 63 bytes, not starting with a digit)", name)
	case strings.HasPrefix(name, "pg_"):
		return errs.New([]error{ErrSchemaName}, nil, "invalid schema name %q: it starts with pg_, which PostgreSQL reserves for system schemas; choose another name", name)
	case name == "information_schema":
		return errs.New([]error{ErrSchemaName}, nil, "invalid schema name %q: it is a system schema; choose another name", name)
	}
	return nil
}

// Statement is SQL text parsed for placeholders. Parse it once, at package
// level, and render it through a Renderer.
type Statement struct {
	text  string
	parts []part
}

// part is either literal SQL or, when table is set or schema is true, a placeholder.
type part struct {
	literal string
	table   string
	schema  bool
}

// Parse splits text into SQL and placeholders. It returns an error wrapping
// ErrPlaceholder that names the placeholder and its position when one is
// malformed ("{{tables.}}", an unclosed "{{") or unknown ("{{users}}").
func Parse(text string) (*Statement, error) {
	s := &Statement{text: text}
	rest, offset := text, 0
	for {
		open := strings.Index(rest, "{{")
		if open < 0 {
			if strings.Contains(rest, "}}") {
				return nil, fmt.Errorf("%w: \"}}\" without \"{{\" at byte %d%s",
					ErrPlaceholder, offset+strings.Index(rest, "}}"), literalHint)
			}
			s.add(part{literal: rest})
			return s, nil
		}
		if stray := strings.Index(rest[:open], "}}"); stray >= 0 {
			return nil, fmt.Errorf("%w: \"}}\" without \"{{\" at byte %d%s", ErrPlaceholder, offset+stray, literalHint)
		}
		s.add(part{literal: rest[:open]})
		closeAt := strings.Index(rest[open+2:], "}}")
		if closeAt < 0 {
			return nil, fmt.Errorf("%w: \"{{\" at byte %d is never closed with \"}}\"%s", ErrPlaceholder, offset+open, literalHint)
		}
		inner := rest[open+2 : open+2+closeAt]
		p, err := placeholder(inner)
		if err != nil {
			return nil, fmt.Errorf("%w: {{%s}} at byte %d: %s", ErrPlaceholder, inner, offset+open, err)
		}
		s.add(p)
		next := open + 2 + closeAt + 2
		rest, offset = rest[next:], offset+next
	}
}

func placeholder(inner string) (part, error) {
	if inner == "schema" {
		return part{schema: true}, nil
	}
	table, ok := strings.CutPrefix(inner, "tables.")
	if !ok {
		return part{}, errors.New("unknown placeholder; the known ones are {{tables.name}} and {{schema}}" + literalHint)
	}
	if !identifier.MatchString(table) {
		return part{}, errors.New("the table name must be a lowercase identifier matching ^[a-z_][a-z0-9_]{0,62}$")
	}
	return part{table: table}, nil
}

func (s *Statement) add(p part) {
	if p.literal == "" && p.table == "" && !p.schema {
		return
	}
	s.parts = append(s.parts, p)
}

// Must is Parse for statements fixed at compile time; it panics on a bad
// placeholder, which the package's tests then catch.
func Must(text string) *Statement {
	s, err := Parse(text)
	if err != nil {
		panic(err)
	}
	return s
}

// Tables returns the table names of the statement's {{tables.name}}
// placeholders, in order of first appearance.
func (s *Statement) Tables() []string {
	var names []string
	for _, p := range s.parts {
		if p.table != "" && !slices.Contains(names, p.table) {
			names = append(names, p.table)
		}
	}
	return names
}

// String returns the statement as written, placeholders included.
func (s *Statement) String() string { return s.text }

// render writes the statement for one schema; quoted is the schema already quoted.
func (s *Statement) render(schema, quoted string) string {
	var b strings.Builder
	b.Grow(len(s.text) + 2*len(schema))
	for _, p := range s.parts {
		switch {
		case p.schema:
			b.WriteString(quoted)
		case p.table != "":
			b.WriteString(pgx.Identifier{schema, p.table}.Sanitize())
		default:
			b.WriteString(p.literal)
		}
	}
	return b.String()
}

// Render parses text and renders it for schema in one step: the path for
// migration files, rendered once per schema and then cached by the caller.
func Render(schema, text string) (string, error) {
	if err := ValidateSchema(schema); err != nil {
		return "", err
	}
	s, err := Parse(text)
	if err != nil {
		return "", err
	}
	return s.render(schema, pgx.Identifier{schema}.Sanitize()), nil
}

// Renderer renders statements for one schema and remembers the result, so each
// statement is rendered once for the life of the Renderer.
type Renderer struct {
	schema string
	quoted string
	cache  sync.Map // *Statement -> string
}

// NewRenderer returns a Renderer for schema, which must pass ValidateSchema.
func NewRenderer(schema string) (*Renderer, error) {
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	return &Renderer{schema: schema, quoted: pgx.Identifier{schema}.Sanitize()}, nil
}

// SQL returns s rendered for the Renderer's schema. After the first call for a
// statement it costs one map lookup and allocates nothing.
func (r *Renderer) SQL(s *Statement) string {
	if v, ok := r.cache.Load(s); ok {
		return v.(string)
	}
	v, _ := r.cache.LoadOrStore(s, s.render(r.schema, r.quoted))
	return v.(string)
}
