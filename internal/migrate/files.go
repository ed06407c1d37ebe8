package migrate

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/pgdual/mylib/internal/sqltmpl"
	"github.com/pressly/goose/v3"
)

// file is one migration file as embedded: its version, its checksum and its
// parsed text, ready to render for any schema.
type file struct {
	name     string // base name, e.g. 00001_events.sql
	version  int64
	checksum int64
	stmt     *sqltmpl.Statement
	// noTx: the file is marked NO TRANSACTION, so a failure keeps the
	// statements before it.
	noTx bool
	// hasDown: its Down section has a statement, so it can be undone.
	hasDown bool
	text    string // as written
}

// names reports whether the file names the identifier id: an index it may
// build, say. Identifiers are compared as PostgreSQL folds unquoted ones.
func (f *file) names(id string) bool {
	text := strings.ToLower(f.text)
	id = strings.ToLower(id)
	for i := strings.Index(text, id); i >= 0; {
		end := i + len(id)
		if (i == 0 || !identByte(text[i-1])) && (end == len(text) || !identByte(text[end])) {
			return true
		}
		next := strings.Index(text[i+1:], id)
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return false
}

func identByte(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c >= 0x80
}

// loadFiles reads every .sql file at the root of fsys, in version order. A file
// whose name goose cannot number, two files with one version, or a bad
// placeholder is an error that names the file.
func loadFiles(fsys fs.FS) ([]file, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("listing migration files: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no migration files (*.sql) found: a library needs at least one")
	}
	files := make([]file, 0, len(names))
	seen := make(map[int64]string, len(names))
	for _, name := range names {
		version, err := goose.NumericComponent(name)
		if err != nil {
			return nil, fmt.Errorf("migration file %s: name it NNNNN_description.sql with a positive number: %w", name, err)
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("migration files %s and %s both have version %d: renumber one", other, name, version)
		}
		seen[version] = name
		text, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("reading migration file %s: %w", name, err)
		}
		stmt, err := sqltmpl.Parse(string(text))
		if err != nil {
			return nil, fmt.Errorf("migration file %s: %w", name, err)
		}
		files = append(files, file{name: name, version: version, checksum: checksum(text), stmt: stmt,
			noTx: bytes.Contains(text, []byte("+goose NO TRANSACTION")), hasDown: hasStatement(section(string(text), "down")),
			text: string(text)})
	}
	slices.SortFunc(files, func(a, b file) int { return cmp.Compare(a.version, b.version) })
	return files, nil
}

// hasStatement reports whether SQL holds anything but comments and white
// space.
func hasStatement(sql string) bool {
	for _, line := range strings.Split(sql, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line != ";" && !strings.HasPrefix(line, "--") {
			return true
		}
	}
	return false
}

// checksum identifies a file's content: the first 64 bits of its SHA-256,
// never 0 (0 stands for "none recorded"). It guards against edits, not
// attacks, and a fixed-width column keeps the checksum table cheap to create.
// Line endings and trailing white space are not content: a file re-saved on
// Windows or by an editor that trims lines is the same migration. Nor are
// whole-line allowances ("-- mylib:allow rule: reason", read by the safety
// check of migrations), so an applied file can be given one.
func checksum(text []byte) int64 {
	lines := strings.Split(strings.ReplaceAll(string(text), "\r\n", "\n"), "\n")
	kept := lines[:0]
	for _, l := range lines {
		if !strings.HasPrefix(strings.TrimSpace(l), "-- mylib:allow") {
			kept = append(kept, strings.TrimRight(l, " \t\r"))
		}
	}
	sum := sha256.Sum256([]byte(strings.TrimRight(strings.Join(kept, "\n"), "\n")))
	return max(int64(binary.BigEndian.Uint64(sum[:8])&math.MaxInt64), 1)
}

// renderedFS serves the migration files rendered for one schema, which is what
// goose reads; directories and anything else come from the embedded files.
type renderedFS struct {
	base  fs.FS
	files map[string][]byte
}

func renderFiles(base fs.FS, files []file, schema string) (*renderedFS, error) {
	r, err := sqltmpl.NewRenderer(schema)
	if err != nil {
		return nil, err
	}
	out := &renderedFS{base: base, files: make(map[string][]byte, len(files))}
	for _, f := range files {
		out.files[f.name] = []byte(r.SQL(f.stmt))
	}
	return out, nil
}

// Open implements fs.FS.
func (r *renderedFS) Open(name string) (fs.File, error) {
	text, ok := r.files[name]
	if !ok {
		return r.base.Open(name)
	}
	return &memFile{Reader: bytes.NewReader(text), info: memInfo{name: path.Base(name), size: int64(len(text))}}, nil
}

// ReadFile implements fs.ReadFileFS.
func (r *renderedFS) ReadFile(name string) ([]byte, error) {
	if text, ok := r.files[name]; ok {
		return slices.Clone(text), nil
	}
	return fs.ReadFile(r.base, name)
}

type memFile struct {
	*bytes.Reader
	info memInfo
}

func (f *memFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *memFile) Close() error               { return nil }

var _ io.ReadSeeker = (*memFile)(nil)

type memInfo struct {
	name string
	size int64
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return 0o444 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }
