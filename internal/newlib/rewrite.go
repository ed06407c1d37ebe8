package main

import (
	"bytes"
	"go/format"
	"go/parser"
	"go/scanner"
	"go/token"
	"strconv"
	"strings"
	"unicode/utf8"
)

// renamer rewrites the template's module path and name into the new ones.
//
// The module path is replaced wherever it stands alone (import paths, URLs,
// commands). The name is replaced where it is a word of its own (touching no
// other letter or digit) and stands for the library: the template's name may
// also be a common word ("audit" in a copy named audit, whose example domain
// is an audit log), and such words are left alone. The name stands for the
// library in the forms the template writes it in (see asName): a qualifier
// (ledger.New), a derived table (ledger_goose_db_version) or schema
// (ledger_demo_...), an error prefix (ledger:), a name derived with a dash
// (ledger-host), a path element (cmd/ledger), a code span (`ledger`), a title
// (# ledger), after "package";
// in Go also as the root package's name and qualifier, and as the value of a
// named constant (moduleName = "ledger"). The test helper's package, the name
// followed by "test", is renamed along with it.
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
		case names && r.atHelper(s, i):
			b.WriteString(r.newName + helperSuffix)
			i += len(r.oldName + helperSuffix)
		case names && r.atName(s, i) && asName(s, i, i+len(r.oldName)):
			b.WriteString(r.newName)
			i += len(r.oldName)
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

// helperSuffix names the test helper's package after the library: mylibtest.
const helperSuffix = "test"

// atHelper reports whether the test helper's package name starts at s[i] as
// a word of its own.
func (r renamer) atHelper(s string, i int) bool {
	return wordAt(s, i, r.oldName+helperSuffix)
}

// asName reports whether the word s[i:end] stands for the library, judging
// by what surrounds it; elsewhere it is a word that merely spells the name.
func asName(s string, i, end int) bool {
	before := s[strings.LastIndexByte(s[:i], '\n')+1 : i]
	after := s[end:]
	next := byte(0)
	if after != "" {
		next = after[0]
	}
	switch {
	case next == '.' && len(after) > 1 && 'A' <= after[1] && after[1] <= 'Z': // a qualifier: ledger.New
		return true
	case strings.HasPrefix(after, "_goose_") || strings.HasPrefix(after, "_demo_"): // a table or the demo's schemas, named after it
		return true
	case next == ':' || next == '-': // an error prefix, a name derived from it
		return true
	case strings.HasSuffix(before, "/"): // a path element, but not a file's name
		return next != '.' && next != '_'
	case strings.HasSuffix(before, "`"): // a code span of its own, or a command
		return next == '`' || next == ' '
	case before == "# ": // a title
		return true
	}
	for _, w := range []string{"package ", "Package ", "Command "} {
		if strings.HasSuffix(before, w) {
			return true
		}
	}
	return false
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
func (r renamer) atName(s string, i int) bool { return wordAt(s, i, r.oldName) }

// wordAt reports whether word starts at s[i], touching no other letter or
// digit.
func wordAt(s string, i int, word string) bool {
	if !strings.HasPrefix(s[i:], word) {
		return false
	}
	end := i + len(word)
	return (i == 0 || !isAlnum(s[i-1])) && (end == len(s) || !isAlnum(s[end]))
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c >= utf8.RuneSelf
}

func isWordByte(c byte) bool { return isAlnum(c) || c == '_' }

// path renames the elements of a slash-separated file path that are named
// after the library: cmd/ledger/main.go becomes cmd/billing/main.go, but a
// file named ledger.go keeps its name.
func (r renamer) path(p string) string {
	return strings.TrimPrefix(r.text("/"+p), "/")
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
	imported := importAt >= 0 && oldAlias == ""
	var out bytes.Buffer
	last := 0
	var before, before2 token.Token // the two tokens before this one, comments aside
	for {
		pos, tok, lit := sc.Scan()
		if tok == token.EOF {
			break
		}
		if tok == token.IDENT || tok == token.STRING || tok == token.CHAR || tok == token.COMMENT {
			start := file.Offset(pos)
			end := tokenEnd(src, start, lit)
			var text string
			switch {
			case tok == token.IDENT:
				text = r.ident(lit, before, imported && end < len(src) && src[end] == '.')
				if to, ok := idents[lit]; ok && before != token.PACKAGE {
					text = to
				}
			case tok == token.STRING && before == token.ASSIGN && before2 == token.IDENT && r.isNameValue(lit):
				// A named value that is the library's name: moduleName = "ledger".
				text = strings.Replace(string(src[start:end]), r.oldName, r.newName, 1)
			default:
				text = r.text(string(src[start:end]))
			}
			if start == importAt && alias != "" {
				text = alias + " " + text
			}
			out.Write(src[last:start])
			out.WriteString(text)
			last = end
		}
		if tok != token.COMMENT {
			before, before2 = tok, before
		}
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

// ident rewrites an identifier of a Go file, given the token before it and
// whether it qualifies a name of the library's package (the file imports the
// library under its own name and a dot follows): the package's own name, in
// its package clause and as a qualifier, and the test helper's package.
func (r renamer) ident(lit string, before token.Token, qualifier bool) string {
	switch {
	case before == token.PERIOD: // a field or method, whatever its name
		return lit
	case lit == r.oldName && (before == token.PACKAGE || qualifier):
		return r.newName
	case lit == r.oldName+"_test" && before == token.PACKAGE:
		return r.newName + "_test"
	}
	return r.text(lit)
}

// isNameValue reports whether a Go string literal is the library's name, and
// nothing else.
func (r renamer) isNameValue(lit string) bool {
	v, err := strconv.Unquote(lit)
	return err == nil && v == r.oldName
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
