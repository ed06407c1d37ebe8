package sqltmpl

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRender_QuotesSchemaAndTables(t *testing.T) {
	got, err := Render("billing", `SELECT * FROM {{tables.events}} e JOIN {{tables.subjects}} s ON s.id = e.subject_id; DROP INDEX {{schema}}.x`)
	require.NoError(t, err)
	require.Equal(t, `SELECT * FROM "billing"."events" e JOIN "billing"."subjects" s ON s.id = e.subject_id; DROP INDEX "billing".x`, got)
}

func TestRender_TextWithoutPlaceholdersIsUnchanged(t *testing.T) {
	for _, text := range []string{"", "SELECT 1", "SELECT '{' || '}'", `SELECT '{"a": 1}'::jsonb`} {
		got, err := Render("s", text)
		require.NoError(t, err)
		require.Equal(t, text, got)
	}
}

func TestParse_BadPlaceholdersAreErrors(t *testing.T) {
	for text, says := range map[string]string{
		"SELECT * FROM {{tables.events}":     "never closed",
		"SELECT * FROM {{tables.events":      "never closed",
		"SELECT * FROM {{":                   "never closed",
		"SELECT * FROM tables.events}}":      "without",
		"SELECT }} FROM {{tables.events}}":   "without",
		"SELECT * FROM {{events}}":           "unknown placeholder",
		"SELECT * FROM {{table.events}}":     "unknown placeholder",
		"SELECT * FROM {{ tables.events }}":  "unknown placeholder",
		"SELECT * FROM {{tables.}}":          "lowercase identifier",
		"SELECT * FROM {{tables.Events}}":    "lowercase identifier",
		"SELECT * FROM {{tables.ev-ents}}":   "lowercase identifier",
		"SELECT * FROM {{tables.a.b}}":       "lowercase identifier",
		`SELECT * FROM {{tables."x"}}`:       "lowercase identifier",
		"SELECT * FROM {{}}":                 "unknown placeholder",
		"SELECT * FROM {{SCHEMA}}":           "unknown placeholder",
		"SELECT * FROM {{tables.1events}}":   "lowercase identifier",
		"{{tables.x}} {{tables.y}} {{oops}}": "byte 26",
	} {
		_, err := Parse(text)
		require.ErrorIs(t, err, ErrPlaceholder, text)
		require.ErrorContains(t, err, says, text)
	}
	require.Panics(t, func() { Must("{{nope}}") })
}

func TestValidateSchema(t *testing.T) {
	for _, ok := range []string{"a", "_", "audit", "tenant_42", "x" + strings.Repeat("y", 62), "public"} {
		require.NoError(t, ValidateSchema(ok), ok)
	}
	for _, bad := range []string{"", "A", "1a", "a-b", "a b", "a.b", "pg_x", "pg_", "information_schema", strings.Repeat("a", 64), "é", `a"b`, "a;b", "a\x00"} {
		err := ValidateSchema(bad)
		require.ErrorIs(t, err, ErrSchemaName, bad)
	}
}

func TestRenderer_RendersOncePerStatement(t *testing.T) {
	r, err := NewRenderer("audit")
	require.NoError(t, err)
	s := Must("SELECT count(*) FROM {{tables.events}}")
	first := r.SQL(s)
	require.Equal(t, `SELECT count(*) FROM "audit"."events"`, first)
	allocs := testing.AllocsPerRun(100, func() { _ = r.SQL(s) })
	require.Zero(t, allocs, "a cached statement renders without allocating")

	_, err = NewRenderer("Bad")
	require.True(t, errors.Is(err, ErrSchemaName))
}

// BenchmarkRender measures rendering a cached statement: the cost every query pays.
// Target: 0 allocs/op and at most 50 ns/op.
func BenchmarkRender(b *testing.B) {
	r, err := NewRenderer("audit")
	require.NoError(b, err)
	s := Must(`SELECT e.id FROM {{tables.events}} e JOIN {{tables.subjects}} s ON s.id = e.subject_id WHERE s.name = $1`)
	r.SQL(s)
	b.ReportAllocs()
	for b.Loop() {
		_ = r.SQL(s)
	}
}

// BenchmarkRenderUncached is what rendering would cost on every call without
// the cache: the price pgdbm pays per query, for comparison.
func BenchmarkRenderUncached(b *testing.B) {
	text := `SELECT e.id FROM {{tables.events}} e JOIN {{tables.subjects}} s ON s.id = e.subject_id WHERE s.name = $1`
	b.ReportAllocs()
	for b.Loop() {
		_, _ = Render("audit", text)
	}
}
