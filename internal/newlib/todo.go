package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/pgdual/mylib/internal/migrate"
)

// The note newlib puts at the top of the new library's README, between these
// markers, so that copying the copy replaces it rather than adding another.
const (
	noteStart = "<!-- newlib: start -->"
	noteEnd   = "<!-- newlib: end -->"
)

// steps lists what the new library still has to do by hand, in Markdown: the
// files its manifest gives the library, and the rest it keeps.
func (c *copied) steps() (replace []string, keep, never string) {
	if len(c.todo.domain) > 0 {
		replace = append(replace, fmt.Sprintf("%s, the example domain, with your library's own types, methods and the privileges they need; `go vet ./...` then points at the tests, examples and demo that used it: rewrite them for your domain.",
			codeList(c.todo.domain)))
	}
	if len(c.todo.tests) > 0 {
		replace = append(replace, fmt.Sprintf("%s, the example domain's tests and examples, with your domain's.", codeList(c.todo.tests)))
	}
	if c.todo.migrations {
		replace = append(replace, "`"+migrationsDir+"/*.sql` with your own migrations, numbered from `00001_name.sql`, naming tables only as `{{tables.name}}`.")
	}
	if c.todo.doc {
		replace = append(replace, "the opening of the package comment in `"+docFile+"`, which says what the library does; its sections on modes, migrations, errors and logging hold for your library too.")
	}
	texts := c.todo.texts
	if len(texts) == 0 {
		texts = []string{"README.md"}
	}
	replace = append(replace, "the text of "+codeList(texts)+", and the note newlib put at the top of `README.md`.")
	if c.todo.license != "" {
		replace = append(replace, fmt.Sprintf("choose your license: `%s` is the template's, copied as it is, and its notice stays with the code taken from the template; add your own copyright line, or your own license beside it.", c.todo.license))
	} else {
		replace = append(replace, "choose your license: add a `LICENSE` file, or pkg.go.dev shows no documentation and many users cannot depend on the library.")
	}
	keep = fmt.Sprintf("Keep the template's machinery as it is: what `%s` gives the template (%s, and the machinery's tests). `go run ./internal/newlib update` merges the template's later fixes into it, and your own edits to it survive.",
		manifestFile, codeList(c.todo.keep))
	at := "in the root package"
	if c.todo.constFile != "" {
		at = fmt.Sprintf("(`%s` line %d)", c.todo.constFile, c.todo.constLine)
	}
	never = fmt.Sprintf("Never change `moduleName` %s, now %q, after the first release: it names the version table `<schema>.%s`, the checksum table `<schema>.%s` and the migration lock, so a new name would run every migration again into a new, empty version table.",
		at, c.name, migrate.VersionTable(c.name), migrate.ChecksumTable(c.name))
	return replace, keep, never
}

// withNote puts the to-do note under the README's title, replacing one left
// by an earlier copy.
func withNote(readme []byte, c *copied) []byte {
	text := string(readme)
	if i := strings.Index(text, noteStart); i >= 0 {
		if j := strings.Index(text[i:], noteEnd); j >= 0 {
			text = text[:i] + strings.TrimLeft(text[i+j+len(noteEnd):], "\n")
		}
	}
	var title string
	if strings.HasPrefix(text, "# ") {
		title, text, _ = strings.Cut(text, "\n")
		title += "\n\n"
		text = strings.TrimLeft(text, "\n")
	}
	replace, keep, never := c.steps()
	var b strings.Builder
	b.WriteString(title + noteStart + "\n")
	fmt.Fprintf(&b, "> Made from the template `%s` with `go run ./internal/newlib`. Before the first release, replace:\n>\n", c.from)
	for i, s := range replace {
		fmt.Fprintf(&b, "> %d. %s\n", i+1, s)
	}
	fmt.Fprintf(&b, ">\n> %s\n>\n> %s\n", keep, never)
	b.WriteString(noteEnd + "\n")
	if text != "" {
		b.WriteString("\n" + text)
	}
	return []byte(b.String())
}

// printNextSteps tells the user what was made and what to do next.
func printNextSteps(w io.Writer, c *copied) {
	fmt.Fprintf(w, "Made %s in %s from %s: %d files.\n", c.to, c.dir, c.from, c.files)
	fmt.Fprintf(w, "  package %s, default schema %q, version table <schema>.%s\n", c.name, c.name, migrate.VersionTable(c.name))
	for _, m := range c.moved {
		fmt.Fprintf(w, "  renamed %s -> %s\n", m[0], m[1])
	}
	files := slices.Sorted(maps.Keys(c.aliases))
	for _, f := range files {
		fmt.Fprintf(w, "  %s imports the library as %s: it already uses the name %s for something else\n", f, c.aliases[f], c.name)
	}
	replace, keep, never := c.steps()
	fmt.Fprintf(w, "\nNext:\n  cd %s\n  go test ./...    (tests start a throwaway PostgreSQL from local binaries, or use TEST_DATABASE_URL)\n", c.dir)
	fmt.Fprintf(w, "  git init && git add -A && git commit -m \"Made from %s\"    (go run ./%s update takes the template's later fixes into a committed tree)\n", c.from, selfDir)
	fmt.Fprintf(w, "\nBefore the first release, replace:\n")
	for i, s := range replace {
		fmt.Fprintf(w, "  %d. %s\n", i+1, strings.ReplaceAll(s, "`", ""))
	}
	fmt.Fprintf(w, "%s\n%s\n", strings.ReplaceAll(keep, "`", ""), strings.ReplaceAll(never, "`", ""))
}

// codeList formats names as a Markdown list of code spans: `a`, `b` and `c`.
func codeList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = "`" + n + "`"
	}
	if len(quoted) < 2 {
		return strings.Join(quoted, "")
	}
	return strings.Join(quoted[:len(quoted)-1], ", ") + " and " + quoted[len(quoted)-1]
}

// newChangelog is the new library's CHANGELOG.md: its own history starts
// here, in the template's format.
func newChangelog(from string) []byte {
	return []byte(`# Changelog

All notable changes to this library are recorded here, in the format of
[Keep a Changelog](https://keepachangelog.com/en/1.1.0/). Versions follow
[Semantic Versioning](https://semver.org/spec/v2.0.0.html) as the README's "Releasing" section
applies it to a library that owns tables.

## [Unreleased]

### Added

- The library, made from the template ` + "`" + from + "`" + ` with ` + "`go run ./internal/newlib`" + `.
`)
}
