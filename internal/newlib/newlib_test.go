package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"go/parser"
	"go/scanner"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib/internal/hostmod"
	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// insideCopy is set in the environment of the go test run inside a copy, whose
// own copy of this test then skips copying again: this run already covers it.
const insideCopy = "NEWLIB_TESTING_A_COPY"

// secondLibrary is the library the tests make from the template:
// github.com/acme/billing, unless the template is a copy that took this
// owner or name.
func secondLibrary(t *testing.T) (path, name string) {
	owner, name := "acme", "billing"
	if owner == templateOwner(t) {
		owner = "initech"
	}
	if name == templateName(t) {
		name = "invoicing"
	}
	return "github.com/" + owner + "/" + name, name
}

// templateOwner is the element of the template's module path before its
// name: the owner of github.com/<owner>/<name>; "" for a shorter path.
func templateOwner(t *testing.T) string {
	elems := strings.Split(strings.TrimSuffix(templatePath(t), "/"+majorOf(templatePath(t))), "/")
	if len(elems) < 3 {
		return ""
	}
	return elems[len(elems)-2]
}

// isCopy reports whether the template is itself a library that newlib
// made, as its origin record says. Its name and owner were chosen by a user
// and may also be words the template's text uses otherwise: a copy named
// billing keeps "billing" where the template's tests use it as a schema.
func isCopy(t *testing.T) bool {
	_, ok, err := readOrigin(templateDir(t))
	require.NoError(t, err)
	return ok
}

func templateDir(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	require.NoError(t, err)
	root, ok := moduleRoot(wd)
	require.True(t, ok, "no go.mod above %s", wd)
	return root
}

func templatePath(t *testing.T) string {
	t.Helper()
	p, err := readModulePath(templateDir(t))
	require.NoError(t, err)
	return p
}

func templateName(t *testing.T) string { return libraryName(templatePath(t)) }

func TestRun_Refuses(t *testing.T) {
	full := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(full, "keep.txt"), []byte("mine"), 0o644))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a non-empty directory", []string{"example.com/acme/billing", full}, "is not empty"},
		{"a name that is not an identifier", []string{"github.com/acme/go-billing", filepath.Join(t.TempDir(), "x")}, "github.com/acme/billing or"},
		{"a keyword", []string{"example.com/acme/func", filepath.Join(t.TempDir(), "x")}, "Go keyword"},
		{"a name that is not a schema name", []string{"example.com/acme/pg_billing", filepath.Join(t.TempDir(), "x")}, "pg_"},
		{"a missing directory argument", []string{"example.com/acme/billing"}, "wrong arguments"},
		{"an update of two libraries", []string{"update", "one", "two"}, "wrong arguments"},
		{"an update to continue with flags", []string{"update", "-continue", "-to", "v1.0.0"}, "wrong arguments"},
		{"an update outside a module", []string{"update", filepath.Join(t.TempDir(), "x")}, "no go.mod in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(tc.args, &stdout, &stderr)
			require.ErrorContains(t, err, tc.want)
			if len(tc.args) == 2 && tc.args[1] != full {
				require.NoDirExists(t, tc.args[1], "nothing is written when refusing")
			}
		})
	}
	entries, err := os.ReadDir(full)
	require.NoError(t, err)
	require.Len(t, entries, 1, "a non-empty directory is left alone")
}

// TestGenerate_LeavesNoTraceOfTheTemplateName checks every Go token and text
// line of a fresh copy for the template's name, but in internal/newlib, whose
// files are copied as they are but for their import paths. In a template that
// is itself a copy, only the forms that stand for the library count (see
// isCopy).
func TestGenerate_LeavesNoTraceOfTheTemplateName(t *testing.T) {
	oldPath, oldName, strict := templatePath(t), templateName(t), !isCopy(t)
	newPath, name := secondLibrary(t)
	dir := filepath.Join(t.TempDir(), name)
	c, err := generate(templateDir(t), newPath, dir)
	require.NoError(t, err)

	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	require.NoError(t, err)
	require.Equal(t, newPath, modulePath(gomod))
	mn, err := findModuleName(dir)
	require.NoError(t, err)
	require.Equal(t, moduleNameConst{found: true, value: name, file: "lib.go", line: mn.line}, mn)
	if _, err := os.Stat(filepath.Join(templateDir(t), "cmd", oldName)); err == nil {
		require.DirExists(t, filepath.Join(dir, "cmd", name))
		require.NoDirExists(t, filepath.Join(dir, "cmd", oldName))
	}
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(readme), "# "+name+"\n"), "README title")
	require.Contains(t, string(readme), noteStart)

	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		switch {
		case rel == "go.sum":
		case rel == originFile:
			o, ok, err := readOrigin(dir)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, templateVersion{Module: oldPath, Version: o.Template.Version, Clean: o.Template.Clean}, o.Template)
			require.Equal(t, origin{Template: o.Template, Module: newPath, Name: name, Newlib: version}, o, "the origin names the template and the copy")
		case isLicense(rel):
			// Copied as it is: its notice stays with the template's code.
			original, err := os.ReadFile(filepath.Join(templateDir(t), rel))
			require.NoError(t, err)
			require.Equal(t, string(original), string(data), rel)
		case strings.HasPrefix(filepath.ToSlash(rel), selfDir+"/"):
			if strings.HasSuffix(p, ".go") {
				f, err := parser.ParseFile(token.NewFileSet(), p, data, parser.ImportsOnly)
				require.NoError(t, err)
				for _, imp := range f.Imports {
					require.NotContains(t, imp.Path.Value, oldPath, rel)
				}
			}
		case strings.HasSuffix(p, ".go"):
			for _, tok := range goTokensNaming(rel, data, oldPath, oldName, strict) {
				t.Errorf("%s: %s", rel, tok)
			}
		default:
			for n, line := range strings.Split(string(data), "\n") {
				if strings.Contains(line, "the template `"+oldPath+"`") { // the note, the new changelog
					continue
				}
				if traceOf(line, oldPath, oldName, strict) {
					t.Errorf("%s:%d: %s", rel, n+1, line)
				}
			}
		}
		return nil
	}))
	require.Equal(t, c.files, countFiles(t, dir))
}

// TestGenerate_CopyReadsAsItsOwn reads a fresh copy as its user would: its
// README, its changelog and license, and what is left of the template.
func TestGenerate_CopyReadsAsItsOwn(t *testing.T) {
	oldPath := templatePath(t)
	newPath, name := secondLibrary(t)
	dir := filepath.Join(t.TempDir(), name)
	_, err := generate(templateDir(t), newPath, dir)
	require.NoError(t, err)
	read := func(rel string) string {
		data, err := os.ReadFile(filepath.Join(dir, rel))
		require.NoError(t, err)
		return string(data)
	}

	readme := read("README.md")
	wants := []string{
		"# " + name + "\n",
		"choose your license",                    // the to-do note
		name + "test",                            // the test helper
		"<schema>." + name + "_goose_db_version", // the version table
	}
	original, err := os.ReadFile(filepath.Join(templateDir(t), "README.md"))
	require.NoError(t, err)
	if strings.Contains(string(original), "`"+templateName(t)+".New`") {
		wants = append(wants, "`"+name+".New`") // the qualifier in prose
	}
	for _, want := range wants {
		require.Contains(t, readme, want)
	}
	for _, wrong := range []string{
		"`cmd/" + name + "` to `cmd/" + name + "`",
		"`cmd/" + name + "` (which becomes `cmd/" + name + "`)",
		"made from " + name,
		"Made from " + name,
		`keeps ` + "`" + `const moduleName = "` + name + `"`,
	} {
		require.NotContains(t, readme, wrong, "a sentence about the template that reads wrong in the copy")
	}

	changelog := read("CHANGELOG.md")
	require.Contains(t, changelog, "## [Unreleased]")
	require.Contains(t, changelog, "the template `"+oldPath+"`")
	require.Equal(t, 1, strings.Count(changelog, "\n## "), "the copy's history starts afresh:\n%s", changelog)

	// The template's module path stays only in the note, the changelog's
	// first line and the origin record; its owner (github.com/<owner>/...)
	// also in the license, and in a copy's text as a word (see isCopy).
	var forms []string
	if owner := templateOwner(t); owner != "" && !isCopy(t) {
		forms = []string{"/" + owner + "/", "." + owner + "."}
	}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "go.sum" || rel == originFile || isLicense(rel) || strings.HasPrefix(filepath.ToSlash(rel), selfDir+"/") {
			return nil
		}
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		for _, form := range append([]string{oldPath}, forms...) {
			if strings.Contains(strings.ReplaceAll(string(data), "the template `"+oldPath+"`", ""), form) {
				t.Errorf("%s names the template: %s", rel, form)
			}
		}
		return nil
	}))
}

// TestGenerate_CopyOfACopyNamedAfterACommonWord copies the template into a
// library named audit, a word its example domain uses, then copies that
// copy: the result is what copying the template directly makes, so the word
// survived wherever it did not stand for the library.
func TestGenerate_CopyOfACopyNamedAfterACommonWord(t *testing.T) {
	word, last := "audit", "ledger"
	if templateName(t) == word {
		word = "event"
	}
	if templateName(t) == last {
		last = "journal"
	}
	wordPath, lastPath := "example.com/acme/"+word, "example.com/acme/"+last
	tmp := t.TempDir()
	first, direct, twice := filepath.Join(tmp, word), filepath.Join(tmp, "direct"), filepath.Join(tmp, "twice")
	_, err := generate(templateDir(t), wordPath, first)
	require.NoError(t, err)
	_, err = generate(first, lastPath, twice)
	require.NoError(t, err)
	_, err = generate(templateDir(t), lastPath, direct)
	require.NoError(t, err)

	want, got := treeOf(t, direct), treeOf(t, twice)
	require.ElementsMatch(t, slices.Collect(maps.Keys(want)), slices.Collect(maps.Keys(got)), "the same files")
	for rel, data := range got {
		switch rel {
		case "README.md", "CHANGELOG.md":
			data = strings.ReplaceAll(data, "the template `"+wordPath+"`", "the template `"+templatePath(t)+"`")
		case originFile:
			o, _, err := readOrigin(twice)
			require.NoError(t, err)
			require.Equal(t, wordPath, o.Template.Module, "a copy of a copy records the copy it was made from")
			continue
		}
		if data != want[rel] {
			t.Errorf("%s differs when made through a copy named %s: %s", rel, word, firstDifference(want[rel], data))
		}
	}
}

// firstDifference shows the first line where got differs from want.
func firstDifference(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range min(len(w), len(g)) {
		if w[i] != g[i] {
			return fmt.Sprintf("line %d is %q, want %q", i+1, g[i], w[i])
		}
	}
	return fmt.Sprintf("%d lines, want %d", len(g), len(w))
}

// treeOf reads every file under dir, by slash-separated path.
func treeOf(t *testing.T, dir string) map[string]string {
	files := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = string(data)
		return err
	}))
	return files
}

// goTokensNaming lists the tokens of a Go file that hold a trace of the
// template's path or name (see traceOf).
func goTokensNaming(file string, src []byte, oldPath, name string, strict bool) []string {
	fset := token.NewFileSet()
	var sc scanner.Scanner
	sc.Init(fset.AddFile(file, -1, len(src)), src, nil, scanner.ScanComments)
	var found []string
	for {
		pos, tok, lit := sc.Scan()
		if tok == token.EOF {
			return found
		}
		if traceOf(lit, oldPath, name, strict) {
			found = append(found, fset.Position(pos).String()+": "+lit)
		}
	}
}

// traceOf reports whether s holds the template's module path, the name of
// its test helper's package, or its name as a word of its own: strictly,
// whatever the word stands for; otherwise only in the forms newlib renames
// (see isCopy).
func traceOf(s, oldPath, name string, strict bool) bool {
	if strings.Contains(s, oldPath) {
		return true
	}
	for i := range len(s) {
		if wordAt(s, i, name+helperSuffix) || wordAt(s, i, name) && (strict || asName(s, i, i+len(name))) {
			return true
		}
	}
	return false
}

func countFiles(t *testing.T, dir string) int {
	n := 0
	require.NoError(t, filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	}))
	return n
}

// TestCopy makes a second library from the template, as a user would, and
// checks that it builds and passes its own tests with no edit, that it can be
// copied in turn, and that a host can run both libraries on one pool.
func TestCopy(t *testing.T) {
	skipUnlessSlow(t)
	newPath, name := secondLibrary(t)
	dir := filepath.Join(t.TempDir(), name)
	var stdout, stderr bytes.Buffer
	require.NoError(t, run([]string{newPath, dir}, &stdout, &stderr), stderr.String())

	t.Run("says what is left to do", func(t *testing.T) {
		domain := domainFiles(t, dir)
		require.NotEmpty(t, domain)
		for _, want := range append(domain,
			"Made "+newPath+" in "+dir,
			"cd "+dir,
			"go test ./...",
			"migrations/*.sql",
			"README.md",
			"what newlib.manifest gives the template (internal/, lib.go, options.go, operations.go,",
			"go run ./internal/newlib update",
			"Never change moduleName (lib.go line",
			migrate.VersionTable(name),
		) {
			require.Contains(t, stdout.String(), want)
		}
		replace, _, _ := strings.Cut(stdout.String(), "Keep ")
		for _, machinery := range []string{"operations.go", "options.go", "lib.go"} {
			require.NotContains(t, replace, machinery, "the machinery is not among what a new library replaces")
		}
	})

	t.Run("builds and vets", func(t *testing.T) {
		goCommand(t, dir, nil, "build", "./...")
		goCommand(t, dir, nil, "vet", "./...")
	})

	// The rest is independent, and mostly waits on servers and the linker.
	t.Run("passes its own tests", func(t *testing.T) {
		t.Parallel()
		// The copy's tests make their databases on this test's server; go vet
		// has run already. The packages whose code the renaming touches: the
		// library, its migrations and its SQL, its command and its demo; and
		// newlib, whose tests make a
		// copy of the copy, named as this test names its copy. The test
		// harness and the fleet tests are the template's own code under a new
		// import path, and running them twice would double the suite's time.
		goCommand(t, dir, []string{"TEST_DATABASE_URL=" + pgtest.AdminDSN(t), insideCopy + "=1"}, "test", "-count=1", "-vet=off",
			".", "./internal/migrate", "./internal/migrationcheck", "./internal/newlib", "./internal/sqltmpl", "./cmd/...", "./examples/...")
	})

	t.Run("refuses a blocking migration, naming its file, and passes its safe form", func(t *testing.T) {
		t.Parallel()
		own := filepath.Join(t.TempDir(), name)
		_, err := generate(templateDir(t), newPath, own)
		require.NoError(t, err)
		// A release adds a table, and the next indexes it once it holds rows.
		table := nextMigration(t, own, "later_table")
		require.NoError(t, os.WriteFile(filepath.Join(own, filepath.FromSlash(table)),
			[]byte("-- +goose Up\nCREATE TABLE {{tables.later_table}} (id int);\n"), 0o644))
		file := nextMigration(t, own, "later_index")
		write := func(text string) {
			require.NoError(t, os.WriteFile(filepath.Join(own, filepath.FromSlash(file)), []byte(text), 0o644))
		}
		env := []string{"TEST_DATABASE_URL=" + pgtest.AdminDSN(t), insideCopy + "=1"}
		test := []string{"test", "-count=1", "-vet=off", "-run", "^TestMigrations_AreSafeToShip$", "."}

		write("-- +goose Up\nCREATE INDEX later_id ON {{tables.later_table}} (id);\n")
		out, err := goRun(t, own, env, test...)
		require.Error(t, err, out)
		for _, want := range []string{file + ":2: CREATE INDEX later_id", "rule index:", "CREATE INDEX CONCURRENTLY", "-- " + name + ":allow index:"} {
			require.Contains(t, out, want)
		}

		write("-- +goose Up\n-- +goose NO TRANSACTION\nCREATE INDEX CONCURRENTLY later_id ON {{tables.later_table}} (id);\n")
		goCommand(t, own, env, test...)
	})

	t.Run("with a domain of its own passes the machinery tests unedited", func(t *testing.T) {
		t.Parallel()
		own := filepath.Join(t.TempDir(), name)
		_, err := generate(templateDir(t), newPath, own)
		require.NoError(t, err)
		changed := replaceDomain(t, own, newPath, name)
		t.Logf("a job queue in place of the example domain: %d files of the library's: %s", len(changed), strings.Join(changed, ", "))
		goCommand(t, own, nil, "vet", "./...")
		goCommand(t, own, []string{"TEST_DATABASE_URL=" + pgtest.AdminDSN(t), insideCopy + "=1"}, "test", "-count=1", "-vet=off", ".")
	})

	t.Run("can be copied again", func(t *testing.T) {
		t.Parallel()
		third := filepath.Join(t.TempDir(), "ledger")
		c, err := generate(dir, "example.com/acme/ledger/v2", third)
		require.NoError(t, err)
		require.Equal(t, "ledger", c.name)
		mn, err := findModuleName(third)
		require.NoError(t, err)
		require.Equal(t, "ledger", mn.value)
		goCommand(t, third, nil, "vet", "./...")
		// The copy is named as the tests name their copies: the copy of the
		// copy still passes the tests that read module paths.
		goCommand(t, third, nil, "test", "-count=1", "-vet=off", "-run", "^(TestModuleName|TestLibraryNameOf|TestDefaultSchema)", ".")
	})

	t.Run("shares one host pool with the template", func(t *testing.T) {
		t.Parallel()
		testHostWithTwoLibraries(t, dir, newPath, name)
	})
}

// replaceDomain gives the library in dir, made from the template as path,
// a domain of its own, a job queue (testdata/jobs, named as the library): it
// removes every Go and SQL file its manifest gives the library and writes the
// queue's. It fails the test if that touches a file of the template's, and
// returns the files it removed, wrote or both.
func replaceDomain(t *testing.T, dir, path, name string) []string {
	t.Helper()
	m, err := readManifest(dir)
	require.NoError(t, err)
	src, err := listFiles(dir, "")
	require.NoError(t, err)
	changed := map[string]bool{}
	for _, p := range src.paths {
		if !m.isTemplate(p) && (strings.HasSuffix(p, ".go") || strings.HasSuffix(p, ".sql")) {
			require.NoError(t, os.Remove(filepath.Join(dir, filepath.FromSlash(p))))
			changed[p] = true
		}
	}
	jobs := renamer{oldPath: "github.com/acme/jobs", newPath: path, oldName: "jobs", newName: name}
	const from = "testdata/jobs"
	require.NoError(t, filepath.WalkDir(from, func(at string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(at)
		require.NoError(t, err)
		rel, err := filepath.Rel(from, at)
		require.NoError(t, err)
		p := jobs.path(filepath.ToSlash(rel))
		require.False(t, m.isTemplate(p), "the job queue's %s is a file of the template's", p)
		if strings.HasSuffix(p, ".go") {
			data = jobs.goSource(p, data, "")
		} else {
			data = []byte(jobs.text(string(data)))
		}
		changed[p] = true
		return writeFileTo(dir, p, file{data: data, mode: 0o644})
	}))
	return slices.Sorted(maps.Keys(changed))
}

func skipUnlessSlow(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: building the copy, running its whole test suite and a host program on both libraries take a minute or more")
	}
	if os.Getenv(insideCopy) != "" {
		t.Skip("this library is a copy under test by its template's newlib test, which covers copying it")
	}
}

// goCommand runs the go command in dir and fails the test with its output.
func goCommand(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	out, err := goRun(t, dir, env, args...)
	require.NoError(t, err, "go %s in %s:\n%s", strings.Join(args, " "), dir, out)
	return out
}

// goRun runs the go command in dir and returns its output.
func goRun(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("go %s: %s", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond))
	return string(out), err
}

// host is a program that embeds the template and the copy, each in its own
// schema, on the one pool it opens, and prints what it finds as "key: value".
var host = template.Must(template.New("host").Parse(`package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	first "{{.First.Path}}"
	second "{{.Second.Path}}"
)

// manager is the host's own: its pool, and the schema it lends a library.
type manager struct {
	pool   *pgxpool.Pool
	schema string
}

func (m manager) Pool() *pgxpool.Pool { return m.pool }
func (m manager) Schema() string      { return m.schema }

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	dsn := os.Getenv("HOST_DATABASE_URL")
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return err
	}
	cfg.MaxConns = {{.MaxConns}}
	cfg.ConnConfig.RuntimeParams["application_name"] = "host_pool"
	var opened atomic.Int64
	cfg.AfterConnect = func(context.Context, *pgx.Conn) error { opened.Add(1); return nil }
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	a, err := first.New(ctx, first.WithManager(manager{pool, "{{.First.Schema}}"}))
	if err != nil {
		return err
	}
	b, err := second.New(ctx, second.WithManager(manager{pool, "{{.Second.Schema}}"}))
	if err != nil {
		return err
	}

	// The checker's own connection, outside the host pool, excluded from the count.
	check, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer check.Close(ctx)
	for _, s := range []struct{ schema, table string }{
		{"{{.First.Schema}}", "{{.First.VersionTable}}"}, {"{{.Second.Schema}}", "{{.Second.VersionTable}}"},
	} {
		var tables, versions string
		err := check.QueryRow(ctx, "SELECT coalesce(string_agg(table_name, ',' ORDER BY table_name), '') FROM information_schema.tables WHERE table_schema = $1", s.schema).Scan(&tables)
		if err != nil {
			return err
		}
		fmt.Printf("tables %s: %s\n", s.schema, tables)
		err = check.QueryRow(ctx, "SELECT string_agg(version_id::text, ',' ORDER BY id) FROM "+pgx.Identifier{s.schema, s.table}.Sanitize()+" WHERE is_applied").Scan(&versions)
		if err != nil {
			return err
		}
		fmt.Printf("versions %s.%s: %s\n", s.schema, s.table, versions)
	}
	var backends, fromPool int
	err = check.QueryRow(ctx, ` + "`" + `SELECT count(*), count(*) FILTER (WHERE application_name = 'host_pool')
FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()` + "`" + `).Scan(&backends, &fromPool)
	if err != nil {
		return err
	}
	fmt.Printf("backends: %d\nbackends of the host pool: %d\nconnections the host pool opened: %d\n", backends, fromPool, opened.Load())

	a.Close()
	b.Close()
	var one int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return err
	}
	fmt.Printf("host pool after both Close: SELECT %d\n", one)
	return nil
}
`))

type hostLibrary struct{ Path, Dir, Schema, VersionTable string }

// testHostWithTwoLibraries builds a host module requiring the template and the
// copy through replace directives, offline, runs it, and checks its report.
func testHostWithTwoLibraries(t *testing.T, copyDir, copyPath, copyName string) {
	const maxConns = 4
	first := hostLibrary{Path: templatePath(t), Dir: templateDir(t), Schema: "audit", VersionTable: migrate.VersionTable(templateName(t))}
	second := hostLibrary{Path: copyPath, Dir: copyDir, Schema: copyName, VersionTable: migrate.VersionTable(copyName)}

	dir := t.TempDir()
	var src bytes.Buffer
	require.NoError(t, host.Execute(&src, map[string]any{"First": first, "Second": second, "MaxConns": maxConns}))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), src.Bytes(), 0o644))
	require.NoError(t, hostmod.Write(dir, "example.com/host",
		hostmod.Library{Path: first.Path, Dir: first.Dir}, hostmod.Library{Path: second.Path, Dir: second.Dir}))

	// Offline: every module is in the cache already, as the template builds.
	env := append(slices.Clip(hostmod.Env), "HOST_DATABASE_URL="+pgtest.DSN(t))
	out := goCommand(t, dir, env, "run", ".")
	report := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
			report[k] = v
		}
	}
	t.Logf("host report:\n%s", out)

	// Each schema holds its own version and checksum tables, and the tables
	// of the migrations, which the copy shares with the template.
	versions := migrationVersions(t)
	var domains [][]string
	for _, l := range []hostLibrary{first, second} {
		name := strings.TrimSuffix(l.VersionTable, "_goose_db_version")
		tables := strings.Split(report["tables "+l.Schema], ",")
		require.Contains(t, tables, l.VersionTable, "schema %s", l.Schema)
		require.Contains(t, tables, migrate.ChecksumTable(name), "schema %s", l.Schema)
		other := first
		if l == first {
			other = second
		}
		require.NotContains(t, tables, other.VersionTable, "schema %s", l.Schema)
		domains = append(domains, slices.DeleteFunc(tables, func(table string) bool { return strings.Contains(table, "_goose_") }))
		require.Equal(t, versions, report["versions "+l.Schema+"."+l.VersionTable])
	}
	require.NotEmpty(t, domains[0])
	require.Equal(t, domains[0], domains[1])

	backends, err := strconv.Atoi(report["backends"])
	require.NoError(t, err, out)
	require.LessOrEqual(t, backends, maxConns, "both libraries together use no connection beyond the host pool")
	require.Equal(t, report["backends"], report["backends of the host pool"], "every backend belongs to the host pool")
	opened, err := strconv.Atoi(report["connections the host pool opened"])
	require.NoError(t, err, out)
	require.LessOrEqual(t, opened, maxConns)
	require.Equal(t, "SELECT 1", report["host pool after both Close"])
}

// migrationVersions is what a version table holds once every embedded
// migration is applied: goose's 0, then each file's version.
func migrationVersions(t *testing.T) string {
	versions := []string{"0"}
	for _, v := range fileVersions(t, templateDir(t)) {
		versions = append(versions, strconv.FormatInt(v, 10))
	}
	return strings.Join(versions, ",")
}

// fileVersions lists the versions of dir's migration files, in order.
func fileVersions(t *testing.T, dir string) []int64 {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, migrationsDir, "*.sql"))
	require.NoError(t, err)
	var versions []int64
	for _, n := range names {
		digits, _, _ := strings.Cut(filepath.Base(n), "_")
		v, err := strconv.ParseInt(digits, 10, 64)
		require.NoError(t, err, n)
		versions = append(versions, v)
	}
	return versions
}

// nextMigration names a migration file of dir numbered after its last one.
func nextMigration(t *testing.T, dir, name string) string {
	t.Helper()
	versions := fileVersions(t, dir)
	require.NotEmpty(t, versions)
	return fmt.Sprintf("%s/%05d_%s.sql", migrationsDir, versions[len(versions)-1]+1, name)
}

// domainFiles lists the Go files, but tests, that dir's manifest gives the
// library: its domain, which a new library replaces.
func domainFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := readManifest(dir)
	require.NoError(t, err)
	src, err := listFiles(dir, "")
	require.NoError(t, err)
	return planTodo(src.paths, m).domain
}
