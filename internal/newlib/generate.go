package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// docFile holds the package comment, whose opening says what the library
// does; its sections on modes, migrations and errors hold for any library
// made from the template.
const docFile = "doc.go"

// changelogFile is the library's history: a copy starts its own.
const changelogFile = "CHANGELOG.md"

// migrationsDir holds the embedded migrations, which a library replaces.
const migrationsDir = "migrations"

// copied says what generate made.
type copied struct {
	from, to  string // module paths
	name      string // the new library's name
	dir       string // absolute
	files     int
	moved     [][2]string       // directories and files whose path changed: from, to
	untracked []string          // files in the template's work tree that git does not track
	aliases   map[string]string // files that import the library under another name: the name
	todo      todo
	origin    origin // what the copy records of its template
}

// todo is what a new library still has to do by hand, as its manifest says.
type todo struct {
	domain     []string // the example domain's code, to replace
	tests      []string // the example domain's tests and examples
	texts      []string // the text that says what the library is
	doc        bool     // the package comment is in docFile
	migrations bool
	license    string   // the license file, if any
	keep       []string // what the manifest gives the template, as written, tests aside
	constFile  string   // the file and line declaring moduleName, if found
	constLine  int
}

// generate copies the template at root into dir as the module newPath. It
// refuses a name that cannot serve, and a dir that holds anything, before
// writing a file.
func generate(root, newPath, dir string) (*copied, error) {
	oldPath, err := readModulePath(root)
	if err != nil {
		return nil, fmt.Errorf("reading the template's module path: %w", err)
	}
	if err := checkModulePath(newPath); err != nil {
		return nil, err
	}
	if err := checkName(newPath); err != nil {
		return nil, err
	}
	r := renamer{oldPath: oldPath, newPath: newPath, oldName: libraryName(oldPath), newName: libraryName(newPath)}

	mn, err := findModuleName(root)
	if err != nil {
		return nil, err
	}
	if mn.found && mn.value != r.oldName {
		return nil, fmt.Errorf("the template disagrees with itself: %s line %d says moduleName = %q but its module path %s ends in %q; make them agree before copying it",
			filepath.Join(root, mn.file), mn.line, mn.value, oldPath, r.oldName)
	}

	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := checkEmpty(dir); err != nil {
		return nil, err
	}
	src, err := listFiles(root, dir)
	if err != nil {
		return nil, fmt.Errorf("listing the template's files: %w", err)
	}

	// A copy of a copy records its own origin, not its template's.
	src.paths = slices.DeleteFunc(src.paths, func(p string) bool { return p == originFile })

	aliases := importAliases(root, src.paths, r)
	out, err := rewriteAll(root, src.paths, r, aliases)
	if err != nil {
		return nil, err
	}
	m, ok := out[manifestFile]
	if !ok {
		return nil, fmt.Errorf("the template %s has no %s, which says which files are the template's and which a new library replaces: add one (the template github.com/pgdual/mylib has it)", root, manifestFile)
	}
	own, err := parseManifest(filepath.Join(dir, manifestFile), m.data)
	if err != nil {
		return nil, err
	}
	res := &copied{from: oldPath, to: newPath, name: r.newName, dir: dir, files: len(out) + 1, untracked: src.untracked, aliases: aliases}
	res.moved = moves(src.paths, r)
	res.todo = planTodo(slices.Sorted(maps.Keys(out)), own)
	res.origin = origin{Template: versionOf(root, oldPath), Module: newPath, Name: r.newName, Newlib: version}
	if _, ok := out[changelogFile]; ok {
		out[changelogFile] = file{data: newChangelog(oldPath), mode: 0o644}
	}
	res.todo.constFile, res.todo.constLine = mn.file, mn.line // rewriting keeps lines in place
	if readme, ok := out["README.md"]; ok && readme.link == "" {
		readme.data = withNote(readme.data, res)
		out["README.md"] = readme
	}
	if err := writeAll(dir, out); err != nil {
		return nil, err
	}
	if err := writeOrigin(dir, res.origin); err != nil {
		return nil, err
	}

	after, err := findModuleName(dir)
	if err != nil {
		return nil, err
	}
	if after.found && after.value != r.newName {
		return nil, fmt.Errorf("%s line %d still says moduleName = %q after the copy: set it to %q", filepath.Join(dir, after.file), after.line, after.value, r.newName)
	}
	return res, nil
}

// checkEmpty refuses a dir that exists and holds anything: newlib never
// overwrites or mixes with files it did not write.
func checkEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%s cannot be the new library's directory: %w", dir, err)
	case len(entries) > 0:
		return fmt.Errorf("%s is not empty: name a new or empty directory for the new library", dir)
	}
	return nil
}

// rewriteAll reads the template's files and rewrites each by kind, keyed by
// its new path.
func rewriteAll(root string, paths []string, r renamer, aliases map[string]string) (map[string]file, error) {
	out := make(map[string]file, len(paths))
	from := make(map[string]string, len(paths))
	for _, p := range paths {
		f, ok, err := readFile(filepath.Join(root, filepath.FromSlash(p)))
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // a submodule or a special file: nothing to copy
		}
		if f.link == "" {
			f.data = rewriteFile(p, f.data, r, aliases[p])
		}
		np := r.path(p)
		if other, dup := from[np]; dup {
			return nil, fmt.Errorf("both %s and %s would become %s in the copy: rename one in the template", other, p, np)
		}
		from[np] = p
		out[np] = f
	}
	return out, nil
}

// selfDir holds this command. Its files are about copying, not about the
// library, and its tests use library names and paths as data: they are copied
// as they are but for their import paths.
const selfDir = "internal/newlib"

// rewriteFile rewrites one file's content according to its kind. A Go file
// with an alias imports the library under that name.
func rewriteFile(p string, data []byte, r renamer, alias string) []byte {
	switch base := path.Base(p); {
	case base == "go.sum", isLicense(p):
		// A license's notice stays with the code taken from the template.
		return data
	case base == "go.mod":
		return r.modFile(data)
	case strings.HasSuffix(base, ".go") && strings.HasPrefix(p, selfDir+"/"):
		return r.goImports(p, data)
	case strings.HasSuffix(base, ".go"):
		return r.goSource(p, data, alias)
	case utf8.Valid(data) && !bytes.ContainsRune(data, 0):
		return []byte(r.text(string(data)))
	}
	return data
}

func writeAll(dir string, out map[string]file) error {
	for p, f := range out {
		if err := writeFileTo(dir, p, f); err != nil {
			return err
		}
	}
	return nil
}

// moves lists the directories and files whose own name changed, outermost first.
func moves(paths []string, r renamer) [][2]string {
	var list [][2]string
	seen := map[string]bool{}
	for _, p := range paths {
		elems := strings.Split(p, "/")
		for i := range elems {
			prefix := strings.Join(elems[:i+1], "/")
			if renamed := r.path(prefix); path.Base(renamed) != elems[i] && !seen[prefix] {
				seen[prefix] = true
				list = append(list, [2]string{prefix, renamed})
				break
			}
		}
	}
	return list
}

// planTodo sorts the new library's own files, as its manifest gives them to
// it, into what its user replaces: the example domain, its tests, its
// migrations, the package comment, the texts and the license.
func planTodo(paths []string, m manifest) todo {
	var t todo
	for _, p := range paths {
		if m.isTemplate(p) {
			continue
		}
		switch {
		case p == docFile:
			t.doc = true
		case strings.HasPrefix(p, migrationsDir+"/"):
			t.migrations = true
		case isLicense(p):
			if t.license == "" {
				t.license = p
			}
		case strings.HasSuffix(p, "_test.go"):
			t.tests = append(t.tests, p)
		case strings.HasSuffix(p, ".go"):
			t.domain = append(t.domain, p)
		case strings.HasSuffix(p, ".md") && p != changelogFile:
			t.texts = append(t.texts, p)
		}
	}
	for _, p := range m.patterns(ownerTemplate) {
		if !strings.HasSuffix(p, "_test.go") {
			t.keep = append(t.keep, p)
		}
	}
	return t
}

// isLicense reports whether p is a license file at the root: LICENSE,
// LICENSE.md, COPYING...
func isLicense(p string) bool {
	base := strings.ToUpper(strings.TrimSuffix(p, path.Ext(p)))
	return !strings.Contains(p, "/") && (base == "LICENSE" || base == "LICENCE" || base == "COPYING")
}
