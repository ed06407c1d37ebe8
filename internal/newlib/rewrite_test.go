package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The libraries here have capitalised names, which no real library can have,
// so that copying this template, which renames the template's own name
// wherever it stands, leaves these tests as they are.
var toNew = renamer{oldPath: "example.org/tmpl/OldLib", newPath: "example.com/acme/NewLibrary", oldName: "OldLib", newName: "NewLibrary"}

func TestRenamer_TextChangesWholeWordsOnly(t *testing.T) {
	for in, want := range map[string]string{
		"# OldLib":                                            "# NewLibrary",
		"go run ./cmd/OldLib -dsn x":                          "go run ./cmd/NewLibrary -dsn x",
		"audit.OldLib_goose_db_version":                       "audit.NewLibrary_goose_db_version",
		"/OldLib\n/cmd/OldLib/OldLib\n":                       "/NewLibrary\n/cmd/NewLibrary/NewLibrary\n",
		"OldLib: client is closed":                            "NewLibrary: client is closed",
		"OLDLIB_DSN OldLibrary eOldLib OldLib2 oldlib":        "OLDLIB_DSN OldLibrary eOldLib OldLib2 oldlib",
		"go get example.org/tmpl/OldLib@latest":               "go get example.com/acme/NewLibrary@latest",
		"https://example.org/tmpl/OldLib/blob/main/README.md": "https://example.com/acme/NewLibrary/blob/main/README.md",
		"example.org/tmpl/OldLibx":                            "example.org/tmpl/OldLibx",
		"xexample.org/tmpl/OldLib":                            "xexample.org/tmpl/NewLibrary",
	} {
		require.Equal(t, want, toNew.text(in), in)
	}
}

// A copy named after a common word, copied in turn: the word stays wherever it
// does not stand for the library.
var fromAudit = renamer{oldPath: "example.com/acme/audit", newPath: "example.com/acme/ledger", oldName: "audit", newName: "ledger"}

func TestRenamer_CommonWordThatSpellsTheNameStays(t *testing.T) {
	for in, want := range map[string]string{
		// The library.
		"# audit":                          "# ledger",
		"client, err := audit.New(ctx)":    "client, err := ledger.New(ctx)",
		"<schema>.audit_goose_db_version":  "<schema>.ledger_goose_db_version",
		"`audit_demo_<random>_*`":          "`ledger_demo_<random>_*`",
		"go run ./cmd/audit -dsn x":        "go run ./cmd/ledger -dsn x",
		"/audit\n/cmd/audit/audit\n":       "/ledger\n/cmd/ledger/ledger\n",
		"audit: client is closed":          "ledger: client is closed",
		"application_name=audit-host":      "application_name=ledger-host",
		"run `audit migrate`, see `audit`": "run `ledger migrate`, see `ledger`",
		"package audit_test":               "package ledger_test",
		"// Package audit keeps":           "// Package ledger keeps",
		"audittest.New(t, pool)":           "ledgertest.New(t, pool)",
		// The word.
		"An audit log: every audit record": "An audit log: every audit record",
		"`audit.go`, audit_test.go":        "`audit.go`, audit_test.go",
		"CREATE ROLE audit_owner":          "CREATE ROLE audit_owner",
		"WithSchema(\"audit\")":            "WithSchema(\"audit\")",
		"audit.events, cmd/x/audit.go":     "audit.events, cmd/x/audit.go",
	} {
		require.Equal(t, want, fromAudit.text(in), in)
	}
}

func TestRenamer_GoSourceKeepsTheCommonWord(t *testing.T) {
	src := "package audit_test\n\nimport (\n\t\"example.com/acme/audit\"\n)\n\n" +
		"const schema = \"audit\" // an audit schema\n\n" +
		"func f(x struct{ audit int }) {\n\t_ = audit.New\n\t_ = x.audit\n\t_ = audit.Option(nil)\n\t_ = []string{\"audit\"}\n}\n"
	want := "package ledger_test\n\nimport (\n\t\"example.com/acme/ledger\"\n)\n\n" +
		"const schema = \"ledger\" // an audit schema\n\n" +
		"func f(x struct{ audit int }) {\n\t_ = ledger.New\n\t_ = x.audit\n\t_ = ledger.Option(nil)\n\t_ = []string{\"audit\"}\n}\n"
	require.Equal(t, want, string(fromAudit.goSource("x_test.go", []byte(src), "")))

	domain := "package audit\n\n// An audit log.\nconst moduleName = \"audit\"\n\nfunc audit() {}\n"
	require.Equal(t, "package ledger\n\n// An audit log.\nconst moduleName = \"ledger\"\n\nfunc audit() {}\n",
		string(fromAudit.goSource("audit.go", []byte(domain), "")))
}

func TestRenamer_PathRenamesDirectoriesNotFiles(t *testing.T) {
	require.Equal(t, "cmd/ledger/main.go", fromAudit.path("cmd/audit/main.go"))
	require.Equal(t, "audit.go", fromAudit.path("audit.go"))
	require.Equal(t, "audit_test.go", fromAudit.path("audit_test.go"))
	require.Equal(t, "ledgertest/ledgertest.go", fromAudit.path("audittest/audittest.go"))
}

func TestRenamer_NewPathHoldingTheOldNameIsNotRewrittenAgain(t *testing.T) {
	r := renamer{oldPath: "example.org/tmpl/OldLib", newPath: "example.com/OldLib/NewLibrary", oldName: "OldLib", newName: "NewLibrary"}
	require.Equal(t, `import "example.com/OldLib/NewLibrary/internal/migrate"`, r.text(`import "example.org/tmpl/OldLib/internal/migrate"`))
}

func TestRenamer_Path(t *testing.T) {
	require.Equal(t, "cmd/NewLibrary/main.go", toNew.path("cmd/OldLib/main.go"))
	require.Equal(t, "internal/newlib/main.go", toNew.path("internal/newlib/main.go"))
}

func TestRenamer_GoSource(t *testing.T) {
	src := "// Package OldLib is a library; see <schema>.OldLib_goose_db_version.\n" +
		"package OldLib_test\n\n" +
		"import (\n\t\"testing\"\n\n\t\"example.org/tmpl/OldLib\"\n\t\"example.org/tmpl/OldLib/internal/pgtest\"\n)\n\n" +
		"type OldLibrary struct {\n\tclient *OldLib.Client // the client\n\tx      int          // aligned\n}\n\n" +
		"const raw = `OldLib: closed\r\n`\n\n" +
		"func TestX(t *testing.T) { _ = OldLib.New; _ = pgtest.DSN; _ = \"OldLib:\" }\n"
	want := "// Package NewLibrary is a library; see <schema>.NewLibrary_goose_db_version.\n" +
		"package NewLibrary_test\n\n" +
		"import (\n\t\"testing\"\n\n\t\"example.com/acme/NewLibrary\"\n\t\"example.com/acme/NewLibrary/internal/pgtest\"\n)\n\n" +
		"type OldLibrary struct {\n\tclient *NewLibrary.Client // the client\n\tx      int                // aligned\n}\n\n" +
		"const raw = `NewLibrary: closed\n`\n\n" + // gofmt drops the \r, which a raw string's value never held
		"func TestX(t *testing.T) { _ = NewLibrary.New; _ = pgtest.DSN; _ = \"NewLibrary:\" }\n"
	require.Equal(t, want, string(toNew.goSource("x_test.go", []byte(src), "")))
}

func TestRenamer_GoSourceWithAnAlias(t *testing.T) {
	src := "package OldLib_test\n\nimport (\n\t\"testing\"\n\n\t\"example.org/tmpl/OldLib\"\n\t\"example.org/tmpl/OldLib/internal/pgtest\"\n)\n\n" +
		"// OldLib.New is used as NewLibrary.\nfunc TestX(t *testing.T) {\n\tNewLibrary := \"role\"\n\t_, _ = OldLib.New, NewLibrary\n\t_ = \"example.org/tmpl/OldLib\"\n}\n"
	want := "package NewLibrary_test\n\nimport (\n\t\"testing\"\n\n\tNewLibrarylib \"example.com/acme/NewLibrary\"\n\t\"example.com/acme/NewLibrary/internal/pgtest\"\n)\n\n" +
		"// NewLibrary.New is used as NewLibrary.\nfunc TestX(t *testing.T) {\n\tNewLibrary := \"role\"\n\t_, _ = NewLibrarylib.New, NewLibrary\n\t_ = \"example.com/acme/NewLibrary\"\n}\n"
	require.Equal(t, want, string(toNew.goSource("x_test.go", []byte(src), "NewLibrarylib")))
}

func TestRenamer_GoSourceKeepsAnEarlierAliasInStep(t *testing.T) {
	src := "package x_test\n\nimport OldLiblib \"example.org/tmpl/OldLib\"\n\nvar _ = OldLiblib.New\n"
	want := "package x_test\n\nimport NewLibrarylib \"example.com/acme/NewLibrary\"\n\nvar _ = NewLibrarylib.New\n"
	require.Equal(t, want, string(toNew.goSource("x_test.go", []byte(src), "")))
}

func TestRenamer_GoSourceThatDoesNotScanIsRewrittenAsText(t *testing.T) {
	got := toNew.goSource("broken.go", []byte("package OldLib\n\nvar s = \"OldLib: x\n"), "")
	require.Equal(t, "package NewLibrary\n\nvar s = \"NewLibrary: x\n", string(got))
}

func TestRenamer_ModFileChangesOnlyTheModulePath(t *testing.T) {
	in := "module example.org/tmpl/OldLib\n\ngo 1.26\n\nrequire github.com/other/OldLib v1.0.0 // OldLib\n"
	want := "module example.com/acme/NewLibrary\n\ngo 1.26\n\nrequire github.com/other/OldLib v1.0.0 // OldLib\n"
	require.Equal(t, want, string(toNew.modFile([]byte(in))))
}

func TestWithNote_GoesUnderTheTitleAndReplacesAnEarlierOne(t *testing.T) {
	c := &copied{from: "example.org/tmpl/OldLib", name: "NewLibrary", todo: todo{domain: []string{"audit.go"}, migrations: true, constFile: "lib.go", constLine: 43}}
	readme := []byte("# NewLibrary\n\nSome text.\n\n## Tests\n")
	once := string(withNote(readme, c))
	require.True(t, strings.HasPrefix(once, "# NewLibrary\n\n"+noteStart+"\n"), once)
	require.True(t, strings.HasSuffix(once, noteEnd+"\n\nSome text.\n\n## Tests\n"), once)
	for _, s := range []string{"`audit.go`", "`migrations/*.sql`", "`README.md`", "`lib.go` line 43", "`<schema>.NewLibrary_goose_db_version`"} {
		require.Contains(t, once, s)
	}
	require.Equal(t, once, string(withNote([]byte(once), c)), "a second note replaces the first")
	require.True(t, strings.HasPrefix(string(withNote([]byte("no title\n"), c)), noteStart))
}
