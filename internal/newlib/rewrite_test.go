package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var toBilling = renamer{oldPath: "github.com/pgdual/mylib", newPath: "example.com/acme/billing", oldName: "mylib", newName: "billing"}

func TestRenamer_TextChangesWholeWordsOnly(t *testing.T) {
	for in, want := range map[string]string{
		"# mylib":                                             "# billing",
		"go run ./cmd/mylib -dsn x":                           "go run ./cmd/billing -dsn x",
		"audit.mylib_goose_db_version":                        "audit.billing_goose_db_version",
		"/mylib\n/cmd/mylib/mylib\n":                          "/billing\n/cmd/billing/billing\n",
		"mylib: client is closed":                             "billing: client is closed",
		"MYLIB_DSN mylibrary emylib mylib2 Mylib":             "MYLIB_DSN mylibrary emylib mylib2 Mylib",
		"go get github.com/pgdual/mylib@latest":               "go get example.com/acme/billing@latest",
		"https://github.com/pgdual/mylib/blob/main/README.md": "https://example.com/acme/billing/blob/main/README.md",
		"github.com/pgdual/mylibx":                            "github.com/pgdual/mylibx",
		"xgithub.com/pgdual/mylib":                            "xgithub.com/pgdual/billing",
	} {
		require.Equal(t, want, toBilling.text(in), in)
	}
}

func TestRenamer_NewPathHoldingTheOldNameIsNotRewrittenAgain(t *testing.T) {
	r := renamer{oldPath: "github.com/pgdual/mylib", newPath: "example.com/mylib/billing", oldName: "mylib", newName: "billing"}
	require.Equal(t, `import "example.com/mylib/billing/internal/migrate"`, r.text(`import "github.com/pgdual/mylib/internal/migrate"`))
}

func TestRenamer_Path(t *testing.T) {
	require.Equal(t, "cmd/billing/main.go", toBilling.path("cmd/mylib/main.go"))
	require.Equal(t, "billing_test.go", toBilling.path("mylib_test.go"))
	require.Equal(t, "internal/newlib/main.go", toBilling.path("internal/newlib/main.go"))
}

func TestRenamer_GoSource(t *testing.T) {
	src := "// Package mylib is a library; see <schema>.mylib_goose_db_version.\n" +
		"package mylib_test\n\n" +
		"import (\n\t\"testing\"\n\n\t\"github.com/pgdual/mylib\"\n\t\"github.com/pgdual/mylib/internal/pgtest\"\n)\n\n" +
		"type mylibrary struct {\n\tclient *mylib.Client // the client\n\tx      int          // aligned\n}\n\n" +
		"const raw = `mylib\r\n`\n\n" +
		"func TestX(t *testing.T) { _ = mylib.New; _ = pgtest.DSN; _ = \"mylib:\" }\n"
	want := "// Package billing is a library; see <schema>.billing_goose_db_version.\n" +
		"package billing_test\n\n" +
		"import (\n\t\"testing\"\n\n\t\"example.com/acme/billing\"\n\t\"example.com/acme/billing/internal/pgtest\"\n)\n\n" +
		"type mylibrary struct {\n\tclient *billing.Client // the client\n\tx      int             // aligned\n}\n\n" +
		"const raw = `billing\n`\n\n" + // gofmt drops the \r, which a raw string's value never held
		"func TestX(t *testing.T) { _ = billing.New; _ = pgtest.DSN; _ = \"billing:\" }\n"
	require.Equal(t, want, string(toBilling.goSource("x_test.go", []byte(src))))
}

func TestRenamer_GoSourceThatDoesNotScanIsRewrittenAsText(t *testing.T) {
	got := toBilling.goSource("broken.go", []byte("package mylib\n\nvar s = \"mylib\n"))
	require.Equal(t, "package billing\n\nvar s = \"billing\n", string(got))
}

func TestRenamer_ModFileChangesOnlyTheModulePath(t *testing.T) {
	in := "module github.com/pgdual/mylib\n\ngo 1.26\n\nrequire github.com/other/mylib v1.0.0 // mylib\n"
	want := "module example.com/acme/billing\n\ngo 1.26\n\nrequire github.com/other/mylib v1.0.0 // mylib\n"
	require.Equal(t, want, string(toBilling.modFile([]byte(in))))
}

func TestWithNote_GoesUnderTheTitleAndReplacesAnEarlierOne(t *testing.T) {
	c := &copied{from: "github.com/pgdual/mylib", name: "billing", todo: todo{domain: []string{"audit.go"}, migrations: true, constFile: "lib.go", constLine: 43}}
	readme := []byte("# billing\n\nSome text.\n\n## Tests\n")
	once := string(withNote(readme, c))
	require.True(t, strings.HasPrefix(once, "# billing\n\n"+noteStart+"\n"), once)
	require.True(t, strings.HasSuffix(once, noteEnd+"\n\nSome text.\n\n## Tests\n"), once)
	for _, s := range []string{"`audit.go`", "`migrations/*.sql`", "`README.md`", "`lib.go` line 43", "`<schema>.billing_goose_db_version`"} {
		require.Contains(t, once, s)
	}
	require.Equal(t, once, string(withNote([]byte(once), c)), "a second note replaces the first")
	require.True(t, strings.HasPrefix(string(withNote([]byte("no title\n"), c)), noteStart))
}
