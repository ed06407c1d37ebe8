package mylib

import (
	"bufio"
	"fmt"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// TestErrors_SayTheLibrarysName: every sentinel, defined in internal/errs,
// starts with the library's name, as every error of the library does.
func TestErrors_SayTheLibrarysName(t *testing.T) {
	for _, err := range []error{ErrClosed, ErrInvalidConfig, ErrInvalidSchema, ErrInvalidArgument, ErrMigration, ErrDrift,
		ErrOutOfOrder, ErrUnknownVersion, ErrMigrationFailed, ErrLockLost, ErrRetryable, ErrNotMigrated, ErrIrreversible} {
		if !strings.HasPrefix(err.Error(), moduleName+": ") {
			t.Errorf("%q does not start with %q: rename the library in internal/errs too", err, moduleName+": ")
		}
	}
}

// TestModuleName_MatchesModulePath catches a library copied from the template
// by other means than internal/newlib (gonew, git clone) and left with the
// template's moduleName: two such libraries in one schema would share a
// version table and a migration lock.
func TestModuleName_MatchesModulePath(t *testing.T) {
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatalf("reading go.mod: %v", err)
	}
	path := modulePathOf(string(gomod))
	if path == "" {
		t.Fatal("go.mod has no module line")
	}
	want := libraryNameOf(path)
	if !token.IsIdentifier(want) || token.IsKeyword(want) || sqltmpl.ValidateSchema(want) != nil {
		t.Fatalf("the module path %s ends in %q, which cannot name this library: the name becomes the package name, the default schema and the version table <schema>.%s, so it must be a lowercase Go identifier matching ^[a-z_][a-z0-9_]*$; end the module path with one, such as %q",
			path, want, migrate.VersionTable(want), strings.Trim(regexp.MustCompile(`[^a-z0-9_]+`).ReplaceAllString(strings.ToLower(want), "_"), "_"))
	}
	if moduleName == want {
		return
	}
	t.Fatalf(`moduleName is %q but the module path %s ends in %q: this library was copied without renaming it.
Change %s to
	const moduleName = %q
and do it now, before the first release: moduleName names the version table <schema>.%s, the checksum table <schema>.%s and the migration lock. Never change it after a release: every migration would run again into a new, empty version table.
(go run ./internal/newlib <module-path> <dir> makes a copy with every name changed.)`,
		moduleName, path, want, moduleNameLine(t), want, migrate.VersionTable(want), migrate.ChecksumTable(want))
}

// The paths here end in capitalised names, which no library can have, so that
// copying this library renames none of them, whatever the copy's name.
func TestLibraryNameOf(t *testing.T) {
	for path, want := range map[string]string{
		"github.com/acme/Billing":     "Billing",
		"github.com/acme/Billing/v2":  "Billing",
		"github.com/acme/Billing/v10": "Billing",
		"Billing":                     "Billing",
		"example.com/v2":              "example.com",
		"github.com/acme/Vat":         "Vat",
	} {
		if got := libraryNameOf(path); got != want {
			t.Errorf("libraryNameOf(%q) = %q, want %q", path, got, want)
		}
	}
}

// modulePathOf returns the path on the module line of a go.mod file.
func modulePathOf(gomod string) string {
	for _, line := range strings.Split(gomod, "\n") {
		line, _, _ = strings.Cut(line, "//")
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			if p, err := strconv.Unquote(f[1]); err == nil {
				return p
			}
			return f[1]
		}
	}
	return ""
}

// libraryNameOf is the module path's last element, or the one before a
// major-version suffix: example.com/acme/Billing/v2 names Billing.
func libraryNameOf(path string) string {
	elems := strings.Split(path, "/")
	if n := len(elems); n > 1 && regexp.MustCompile(`^v[0-9]+$`).MatchString(elems[n-1]) {
		return elems[n-2]
	}
	return elems[len(elems)-1]
}

// moduleNameLine says where moduleName is declared, as "line N of lib.go".
func moduleNameLine(t *testing.T) string {
	f, err := os.Open("lib.go")
	if err != nil {
		return "the const moduleName declaration"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), "const moduleName ") {
			return fmt.Sprintf("line %d of lib.go, %s,", n, strings.TrimSpace(sc.Text()))
		}
	}
	return "the const moduleName declaration in lib.go"
}

// TestDefaultSchema_IsTheModuleName: DefaultSchema is written out as a
// literal so that go doc shows its value, and must say what moduleName says.
func TestDefaultSchema_IsTheModuleName(t *testing.T) {
	if DefaultSchema != moduleName {
		t.Fatalf("DefaultSchema is %q but moduleName is %q: set const DefaultSchema = %q in lib.go", DefaultSchema, moduleName, moduleName)
	}
}
