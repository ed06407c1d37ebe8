package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// file is one file of the template or of a copy: its content and mode, or
// the target of a symbolic link.
type file struct {
	data []byte
	mode fs.FileMode
	link string
}

func (f file) same(g file) bool {
	return bytes.Equal(f.data, g.data) && f.mode == g.mode && f.link == g.link
}

// tree is a directory's files by slash-separated path.
type tree map[string]file

// readTree reads every file under dir but .git.
func readTree(dir string) (tree, error) {
	t := tree{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		f, ok, err := readFile(p)
		if ok {
			t[filepath.ToSlash(rel)] = f
		}
		return err
	})
	return t, err
}

// readFile reads a regular file or a symbolic link; ok is false when there is
// none at p.
func readFile(p string) (f file, ok bool, err error) {
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return file{}, false, nil
	case err != nil:
		return file{}, false, err
	case fi.Mode()&fs.ModeSymlink != 0:
		f.link, err = os.Readlink(p)
		return f, err == nil, err
	case !fi.Mode().IsRegular():
		return file{}, false, nil
	}
	f.data, err = os.ReadFile(p)
	f.mode = fi.Mode().Perm()
	return f, err == nil, err
}

// The kinds of change an update makes, as its summary names them.
const (
	changeUpdated     = "updated"
	changeAdded       = "added"
	changeRemoved     = "removed"
	changeConflicted  = "conflicted"
	changeKeptDeleted = "kept deleted"
)

// change is what an update does to one path of the copy.
type change struct {
	kind string
	path string
	from string // the path the template renamed to path, if it did
	note string // why, for a conflict or a file kept deleted
	// write is what path becomes; nil when path is removed or left as it is.
	write *file
}

// goSum is merged by union, and then tidied: its lines are facts, not edits.
const goSum = "go.sum"

// merge holds the three trees of an update and what it makes of them.
type merge struct {
	base, theirs tree   // the template's copy at the recorded version and at the new one
	oursDir      string // the copy
	baseOwn      manifest
	theirsOwn    manifest
	labels       [3]string // ours, base, theirs, for conflict markers
}

// ownedByTemplate reports whether the template owns p, as the new version's
// manifest says, or the old one's for a path the new version no longer has.
func (m merge) ownedByTemplate(p string) bool {
	if _, ok := m.theirs[p]; ok || m.baseOwn.rules == nil {
		return m.theirsOwn.isTemplate(p)
	}
	return m.baseOwn.isTemplate(p)
}

// plan decides what the update does to every path the template owns in
// either version; the copy's own files are never looked at.
func (m merge) plan() ([]change, error) {
	owned := func(t tree) map[string]bool {
		set := map[string]bool{}
		for p := range t {
			if p != goSum && m.ownedByTemplate(p) {
				set[p] = true
			}
		}
		return set
	}
	inBase, inTheirs := owned(m.base), owned(m.theirs)
	var gone, added []string
	for p := range inBase {
		if _, ok := m.theirs[p]; !ok {
			gone = append(gone, p)
		}
	}
	for p := range inTheirs {
		if _, ok := m.base[p]; !ok {
			added = append(added, p)
		}
	}
	renamedFrom := renames(m.base, m.theirs, gone, added)
	renamed := map[string]bool{}
	for _, from := range renamedFrom {
		renamed[from] = true
	}

	var changes []change
	for _, p := range slices.Sorted(maps.Keys(inTheirs)) {
		c, err := m.planOne(p, renamedFrom[p])
		if err != nil {
			return nil, err
		}
		if c.kind != "" {
			changes = append(changes, c)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(inBase)) {
		if _, ok := m.theirs[p]; ok || renamed[p] {
			continue
		}
		ours, ok, err := readFile(filepath.Join(m.oursDir, filepath.FromSlash(p)))
		switch {
		case err != nil:
			return nil, err
		case !ok:
		case ours.same(m.base[p]):
			changes = append(changes, change{kind: changeRemoved, path: p})
		default:
			changes = append(changes, change{kind: changeConflicted, path: p,
				note: "the template removed it and this copy changed it: delete it, or keep it and name it the library's own in " + manifestFile})
		}
	}
	return changes, nil
}

// planOne decides what becomes of path p of the new version, which the
// template renamed from the path from ("" if it did not).
func (m merge) planOne(p, from string) (change, error) {
	theirs := m.theirs[p]
	b := p
	if _, ok := m.base[p]; !ok {
		b = from
	}
	c := change{path: p}
	if b != p {
		c.from = b
	}
	ours, hasOurs, err := readFile(filepath.Join(m.oursDir, filepath.FromSlash(p)))
	if err != nil {
		return c, err
	}
	if b == "" { // new in the template
		switch {
		case !hasOurs:
			c.kind, c.write = changeAdded, &theirs
		case !ours.same(theirs):
			c.kind, c.note = changeConflicted, "the template added it, and this copy has a file of its own there"
			return m.merged(c, ours, file{mode: theirs.mode}, theirs)
		}
		return c, nil
	}
	base := m.base[b]
	if b != p {
		if hasOurs {
			c.kind, c.note = changeConflicted, "the template renamed "+b+" to it, and this copy has a file of its own there"
			return c, nil
		}
		ours, hasOurs, err = readFile(filepath.Join(m.oursDir, filepath.FromSlash(b)))
		if err != nil {
			return c, err
		}
	}
	switch {
	case !hasOurs:
		if !base.same(theirs) || b != p {
			c.kind, c.note = changeKeptDeleted, "this copy deleted it"
		}
		return c, nil
	case base.same(theirs) && b == p, ours.same(theirs):
		if b != p {
			c.kind, c.write = changeUpdated, &theirs
		}
		return c, nil
	case ours.same(base):
		c.kind, c.write = changeUpdated, &theirs
		return c, nil
	}
	c.kind = changeUpdated
	return m.merged(c, ours, base, theirs)
}

// merged sets c to the three-way merge of ours and theirs from base, by git
// merge-file: the lines only one side changed take that side's change; lines
// both changed differently get conflict markers.
func (m merge) merged(c change, ours, base, theirs file) (change, error) {
	if ours.link != "" || theirs.link != "" || base.link != "" || isBinary(ours.data) || isBinary(theirs.data) || isBinary(base.data) {
		c.kind, c.write = changeConflicted, nil
		c.note = "both this copy and the template changed it, and it is not text: take the template's version from the template, or keep this one"
		return c, nil
	}
	data, conflicts, err := mergeFile(ours.data, base.data, theirs.data, m.labels)
	if err != nil {
		return c, fmt.Errorf("merging %s: %w", c.path, err)
	}
	if conflicts > 0 {
		c.kind = changeConflicted
		if c.note == "" {
			c.note = fmt.Sprintf("this copy and the template changed the same lines (%d places): resolve the conflict markers", conflicts)
		}
	}
	mode := theirs.mode
	if ours.mode != base.mode { // the copy's own change of mode stands
		mode = ours.mode
	}
	c.write = &file{data: data, mode: mode}
	return c, nil
}

func isBinary(data []byte) bool { return bytes.IndexByte(data, 0) >= 0 }

// mergeFile runs git merge-file on three versions of a file and returns the
// result, with markers where both sides changed the same lines (the diff3
// style, which shows the base too), and how many such places there are.
func mergeFile(ours, base, theirs []byte, labels [3]string) ([]byte, int, error) {
	dir, err := os.MkdirTemp("", "newlib-merge-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	names := [3]string{filepath.Join(dir, "ours"), filepath.Join(dir, "base"), filepath.Join(dir, "theirs")}
	for i, data := range [][]byte{ours, base, theirs} {
		if err := os.WriteFile(names[i], data, 0o644); err != nil {
			return nil, 0, err
		}
	}
	cmd := exec.Command("git", "merge-file", "-p", "--diff3",
		"-L", labels[0], "-L", labels[1], "-L", labels[2], names[0], names[1], names[2])
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out, 0, nil
	case errors.As(err, &exit) && exit.ExitCode() > 0 && exit.ExitCode() < 128:
		return out, exit.ExitCode(), nil
	}
	return nil, 0, fmt.Errorf("git merge-file: %w: %s", err, strings.TrimSpace(stderr.String()))
}

// renames pairs the files the template removed (gone) with the files it
// added (added) whose content is mostly theirs: a rename, or the larger part
// of a split. It returns the old path of each renamed file, by new path.
func renames(base, theirs tree, gone, added []string) map[string]string {
	type pair struct {
		from, to string
		score    float64
	}
	var pairs []pair
	for _, g := range gone {
		for _, a := range added {
			if s := similarity(base[g].data, theirs[a].data); s >= 0.5 {
				pairs = append(pairs, pair{g, a, s})
			}
		}
	}
	// Best matches first, then by path so that the result does not depend on map order.
	slices.SortFunc(pairs, func(x, y pair) int {
		switch {
		case x.score != y.score:
			if x.score > y.score {
				return -1
			}
			return 1
		case x.from != y.from:
			return strings.Compare(x.from, y.from)
		}
		return strings.Compare(x.to, y.to)
	})
	from := map[string]string{}
	taken := map[string]bool{}
	for _, p := range pairs {
		if _, done := from[p.to]; !done && !taken[p.from] {
			from[p.to], taken[p.from] = p.from, true
		}
	}
	return from
}

// similarity is the share of two texts' bytes that lie in lines both have,
// as many times as both have them, of the larger text's, as git measures a
// rename. Lines of a few characters (blank, a brace) say nothing of where a
// file came from and are left out.
func similarity(a, b []byte) float64 {
	count := map[string]int{}
	size := func(text []byte, each func(string)) int {
		n := 0
		for _, l := range strings.Split(string(text), "\n") {
			if l = strings.TrimSpace(l); len(l) > 3 {
				n += len(l)
				each(l)
			}
		}
		return n
	}
	sizeA := size(a, func(l string) { count[l]++ })
	common := 0
	sizeB := size(b, func(l string) {
		if count[l] > 0 {
			count[l]--
			common += len(l)
		}
	})
	if common == 0 {
		return 0
	}
	return float64(common) / float64(max(sizeA, sizeB))
}

// apply makes the planned changes in the copy's work tree.
func apply(root string, changes []change) error {
	for _, c := range changes {
		if c.write != nil {
			if err := writeFileTo(root, c.path, *c.write); err != nil {
				return err
			}
		}
		gone := c.kind == changeRemoved || (c.from != "" && c.write != nil)
		p := c.path
		if c.from != "" {
			p = c.from
		}
		if gone {
			if err := removeFile(root, p); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeFileTo(root, p string, f file) error {
	name := filepath.Join(root, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	if f.link != "" {
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return os.Symlink(f.link, name)
	}
	if err := os.WriteFile(name, f.data, f.mode); err != nil {
		return err
	}
	return os.Chmod(name, f.mode) // WriteFile keeps an existing file's mode
}

// removeFile removes p and the directories it leaves empty.
func removeFile(root, p string) error {
	if err := os.Remove(filepath.Join(root, filepath.FromSlash(p))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
		if os.Remove(filepath.Join(root, filepath.FromSlash(dir))) != nil {
			break // not empty
		}
	}
	return nil
}

// unionLines returns the lines of a, then those of b that a lacks.
func unionLines(a, b []byte) []byte {
	seen := map[string]bool{}
	var out []string
	for _, data := range [][]byte{a, b} {
		for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
			if l != "" && !seen[l] {
				seen[l] = true
				out = append(out, l)
			}
		}
	}
	return []byte(strings.Join(out, "\n") + "\n")
}

// hasMarkers reports whether text holds a conflict marker line that git
// merge-file writes.
func hasMarkers(data []byte) bool {
	for _, l := range strings.Split(string(data), "\n") {
		for _, m := range []string{"<<<<<<< ", "||||||| ", ">>>>>>> "} {
			if strings.HasPrefix(l, m) {
				return true
			}
		}
		if l == "=======" {
			return true
		}
	}
	return false
}
