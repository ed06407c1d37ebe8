package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestManifest_LastMatchingLineDecides(t *testing.T) {
	m, err := parseManifest("m", []byte("# machinery\ntemplate internal/\ntemplate  cmd/   # the commands\nlibrary cmd/*/demo.go\nlibrary example_*_test.go\ntemplate lib.go\n"))
	require.NoError(t, err)
	for p, want := range map[string]string{
		"internal/migrate/run.go":  ownerTemplate,
		"internal/new/pkg/x.go":    ownerTemplate,
		"cmd/billing/main.go":      ownerTemplate,
		"cmd/billing/demo.go":      ownerLibrary,
		"example_list_test.go":     ownerLibrary,
		"lib.go":                   ownerTemplate,
		"internal":                 ownerLibrary, // a file named like the directory
		"lib.go/x":                 ownerLibrary,
		"sub/example_list_test.go": ownerLibrary,
	} {
		got, _ := m.owner(p)
		require.Equal(t, want, got, p)
	}
	_, named := m.owner("jobs.go")
	require.False(t, named, "a file no line names")
}

func TestManifest_RefusesWhatIsNotAnOwnerAndAPath(t *testing.T) {
	for text, want := range map[string]string{
		"template\n":               `line 1: "template" is not an owner and a path`,
		"ours lib.go\n":            `line 1: "ours lib.go"`,
		"\ntemplate a.go b.go\n":   "line 2",
		"library /etc/passwd\n":    "not a path relative to the module's root",
		"library migrations/[\n":   "not a path relative",
		"template lib.go # ok\n":   "",
		"# only a comment\n\n  \n": "",
	} {
		_, err := parseManifest("newlib.manifest", []byte(text))
		if want == "" {
			require.NoError(t, err, text)
			continue
		}
		require.ErrorContains(t, err, want, text)
		require.ErrorContains(t, err, "newlib.manifest", text)
	}
}

// TestManifest_NamesEveryFileOfTheTemplate: the template decides each of its
// files, so that no file becomes a library's or the template's by accident.
// In a copy, files of its own that no line names are the library's.
func TestManifest_NamesEveryFileOfTheTemplate(t *testing.T) {
	if isCopy(t) {
		t.Skip("a library made from the template: the files it adds are its own without a line in " + manifestFile)
	}
	m, err := readManifest(templateDir(t))
	require.NoError(t, err)
	src, err := listFiles(templateDir(t), "")
	require.NoError(t, err)
	for _, p := range src.paths {
		if _, named := m.owner(p); !named {
			t.Errorf("%s names no owner for %s: add a line, template (machinery, taken by updates) or library (replaced by a new library)", manifestFile, p)
		}
	}
}

// TestManifest_RootFilesSayWhoseTheyAre: the header of each Go file of the
// root package, and of the library's own files elsewhere, says what the
// manifest says of it.
func TestManifest_RootFilesSayWhoseTheyAre(t *testing.T) {
	root := templateDir(t)
	m, err := readManifest(root)
	require.NoError(t, err)
	src, err := listFiles(root, "")
	require.NoError(t, err)
	phrases := map[string]string{ownerTemplate: "The template's machinery (" + manifestFile + ")", ownerLibrary: "The library's own (" + manifestFile + ")"}
	for _, p := range src.paths {
		owner, _ := m.owner(p)
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || (strings.Contains(p, "/") && owner == ownerTemplate) {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, p), nil, parser.ParseComments)
		require.NoError(t, err)
		var header string
		for _, g := range f.Comments {
			if strings.Contains(g.Text(), "("+manifestFile+")") {
				header = g.Text()
			}
		}
		switch {
		case header == "" && isCopy(t):
			// A file the library wrote; the template's files all have one.
		case header == "":
			t.Errorf("%s has no header saying whose it is: begin a comment after its package clause with %q", p, phrases[owner])
		case !strings.HasPrefix(header, phrases[owner]):
			t.Errorf("%s says %q, but %s gives it to the %s: begin with %q", p, strings.SplitN(header, "\n", 2)[0], manifestFile, owner, phrases[owner])
		}
	}
}

// TestManifest_ReadmeSaysTheSame reads the README's "Make your own library":
// each file it tells a new library to replace is the library's, and each it
// tells it to keep is the template's.
func TestManifest_ReadmeSaysTheSame(t *testing.T) {
	root := templateDir(t)
	m, err := readManifest(root)
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	readme := string(data)
	replace, keep, ok := readmeLists(readme)
	if !ok {
		require.True(t, isCopy(t), `README.md has no "Make your own library" section with a list to replace and the machinery to keep`)
		t.Skip("a library made from the template, whose README no longer says how to make one")
	}
	for part, owner := range map[string]string{replace: ownerLibrary, keep: ownerTemplate} {
		paths := codePaths(part)
		require.NotEmpty(t, paths)
		for _, p := range paths {
			got, named := m.owner(example(p))
			require.True(t, named, "README.md names %s, which %s does not", p, manifestFile)
			require.Equal(t, owner, got, "README.md says %s is the %s's, %s says the %s's", p, owner, manifestFile, got)
		}
	}
}

// readmeLists returns the README's text on what a new library replaces and
// what it keeps.
func readmeLists(readme string) (replace, keep string, ok bool) {
	_, section, ok := strings.Cut(readme, "## Make your own library\n")
	if !ok {
		return "", "", false
	}
	_, rest, ok1 := strings.Cut(section, "replace them:\n")
	replace, rest, ok2 := strings.Cut(rest, "The template's are the machinery")
	keep, _, ok3 := strings.Cut(rest, "\n\n")
	return replace, keep, ok1 && ok2 && ok3
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// codePaths lists the code spans of text that name files or directories.
func codePaths(text string) []string {
	var paths []string
	for _, m := range codeSpan.FindAllStringSubmatch(text, -1) {
		s := m[1]
		if regexp.MustCompile(`^[A-Za-z._][A-Za-z0-9_.*/-]*$`).MatchString(s) && (strings.Contains(s, ".") || strings.HasSuffix(s, "/")) {
			paths = append(paths, s)
		}
	}
	return paths
}

// example returns a file that a path as the README writes it stands for: a
// file in a directory, a name for a *.
func example(p string) string {
	p = strings.ReplaceAll(p, "*", "x")
	if strings.HasSuffix(p, "/") {
		p += "x/x.go"
	}
	return p
}

// TestManifest_CopyGivesEveryFileTheSameOwner: newlib renames the manifest's
// paths as it renames the files, so a copy's manifest says of each file what
// the template's says of it.
func TestManifest_CopyGivesEveryFileTheSameOwner(t *testing.T) {
	newPath, name := secondLibrary(t)
	dir := filepath.Join(t.TempDir(), name)
	_, err := generate(templateDir(t), newPath, dir)
	require.NoError(t, err)
	before, err := readManifest(templateDir(t))
	require.NoError(t, err)
	after, err := readManifest(dir)
	require.NoError(t, err)
	r := renamer{oldPath: templatePath(t), newPath: newPath, oldName: templateName(t), newName: name}
	src, err := listFiles(templateDir(t), "")
	require.NoError(t, err)
	for _, p := range src.paths {
		if p == originFile {
			continue
		}
		want, _ := before.owner(p)
		got, _ := after.owner(r.path(p))
		require.Equal(t, want, got, "%s, %s in the copy", p, r.path(p))
	}
}
