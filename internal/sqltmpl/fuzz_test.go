package sqltmpl

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse: any text either parses, and then renders to SQL with no
// placeholder left and every table quoted, or fails with ErrPlaceholder.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"SELECT * FROM {{tables.events}}", "{{schema}}.x", "{{", "}}", "{{tables.}}", "{{tables.a}}{{tables.b}}",
		"{{{tables.a}}}", "{{tables.a}}}", "SELECT '{}'", "{{tables.a\x00}}", "{{ schema }}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := Parse(text)
		if err != nil {
			if !errors.Is(err, ErrPlaceholder) {
				t.Fatalf("Parse(%q): error does not wrap ErrPlaceholder: %v", text, err)
			}
			return
		}
		r, err := NewRenderer("fz")
		if err != nil {
			t.Fatal(err)
		}
		out := r.SQL(s)
		if strings.Contains(out, "{{tables.") || strings.Contains(out, "{{schema}}") {
			t.Fatalf("Parse(%q) rendered %q with a placeholder left", text, out)
		}
		if n := strings.Count(text, "{{"); strings.Count(out, `"fz"`) < n {
			t.Fatalf("Parse(%q): %d placeholders but %d schema references in %q", text, n, strings.Count(out, `"fz"`), out)
		}
	})
}

// FuzzValidateSchema: a name is accepted exactly when it is a lowercase
// identifier of at most 63 bytes that PostgreSQL does not reserve.
func FuzzValidateSchema(f *testing.F) {
	for _, seed := range []string{"audit", "", "pg_x", "information_schema", "A", "a-b", strings.Repeat("a", 64), "_1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateSchema(name)
		want := name != "" && len(name) <= 63 && !strings.HasPrefix(name, "pg_") && name != "information_schema" &&
			(name[0] == '_' || name[0] >= 'a' && name[0] <= 'z') &&
			strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") == ""
		if (err == nil) != want {
			t.Fatalf("ValidateSchema(%q) = %v, want ok=%v", name, err, want)
		}
		if err != nil && !errors.Is(err, ErrSchemaName) {
			t.Fatalf("ValidateSchema(%q): error does not wrap ErrSchemaName: %v", name, err)
		}
	})
}
