package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pgdual/mylib/internal/migrate"
	"github.com/pgdual/mylib/internal/sqltmpl"
)

// majorSuffix is the /v2, /v3... that ends the path of a module's later major versions.
var majorSuffix = regexp.MustCompile(`^v[0-9]+$`)

// libraryName is the name a module path gives a library: its last element,
// or the one before a major-version suffix (example.com/acme/billing/v2 is billing).
func libraryName(modulePath string) string {
	elems := strings.Split(modulePath, "/")
	if n := len(elems); n > 1 && majorSuffix.MatchString(elems[n-1]) {
		return elems[n-2]
	}
	return elems[len(elems)-1]
}

// pathElement is what each element of a module path may hold.
var pathElement = regexp.MustCompile(`^[A-Za-z0-9._~-]+$`)

// checkModulePath refuses what cannot be a module path. It is a plain syntax
// check: go build has the last word on the rest.
func checkModulePath(p string) error {
	if p == "" {
		return errors.New("the new module path is empty: pass one such as github.com/acme/billing")
	}
	for _, e := range strings.Split(p, "/") {
		if e == "" || e == "." || e == ".." || !pathElement.MatchString(e) {
			return fmt.Errorf("%q is not a module path: use slash-separated elements of letters, digits and ._~- such as github.com/acme/billing", p)
		}
	}
	return nil
}

// maxNameLen keeps the version table name, the longest name derived from the
// library's name, within PostgreSQL's 63-byte identifiers: a longer one is
// truncated by the server while goose keeps comparing the full name.
var maxNameLen = 63 - len(migrate.VersionTable(""))

// checkName refuses a library name that cannot be all it becomes: the root
// package's name, the default schema and the prefix of the version table.
// The error proposes names that would do.
func checkName(modulePath string) error {
	name := libraryName(modulePath)
	problem := nameProblem(name)
	if problem == "" {
		return nil
	}
	msg := fmt.Sprintf("cannot name the library %q (the last element of %s): %s. The name becomes the package name, the default schema and the prefix of the version table, so it must be a lowercase Go identifier (^[a-z_][a-z0-9_]*$, at most %d bytes)",
		name, modulePath, problem, maxNameLen)
	var paths []string
	for _, s := range suggestNames(name) {
		paths = append(paths, withName(modulePath, s))
	}
	if len(paths) > 0 {
		msg += "; use " + strings.Join(paths, " or ")
	}
	return errors.New(msg)
}

// nameProblem says why name cannot name a library, or returns "".
func nameProblem(name string) string {
	switch {
	case token.IsKeyword(name):
		return "it is a Go keyword"
	case !token.IsIdentifier(name):
		return "it is not a Go identifier"
	case strings.ToLower(name) != name:
		return "it has uppercase letters, and schema names are kept lowercase so that quoted and unquoted SQL agree"
	case strings.HasPrefix(name, "pg_"):
		return "PostgreSQL reserves schema names starting with pg_"
	case sqltmpl.ValidateSchema(name) != nil:
		return "it cannot be a schema name: " + strings.TrimPrefix(sqltmpl.ValidateSchema(name).Error(), "invalid schema name ")
	case types.Universe.Lookup(name) != nil:
		return "it is a predeclared Go identifier, which every file importing the library would lose"
	case name == "main":
		return "a package named main is a command, not a library"
	case strings.HasSuffix(name, "_test"):
		return "go test reserves package names ending in _test for external tests"
	case len(name) > maxNameLen:
		return fmt.Sprintf("its version table %s would exceed PostgreSQL's 63-byte identifiers", migrate.VersionTable(name))
	}
	return ""
}

// suggestNames proposes valid names close to name: without a go- prefix or
// -go suffix, with separators as underscores, or with them dropped.
func suggestNames(name string) []string {
	lower := strings.ToLower(name)
	var out []string
	add := func(s string) {
		if s != "" && s != name && nameProblem(s) == "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, sep := range []string{"-", ".", "_"} {
		if rest, ok := strings.CutPrefix(lower, "go"+sep); ok {
			add(joinSeparated(rest, ""))
		}
		if rest, ok := strings.CutSuffix(lower, sep+"go"); ok {
			add(joinSeparated(rest, ""))
		}
	}
	add(strings.TrimSuffix(strings.TrimPrefix(lower, "pg_"), "_test"))
	add(joinSeparated(lower, "_"))
	add(joinSeparated(lower, ""))
	if len(out) == 0 {
		// A keyword, a predeclared name, main, a leading digit: add a word.
		base := joinSeparated(lower, "_")
		if base != "" && base[0] >= '0' && base[0] <= '9' {
			add("lib" + base)
		} else {
			add(base + "lib")
			add(base + "db")
		}
	}
	return out
}

var separators = regexp.MustCompile(`[^a-z0-9_]+`)

// joinSeparated replaces each run of characters a name cannot hold with sep.
func joinSeparated(s, sep string) string {
	return strings.Trim(separators.ReplaceAllString(s, sep), "_")
}

// withName replaces the library name in a module path, keeping a major-version suffix.
func withName(modulePath, name string) string {
	elems := strings.Split(modulePath, "/")
	i := len(elems) - 1
	if i > 0 && majorSuffix.MatchString(elems[i]) {
		i--
	}
	elems[i] = name
	return strings.Join(elems, "/")
}

// moduleNameConst is where the root package declares moduleName.
type moduleNameConst struct {
	found bool
	value string
	file  string // relative to the module root
	line  int
}

// findModuleName reads the moduleName constant of the root package at root.
func findModuleName(root string) (moduleNameConst, error) {
	files, err := filepath.Glob(filepath.Join(root, "*.go"))
	if err != nil {
		return moduleNameConst{}, err
	}
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
		if err != nil {
			return moduleNameConst{}, fmt.Errorf("reading the template: %w", err)
		}
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST {
				continue
			}
			for _, spec := range gen.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if n.Name != "moduleName" || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					value, err := strconv.Unquote(lit.Value)
					if err != nil {
						continue
					}
					return moduleNameConst{found: true, value: value, file: filepath.Base(file), line: fset.Position(n.Pos()).Line}, nil
				}
			}
		}
	}
	return moduleNameConst{}, nil
}
