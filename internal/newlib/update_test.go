package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib/internal/pgtest"
)

// history is a template in a git repository of its own with two commits, the
// template as it is and a later change, and a library made at the first.
type history struct {
	repo          string // the template's repository, at the second commit
	first, second string // the template's versions
	module, name  string // the library's
	library       string // its repository, at the commit that made it
	regenerated   sync.Map
	tmp           string // for the copies made again, which the subtests share
	// domain is a file of the example domain in the root package;
	// migration, one more migration file. The template changes both in its
	// second commit.
	domain, migration string
}

// newHistory builds the template's history: the template as it is, then a
// change to its machinery (a file renamed, a line changed, a file added) and
// to its example domain (a migration, a line), which libraries must not take.
// Between the two, it makes a library from the template and commits it.
func newHistory(t *testing.T) *history {
	h := &history{repo: filepath.Join(t.TempDir(), templateName(t)), tmp: t.TempDir()}
	src, err := listFiles(templateDir(t), "")
	require.NoError(t, err)
	for _, p := range src.paths {
		f, ok, err := readFile(filepath.Join(templateDir(t), filepath.FromSlash(p)))
		require.NoError(t, err)
		if ok {
			require.NoError(t, writeFileTo(h.repo, p, f))
		}
	}
	gitIn(t, h.repo, "init", "-q")
	commitAll(t, h.repo, "The template")
	h.first = versionOf(h.repo, templatePath(t)).Version

	h.module, h.name = secondLibrary(t)
	h.library = filepath.Join(t.TempDir(), h.name)
	_, err = generate(h.repo, h.module, h.library)
	require.NoError(t, err)
	gitIn(t, h.library, "init", "-q")
	commitAll(t, h.library, "Made from the template")

	edit(t, h.repo, "internal/redact/redact.go", func(s string) string {
		return strings.Replace(s, "// Package redact keeps passwords out of error messages.", "// Package redact keeps passwords out of error messages and log lines.", 1)
	})
	writeText(t, h.repo, "internal/redact/mask.go", "package redact\n\nimport \"strings\"\n\n// Masked reports whether msg holds the mask that String puts in place of a secret.\nfunc Masked(msg string) bool { return strings.Contains(msg, mask) }\n")
	gitIn(t, h.repo, "mv", "internal/proc/dir.go", "internal/proc/directory.go")
	for _, f := range domainFiles(t, h.repo) {
		if !strings.Contains(f, "/") && h.domain == "" {
			h.domain = f
		}
	}
	require.NotEmpty(t, h.domain, "the template has an example domain")
	h.migration = nextMigration(t, h.repo, "update_notes")
	writeText(t, h.repo, h.migration, "-- +goose Up\nCREATE TABLE {{tables.update_notes}} (id bigint PRIMARY KEY);\n")
	edit(t, h.repo, h.domain, func(s string) string { return s + "\n// The template's own domain changed.\n" })
	commitAll(t, h.repo, "A fix to the machinery, and a change to the example domain")
	h.second = versionOf(h.repo, templatePath(t)).Version
	return h
}

// clone returns a work tree of the library's repository, given the commit
// of a domain of its own when domain is true: a migration (numbered as the
// template's new one), a method and a line of its README.
func (h *history) clone(t *testing.T, domain bool) string {
	dir := filepath.Join(t.TempDir(), h.name)
	gitIn(t, t.TempDir(), "clone", "-q", h.library, dir)
	if domain {
		writeText(t, dir, h.ownMigration(), "-- +goose Up\nCREATE TABLE {{tables.update_comments}} (id bigint PRIMARY KEY);\n")
		edit(t, dir, h.domain, func(s string) string {
			return s + "\n// Describe says where the library keeps its tables.\nfunc (c *Client) Describe() string { return \"tables in \" + c.Schema() }\n"
		})
		edit(t, dir, "README.md", func(s string) string { return s + "\nA line of the library's own.\n" })
		commitAll(t, dir, "A domain of its own")
	}
	return dir
}

// ownMigration is the name of the migration the library adds to its domain.
func (h *history) ownMigration() string {
	return strings.Replace(h.migration, "_update_notes.sql", "_update_comments.sql", 1)
}

// updater returns an updater of the library in dir, whose go commands test on
// this test binary's server, and what it prints.
func (h *history) updater(t *testing.T, dir string) (*updater, *bytes.Buffer) {
	var out bytes.Buffer
	return &updater{root: dir, stdout: &out, stderr: &out, env: []string{"TEST_DATABASE_URL=" + pgtest.AdminDSN(t), insideCopy + "=1"},
		regenerate: h.regenerate}, &out
}

// regenerate makes the template's copy at a version once per test binary,
// with that version's newlib, as newlib update does.
func (h *history) regenerate(snap snapshot, module, _ string) (string, error) {
	type result struct {
		once sync.Once
		dir  string
		err  error
	}
	v, _ := h.regenerated.LoadOrStore(snap.version.Version+" "+module, &result{})
	r := v.(*result)
	r.once.Do(func() {
		var into string
		if into, r.err = os.MkdirTemp(h.tmp, "copy-"); r.err == nil {
			r.dir, r.err = regenerateCopy(snap, module, into, nil)
		}
	})
	return r.dir, r.err
}

// TestMachineryPackages: an update runs the tests of every package with a
// test file the manifest gives the template, and of no other.
func TestMachineryPackages(t *testing.T) {
	newPath, name := secondLibrary(t)
	dir := filepath.Join(t.TempDir(), name)
	_, err := generate(templateDir(t), newPath, dir)
	require.NoError(t, err)
	gitIn(t, dir, "init", "-q")
	writeText(t, dir, "internal/jobs/jobs_test.go", "package jobs\n") // the library's own, under internal/: the manifest gives it to the template
	writeText(t, dir, "jobs/jobs_test.go", "package jobs\n")          // the library's own, named by no line
	require.NoError(t, os.Remove(filepath.Join(dir, "internal/sqltmpl/sqltmpl_test.go")))
	require.NoError(t, os.Remove(filepath.Join(dir, "internal/sqltmpl/fuzz_test.go")))

	pkgs, err := machineryPackages(dir)
	require.NoError(t, err)
	require.Equal(t, ".", pkgs[0], "the root package holds the machinery's tests beside the domain's")
	for _, want := range []string{"./cmd/" + name, "./" + name + "test", "./internal/migrate", "./internal/newlib", "./internal/pgtest", "./internal/jobs"} {
		require.Contains(t, pkgs, want)
	}
	for _, not := range []string{"./jobs", "./internal/sqltmpl", "./migrations", "./internal/redact"} {
		require.NotContains(t, pkgs, not)
	}
}

// TestUpdate makes a library from the template as it was at an earlier
// commit, gives it a domain of its own, and updates it to the template's
// later commit.
func TestUpdate(t *testing.T) {
	skipUnlessSlow(t)
	h := newHistory(t)

	t.Run("downloads the template through GOPROXY", func(t *testing.T) {
		testProxySource(t, h)
	})

	t.Run("takes the machinery's changes and keeps the domain byte for byte", func(t *testing.T) {
		t.Parallel()
		dir := h.clone(t, true)
		before := readTreeT(t, dir)
		u, out := h.updater(t, dir)
		// The packages the template's change and the library's domain touch;
		// the template's own run covers the rest of its machinery's tests, and
		// TestMachineryPackages what an update runs by default.
		u.tests = []string{".", "./internal/proc", "./internal/redact"}
		require.NoError(t, u.run(updateFlags{template: h.repo}), out.String())
		t.Logf("newlib update:\n%s", out)
		for _, want := range []string{
			"Updating from " + templatePath(t) + "@" + h.first + " to " + h.second + ":\n",
			"  renamed      internal/proc/dir.go -> internal/proc/directory.go\n",
			"  added        internal/redact/mask.go\n",
			"  updated      internal/redact/redact.go\n",
			"2 updated, 1 added, 0 removed, 0 conflicted.\n",
			"the template changed " + strings.Join(slices.Sorted(slices.Values([]string{h.domain, h.migration})), ", ") + ".\n",
			"go vet ./...: ok\n",
		} {
			require.Contains(t, out.String(), want)
		}
		require.Contains(t, out.String(), "\ngo test -short . ./internal/proc ./internal/redact: ok\n")
		requireOrigin(t, dir, h, h.second)

		after := readTreeT(t, dir)
		own, err := readManifest(dir)
		require.NoError(t, err)
		for _, p := range union(before, after) {
			if !own.isTemplate(p) && p != originFile {
				require.Equal(t, string(before[p].data), string(after[p].data), "the library's own %s, byte for byte", p)
			}
		}
		require.NotContains(t, after, h.migration, "the template's domain stays the template's")
		require.Contains(t, after, h.ownMigration())

		fresh := filepath.Join(t.TempDir(), h.name)
		_, err = generate(h.repo, h.module, fresh)
		require.NoError(t, err)
		want := readTreeT(t, fresh)
		for _, p := range union(want, after) {
			if own.isTemplate(p) {
				require.Contains(t, after, p, "the updated library has the new copy's machinery")
				require.Contains(t, want, p, "the updated library has no machinery a new copy lacks")
				require.True(t, want[p].same(after[p]), "%s differs from a new copy's: %s", p, firstDifference(string(want[p].data), string(after[p].data)))
			}
		}
	})

	t.Run("a conflicting edit leaves markers and keeps the recorded version", func(t *testing.T) {
		t.Parallel()
		dir := h.clone(t, false)
		edit(t, dir, "internal/redact/redact.go", func(s string) string {
			return strings.Replace(s, "// Package redact keeps passwords out of error messages.", "// Package redact keeps passwords out of this library's error messages.", 1)
		})
		edit(t, dir, "internal/proc/dir.go", func(s string) string { return s + "\n// A line of the library's own in the machinery.\n" })
		commitAll(t, dir, "Edits to the machinery")

		u, out := h.updater(t, dir)
		err := u.run(updateFlags{template: h.repo})
		require.ErrorIs(t, err, errConflicts, out.String())
		require.Contains(t, out.String(), "  conflicted   internal/redact/redact.go: this copy and the template changed the same lines (1 places): resolve the conflict markers\n")
		require.Contains(t, out.String(), "1 updated, 1 added, 0 removed, 1 conflicted.\n")
		require.Contains(t, out.String(), "update -continue")
		redact := readText(t, dir, "internal/redact/redact.go")
		for _, marker := range []string{"<<<<<<< this library\n", "||||||| template " + h.first + "\n", "=======\n", ">>>>>>> template " + h.second + "\n", "and log lines", "this library's error messages"} {
			require.Contains(t, redact, marker)
		}
		require.Contains(t, readText(t, dir, "internal/proc/directory.go"), "A line of the library's own in the machinery.", "the library's edit follows the rename")
		require.NoFileExists(t, filepath.Join(dir, "internal/proc/dir.go"))
		o := requireOrigin(t, dir, h, h.first)
		require.Equal(t, &pendingUpdate{Template: templateVersion{Module: templatePath(t), Version: h.second, Clean: true}, Newlib: version, Conflicted: []string{"internal/redact/redact.go"}}, o.Pending)

		require.ErrorContains(t, u.run(updateFlags{template: h.repo}), "in progress")
		require.ErrorContains(t, u.run(updateFlags{cont: true}), "internal/redact/redact.go still has conflict markers")
		requireOrigin(t, dir, h, h.first)

		edit(t, dir, "internal/redact/redact.go", func(s string) string {
			start, end := strings.Index(s, "<<<<<<<"), strings.Index(s, ">>>>>>> template "+h.second+"\n")
			return s[:start] + "// Package redact keeps passwords out of this library's error messages and log lines.\n" + s[end+len(">>>>>>> template "+h.second+"\n"):]
		})
		u.tests = []string{"./internal/redact", "./internal/proc"}
		out.Reset()
		require.NoError(t, u.run(updateFlags{cont: true}), out.String())
		require.Contains(t, out.String(), "go test -short ./internal/redact ./internal/proc: ok\n")
		requireOrigin(t, dir, h, h.second)
	})

	t.Run("a dirty tree is refused", func(t *testing.T) {
		t.Parallel()
		dir := h.clone(t, false)
		edit(t, dir, h.domain, func(s string) string { return s + "\n// Not committed.\n" })
		writeText(t, dir, "notes.txt", "not tracked\n")
		var out bytes.Buffer
		err := run([]string{"update", "-template", h.repo, dir}, &out, &out)
		require.ErrorContains(t, err, "has changes that are not committed ("+h.domain+", notes.txt): commit or stash them first")
		require.Empty(t, out.String())
		require.Equal(t, " M "+h.domain+"\n?? notes.txt\n", gitIn(t, dir, "status", "--porcelain"), "nothing else changed")
		requireOrigin(t, dir, h, h.first)
	})

	t.Run("a library made before origins names its origin once", func(t *testing.T) {
		t.Parallel()
		dir := h.clone(t, false)
		gitIn(t, dir, "rm", "-q", originFile)
		commitAll(t, dir, "A library that does not know its origin")
		u, out := h.updater(t, dir)
		require.ErrorContains(t, u.run(updateFlags{template: h.repo}), "-origin")

		firstCommit := strings.TrimSpace(gitIn(t, h.repo, "rev-parse", "--short", "HEAD~1"))
		u.tests = []string{"./internal/redact"}
		require.NoError(t, u.run(updateFlags{template: h.repo, origin: firstCommit}), out.String())
		require.Contains(t, out.String(), "Updating from "+templatePath(t)+"@"+h.first+" to "+h.second)
		requireOrigin(t, dir, h, h.second)
		require.ErrorContains(t, u.run(updateFlags{template: h.repo, origin: firstCommit}), "records "+templatePath(t)+"@"+h.second)
	})
}

// testProxySource serves the template's two versions from a module proxy on
// disk and downloads them as newlib update does by default.
func testProxySource(t *testing.T, h *history) {
	module := templatePath(t)
	proxy := t.TempDir()
	versions := filepath.Join(proxy, filepath.FromSlash(escapeModulePath(module)), "@v")
	require.NoError(t, os.MkdirAll(versions, 0o755))
	for _, v := range []string{h.first, h.second} {
		files := t.TempDir()
		require.NoError(t, gitArchive(h.repo, revisionOf(v), files))
		writeModuleZip(t, filepath.Join(versions, v+".zip"), module+"@"+v, files)
		gomod, err := os.ReadFile(filepath.Join(files, "go.mod"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(versions, v+".mod"), gomod, 0o644))
		info, err := json.Marshal(map[string]string{"Version": v})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(versions, v+".info"), info, 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(versions, "..", "@latest"), info, 0o644)) // the second, last
	}
	require.NoError(t, os.WriteFile(filepath.Join(versions, "list"), nil, 0o644))

	cache := t.TempDir()
	t.Setenv("GOMODCACHE", cache) // read by versionOf, as by a copy's newlib run in the cache
	src := proxySource{module: module, tmp: t.TempDir(), env: []string{"GOPROXY=file://" + filepath.ToSlash(proxy), "GOSUMDB=off", "GOFLAGS=-modcacherw"}}
	old, err := src.at(h.first)
	require.NoError(t, err)
	require.Equal(t, templateVersion{Module: module, Version: h.first, Clean: true}, old.version)
	require.FileExists(t, filepath.Join(old.dir, "internal/proc/dir.go"))
	require.Equal(t, templateVersion{Module: module, Version: h.first, Clean: true}, versionOf(old.dir, module), "a copy made from the module cache records the version")

	latest, err := src.at("")
	require.NoError(t, err)
	require.Equal(t, h.second, latest.version.Version)
	require.FileExists(t, filepath.Join(latest.dir, "internal/proc/directory.go"))

	_, err = src.at("v9.9.9")
	require.ErrorContains(t, err, "downloading the template "+module+"@v9.9.9")
}

// writeModuleZip writes the files under dir as a module zip: each file under
// the prefix module@version/.
func writeModuleZip(t *testing.T, name, prefix, dir string) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		w, err := zw.Create(prefix + "/" + filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}))
	require.NoError(t, zw.Close())
	require.NoError(t, os.WriteFile(name, buf.Bytes(), 0o644))
}

// escapeModulePath escapes a module path as the module proxy protocol does:
// each capital letter becomes ! and the letter in lower case.
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if 'A' <= r && r <= 'Z' {
			b.WriteString("!" + strings.ToLower(string(r)))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// requireOrigin checks what the library in dir records: its names, and the
// template at version.
func requireOrigin(t *testing.T, dir string, h *history, version string) origin {
	t.Helper()
	o, ok, err := readOrigin(dir)
	require.NoError(t, err)
	require.True(t, ok, "%s records its origin", dir)
	require.Equal(t, templateVersion{Module: templatePath(t), Version: version, Clean: true}, o.Template)
	require.Equal(t, h.module, o.Module)
	require.Equal(t, h.name, o.Name)
	return o
}

func readTreeT(t *testing.T, dir string) tree {
	tr, err := readTree(dir)
	require.NoError(t, err)
	return tr
}

// union lists the paths of two trees.
func union(a, b tree) []string {
	var paths []string
	for p := range a {
		paths = append(paths, p)
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			paths = append(paths, p)
		}
	}
	return paths
}

func readText(t *testing.T, dir, p string) string {
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(p)))
	require.NoError(t, err)
	return string(data)
}

func writeText(t *testing.T, dir, p, text string) {
	require.NoError(t, writeFileTo(dir, p, file{data: []byte(text), mode: 0o644}))
}

// edit rewrites a text file, which must change.
func edit(t *testing.T, dir, p string, change func(string) string) {
	before := readText(t, dir, p)
	after := change(before)
	require.NotEqual(t, before, after, "editing %s changed nothing: the test's edit no longer applies to the template", p)
	writeText(t, dir, p, after)
}
