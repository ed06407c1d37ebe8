package main

import (
	"bytes"
	"go/format"
	"go/parser"
	"go/scanner"
	"go/token"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"
)

// renamer rewrites the template's module path and name into the new ones.
//
// The module path is replaced wherever it stands alone (import paths, URLs,
// commands); the name wherever it is a word of its own, touching no other
// letter or digit: from a template named ledger, "ledger", "ledger_test",
// "cmd/ledger" and "ledger_goose_db_version" change but "ledgers" does not.
// In Go files only identifiers, literals and comments are rewritten.
type renamer struct {
	oldPath, newPath string
	oldName, newName string
}

// text rewrites a text file's content, or any token of a Go file.
func (r renamer) text(s string) string { return r.replace(s, true) }

// modFile rewrites a go.mod file: only the module path, since its other lines
// name other modules, whatever words they hold.
func (r renamer) modFile(src []byte) []byte { return []byte(r.replace(string(src), false)) }

func (r renamer) replace(s string, names bool) string {
	if !strings.Contains(s, r.oldPath) && !(names && strings.Contains(s, r.oldName)) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case r.atPath(s, i):
			b.WriteString(r.newPath)
			i += len(r.oldPath)
		case names && r.atName(s, i):
			b.WriteString(r.newName)
			i += len(r.oldName)
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

// atPath reports whether the module path starts at s[i] and is not part of a
// longer path element (example.com/x/ledger2 for example.com/x/ledger) or a
// longer host name.
func (r renamer) atPath(s string, i int) bool {
	if !strings.HasPrefix(s[i:], r.oldPath) {
		return false
	}
	end := i + len(r.oldPath)
	return (i == 0 || !isWordByte(s[i-1]) && s[i-1] != '.' && s[i-1] != '-') &&
		(end == len(s) || !isWordByte(s[end]) && s[end] != '-')
}

// atName reports whether the name starts at s[i] as a word of its own.
func (r renamer) atName(s string, i int) bool {
	if !strings.HasPrefix(s[i:], r.oldName) {
		return false
	}
	end := i + len(r.oldName)
	return (i == 0 || !isAlnum(s[i-1])) && (end == len(s) || !isAlnum(s[end]))
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c >= utf8.RuneSelf
}

func isWordByte(c byte) bool { return isAlnum(c) || c == '_' }

// path renames each element of a slash-separated file path: cmd/ledger/main.go
// becomes cmd/billing/main.go.
func (r renamer) path(p string) string {
	elems := strings.Split(p, "/")
	for i, e := range elems {
		elems[i] = r.text(e)
	}
	return path.Join(elems...)
}

// goSource rewrites the identifiers, literals and comments of a Go file,
// leaving keywords, operators and layout alone, then formats the result so
// that columns aligned around a renamed word stay aligned. With an alias, the
// file imports the library under that name and qualifies with it. A file
// that does not scan is rewritten as text.
func (r renamer) goSource(name string, src []byte, alias string) []byte {
	fset := token.NewFileSet()
	file := fset.AddFile(name, -1, len(src))
	var sc scanner.Scanner
	failed := false
	sc.Init(file, src, func(token.Position, string) { failed = true }, scanner.ScanComments)

	// With an alias, the identifiers naming the library take it; an alias an
	// earlier copy chose (oldName + "lib"...) follows the new name.
	importAt, oldAlias := rootImport(src, r.oldPath)
	idents := map[string]string{}
	if alias != "" {
		idents[r.oldName] = alias
	} else if strings.HasPrefix(oldAlias, r.oldName+"lib") {
		idents[oldAlias] = r.newName + strings.TrimPrefix(oldAlias, r.oldName)
	}
	var out bytes.Buffer
	last := 0
	for {
		pos, tok, lit := sc.Scan()
		if tok == token.EOF {
			break
		}
		if tok != token.IDENT && tok != token.STRING && tok != token.CHAR && tok != token.COMMENT {
			continue
		}
		start := file.Offset(pos)
		end := tokenEnd(src, start, lit)
		text := r.text(string(src[start:end]))
		if to, ok := idents[lit]; ok && tok == token.IDENT {
			text = to
		}
		if start == importAt && alias != "" {
			text = alias + " " + text
		}
		out.Write(src[last:start])
		out.WriteString(text)
		last = end
	}
	out.Write(src[last:])
	if failed {
		return []byte(r.text(string(src)))
	}
	if bytes.Equal(out.Bytes(), src) {
		return src
	}
	if formatted, err := format.Source(out.Bytes()); err == nil {
		return formatted
	}
	return out.Bytes()
}

// goImports rewrites the import paths of a Go file and nothing else.
func (r renamer) goImports(name string, src []byte) []byte {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
	if err != nil {
		return src
	}
	var out bytes.Buffer
	last := 0
	for _, imp := range f.Imports {
		start, end := fset.Position(imp.Path.Pos()).Offset, fset.Position(imp.Path.End()).Offset
		out.Write(src[last:start])
		out.WriteString(r.replace(string(src[start:end]), false))
		last = end
	}
	out.Write(src[last:])
	if formatted, err := format.Source(out.Bytes()); err == nil {
		return formatted
	}
	return out.Bytes()
}

// rootImport finds the import of path in a Go file: the offset of its
// string, and its alias; -1 when the file does not import path.
func rootImport(src []byte, path string) (offset int, alias string) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "", src, parser.ImportsOnly)
	if err != nil {
		return -1, ""
	}
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == path {
			if imp.Name != nil {
				alias = imp.Name.Name
			}
			return fset.Position(imp.Path.Pos()).Offset, alias
		}
	}
	return -1, ""
}

// tokenEnd returns the offset just past the token at src[start:] whose
// literal is lit. The scanner drops carriage returns from raw strings and
// comments, so lit can be shorter than the token's source.
func tokenEnd(src []byte, start int, lit string) int {
	if end := start + len(lit); end <= len(src) && string(src[start:end]) == lit {
		return end
	}
	rest := src[start:]
	var n int
	switch {
	case bytes.HasPrefix(rest, []byte("`")):
		n = bytes.IndexByte(rest[1:], '`') + 2
	case bytes.HasPrefix(rest, []byte("/*")):
		n = bytes.Index(rest, []byte("*/")) + 2
	default: // a line comment
		n = bytes.IndexByte(rest, '\n')
	}
	if n <= 0 {
		return len(src)
	}
	return start + n
}
