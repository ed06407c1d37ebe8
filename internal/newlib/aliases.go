package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// importAliases finds the Go files that must import the new library under
// another name, because they already use the new name for something else (an
// import, a variable, a parameter...) or their package declares it, and
// chooses that name for each.
func importAliases(root string, paths []string, r renamer) map[string]string {
	type goFile struct {
		path string
		pkg  string // directory and package name
		used map[string]bool
	}
	var importers []goFile
	declared := map[string]map[string]bool{} // package-level names, by package
	fset := token.NewFileSet()
	for _, p := range paths {
		if !strings.HasSuffix(p, ".go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(root, filepath.FromSlash(p)), nil, parser.SkipObjectResolution)
		if err != nil {
			continue // a file that does not parse is go build's to judge
		}
		pkg := path.Dir(p) + " " + f.Name.Name
		if declared[pkg] == nil {
			declared[pkg] = map[string]bool{}
		}
		for _, name := range topLevelNames(f) {
			declared[pkg][name] = true
		}
		if importsUnnamed(f, r.oldPath) {
			importers = append(importers, goFile{path: p, pkg: pkg, used: namesUsed(f, r.oldPath)})
		}
	}
	aliases := map[string]string{}
	for _, f := range importers {
		taken := func(name string) bool { return f.used[name] || declared[f.pkg][name] }
		if !taken(r.newName) {
			continue
		}
		alias := r.newName + "lib"
		for i := 2; taken(alias) || nameProblem(alias) != ""; i++ {
			alias = r.newName + "lib" + strconv.Itoa(i)
		}
		aliases[f.path] = alias
	}
	return aliases
}

// namesUsed lists the names a file gives its imports (but rootImport's) and
// every identifier in it but selected fields and methods: any of them can
// hide a package.
func namesUsed(f *ast.File, rootImport string) map[string]bool {
	used := map[string]bool{}
	for _, imp := range f.Imports {
		switch ip, _ := strconv.Unquote(imp.Path.Value); {
		case imp.Name != nil:
			used[imp.Name.Name] = true
		case ip != rootImport:
			used[importName(ip)] = true
		}
	}
	selected := map[*ast.Ident]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			selected[sel.Sel] = true
		}
		return true
	})
	ast.Inspect(f, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && id != f.Name && !selected[id] {
			used[id.Name] = true
		}
		return true
	})
	return used
}

// topLevelNames lists what a file declares in its package's scope, which
// no file of the package may also import as.
func topLevelNames(f *ast.File) []string {
	var names []string
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				names = append(names, d.Name.Name)
			}
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				switch spec := spec.(type) {
				case *ast.ValueSpec:
					for _, n := range spec.Names {
						names = append(names, n.Name)
					}
				case *ast.TypeSpec:
					names = append(names, spec.Name.Name)
				}
			}
		}
	}
	return names
}

// importsUnnamed reports whether f imports path under its own name.
func importsUnnamed(f *ast.File, path string) bool {
	for _, imp := range f.Imports {
		if ip, _ := strconv.Unquote(imp.Path.Value); ip == path && imp.Name == nil {
			return true
		}
	}
	return false
}

// importName guesses the name a package is known by from its import path:
// its last element, without a major-version suffix, a .vN or a go- prefix.
func importName(importPath string) string {
	name := libraryName(importPath)
	if i := strings.Index(name, ".v"); i > 0 {
		name = name[:i]
	}
	name = strings.TrimPrefix(name, "go-")
	if i := strings.LastIndexAny(name, "-."); i >= 0 {
		name = name[i+1:]
	}
	return name
}
