package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// manifestFile says, path by path, which files the template owns and which a
// library made from it owns. newlib reads it to say what a new library
// replaces, and newlib update to know what it may merge.
const manifestFile = "newlib.manifest"

// The owners a manifest line names.
const (
	ownerTemplate = "template" // the machinery: kept as it is, merged by updates
	ownerLibrary  = "library"  // the library's own: replaced by a new library, never touched by updates
)

// manifest is a parsed manifest file: its rules in order, the last match
// deciding.
type manifest struct {
	file  string // where it was read, for errors
	rules []manifestRule
}

type manifestRule struct {
	owner   string
	pattern string // as written; a trailing / makes it a directory
	line    int
}

// readManifest reads the manifest at the root of a template or a copy.
func readManifest(root string) (manifest, error) {
	file := filepath.Join(root, manifestFile)
	data, err := os.ReadFile(file)
	if err != nil {
		return manifest{}, fmt.Errorf("reading %s, which says which files are the template's and which the library's: %w", file, err)
	}
	return parseManifest(file, data)
}

// parseManifest parses a manifest: lines of an owner and a path, with blank
// lines and # comments.
func parseManifest(file string, data []byte) (manifest, error) {
	m := manifest{file: file}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 || (fields[0] != ownerTemplate && fields[0] != ownerLibrary) {
			return manifest{}, fmt.Errorf("%s line %d: %q is not an owner and a path: write %q or %q, then one path", file, n, strings.TrimSpace(line), ownerTemplate, ownerLibrary)
		}
		p := fields[1]
		if _, err := path.Match(strings.TrimSuffix(p, "/"), ""); err != nil || strings.HasPrefix(p, "/") || p == "/" {
			return manifest{}, fmt.Errorf("%s line %d: %q is not a path relative to the module's root (a file, a directory ending in /, * for part of a name)", file, n, p)
		}
		m.rules = append(m.rules, manifestRule{owner: fields[0], pattern: p, line: n})
	}
	return m, sc.Err()
}

// owner returns who owns the slash-separated path p, and whether a line says
// so. A path no line names is the library's: an update leaves it alone.
func (m manifest) owner(p string) (owner string, named bool) {
	owner = ownerLibrary
	for _, r := range m.rules {
		if r.matches(p) {
			owner, named = r.owner, true
		}
	}
	return owner, named
}

// isTemplate reports whether the template owns p.
func (m manifest) isTemplate(p string) bool {
	o, _ := m.owner(p)
	return o == ownerTemplate
}

// matches reports whether the rule names p: the whole path, or for a
// directory, its first elements.
func (r manifestRule) matches(p string) bool {
	dir, isDir := strings.CutSuffix(r.pattern, "/")
	if !isDir {
		ok, _ := path.Match(r.pattern, p)
		return ok
	}
	want, elems := strings.Split(dir, "/"), strings.Split(p, "/")
	if len(elems) <= len(want) {
		return false
	}
	for i, w := range want {
		if ok, _ := path.Match(w, elems[i]); !ok {
			return false
		}
	}
	return true
}

// patterns lists the paths that the manifest gives owner, as written.
func (m manifest) patterns(owner string) []string {
	var list []string
	for _, r := range m.rules {
		if r.owner == owner {
			list = append(list, r.pattern)
		}
	}
	return list
}
