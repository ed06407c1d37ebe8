package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

const updateUsage = `usage: go run ./internal/newlib update [-template DIR] [-to VERSION] [-origin [MODULE@]REVISION] [LIBRARY]
       go run ./internal/newlib update -continue [LIBRARY]

Updates LIBRARY, a library made by newlib with its work tree committed (default:
the module holding the working directory). Makes the
template's copy again at the version this library records (` + originFile + `) and
at a new one, with this library's names, and merges what changed between the
two into the files ` + manifestFile + ` gives the template; the library's own files
are left as they are. Then tidies go.mod if the template's changed, runs go vet
./... and the machinery's tests, and records the new version once they pass.

  -template DIR   the template on disk, a git repository (default: download it
                  with the go command, from GOPROXY)
  -to VERSION     the version to update to: a module version, or with -template
                  a git revision (default: the latest version; with -template,
                  its work tree as it is)
  -origin REV     for a library made before newlib recorded origins: the
                  template's commit or version it was made from, as MODULE@REV
                  if the module path is not in its README or CHANGELOG. Such a
                  library has no update of its own: run the template's, from a
                  clone of it: go run ./internal/newlib update -template .
                  -origin REV ../yourlib
  -continue       after resolving conflicts or fixing go vet or the tests:
                  check again and record the version
`

// errConflicts ends an update that left conflict markers: not a failure of
// newlib, but the update is not done.
var errConflicts = errors.New("the update left conflicts")

// updater updates the copy at root.
type updater struct {
	root           string
	stdout, stderr io.Writer
	env            []string // added to the go commands' environment
	// tests lists the packages whose tests must pass before a version is
	// recorded; nil: every package with a test file the manifest gives the
	// template.
	tests []string
	// regenerate makes a version's copy with these names; tests share them.
	regenerate func(snap snapshot, module, into string) (string, error)
}

type updateFlags struct {
	template, to, origin string
	cont                 bool
}

func runUpdate(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("newlib update", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() { fmt.Fprint(stderr, updateUsage) }
	var f updateFlags
	flags.StringVar(&f.template, "template", "", "")
	flags.StringVar(&f.to, "to", "", "")
	flags.StringVar(&f.origin, "origin", "", "")
	flags.BoolVar(&f.cont, "continue", false, "")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 1 || (f.cont && (f.template != "" || f.to != "" || f.origin != "")) {
		flags.Usage()
		return errUsage
	}
	root, err := libraryRoot(flags.Arg(0))
	if err != nil {
		return err
	}
	u := &updater{root: root, stdout: stdout, stderr: stderr}
	return u.run(f)
}

// libraryRoot returns the module root of the library to update: dir, or the
// module holding the working directory.
func libraryRoot(dir string) (string, error) {
	if dir == "" {
		var err error
		if dir, err = os.Getwd(); err != nil {
			return "", err
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if root, ok := moduleRoot(dir); ok {
		return root, nil
	}
	return "", fmt.Errorf("no go.mod in %s or above: run newlib update inside the library made from the template, or name its directory", dir)
}

func (u *updater) run(f updateFlags) error {
	o, recorded, err := readOrigin(u.root)
	if err != nil {
		return err
	}
	switch {
	case f.cont:
		if o.Pending == nil {
			return fmt.Errorf("no update is in progress in %s: run newlib update to start one", u.root)
		}
		return u.finish(o)
	case o.Pending != nil:
		return fmt.Errorf("an update to %s@%s is in progress: resolve what it left and run newlib update -continue, or undo it with git restore and git clean", o.Pending.Template.Module, o.Pending.Template.Version)
	case recorded && f.origin != "":
		return fmt.Errorf("-origin is for a library that does not record its template, and %s records %s@%s: leave -origin out", originFile, o.Template.Module, o.Template.Version)
	}
	if err := checkClean(u.root); err != nil {
		return err
	}

	var originRev string
	if !recorded {
		if o, originRev, err = u.legacyOrigin(f); err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp("", "newlib-update-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	var src source = proxySource{module: o.Template.Module, tmp: tmp, env: u.env}
	if f.template != "" {
		dir, err := filepath.Abs(f.template)
		if err != nil {
			return err
		}
		src = dirSource{dir: dir, module: o.Template.Module, tmp: tmp}
	}
	if originRev == "" {
		if o.Template.Version == "" {
			return fmt.Errorf("%s records no version of the template (it was made from files outside git): name the template's commit it was made from with -origin, once", originFile)
		}
		originRev = o.Template.Version
		if f.template != "" {
			originRev = revisionOf(originRev)
		}
	}
	old, err := src.at(originRev)
	if err != nil {
		return err
	}
	if !recorded {
		o.Template.Version = old.version.Version
	}
	if !o.Template.Clean {
		fmt.Fprintf(u.stderr, "newlib: this library was made from a work tree of the template with changes not committed; the update starts from %s as committed, so those changes look like this library's own\n", o.Template.Version)
	}
	next, err := src.at(f.to)
	if err != nil {
		return err
	}
	if next.version.Version == o.Template.Version && next.version.Clean && o.Template.Clean {
		fmt.Fprintf(u.stdout, "Up to date with %s@%s.\n", next.version.Module, next.version.Version)
		if !recorded {
			return u.record(o)
		}
		return nil
	}
	return u.update(o, old, next, tmp)
}

// legacyOrigin builds the origin of a library made before newlib recorded
// one, from -origin and the library's own go.mod and notes.
func (u *updater) legacyOrigin(f updateFlags) (origin, string, error) {
	if f.origin == "" {
		return origin{}, "", fmt.Errorf("%s has no %s saying which template and version it was made from: name the template's commit it was made from once, with -origin (a commit of the template, or MODULE@COMMIT), and newlib update records it", u.root, originFile)
	}
	own, err := readModulePath(u.root)
	if err != nil {
		return origin{}, "", err
	}
	module, rev, ok := strings.Cut(f.origin, "@")
	if !ok {
		module, rev = "", f.origin
		if f.template != "" {
			module, err = readModulePath(f.template)
		} else {
			module, err = noteTemplate(u.root)
		}
		if err != nil {
			return origin{}, "", err
		}
	}
	o := origin{Template: templateVersion{Module: module, Clean: true}, Module: own, Name: libraryName(own)}
	return o, rev, nil
}

// noteTemplate reads the template's module path from the sentence newlib
// wrote in the library's README and CHANGELOG.
func noteTemplate(root string) (string, error) {
	for _, name := range []string{changelogFile, "README.md"} {
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			continue
		}
		if m := templateNote.FindSubmatch(data); m != nil {
			return string(m[1]), nil
		}
	}
	return "", fmt.Errorf("neither README.md nor %s of %s says which template it was made from: pass -origin MODULE@COMMIT", changelogFile, root)
}

var templateNote = regexp.MustCompile("(?i)made from the template `([^`]+)`")

// checkClean refuses a copy whose work tree differs from its last commit:
// then git diff shows exactly what the update changed, and git restore undoes it.
func checkClean(root string) error {
	out, err := git(root, "status", "--porcelain", "--untracked-files=normal", "--", ".")
	if err != nil {
		return fmt.Errorf("newlib update works on a library in git, so that you can review and undo what it changes (git init, git add -A, git commit): %w", err)
	}
	var paths []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if len(l) > 3 {
			paths = append(paths, l[3:])
		}
	}
	if len(paths) > 0 {
		if len(paths) > 5 {
			paths = append(paths[:5], "...")
		}
		return fmt.Errorf("%s has changes that are not committed (%s): commit or stash them first, so that git diff shows what the update changes and git restore undoes it", root, strings.Join(paths, ", "))
	}
	return nil
}

// update makes the template's copy at both versions, merges, and checks.
func (u *updater) update(o origin, old, next snapshot, tmp string) error {
	regenerate := u.regenerate
	if regenerate == nil {
		regenerate = func(snap snapshot, module, into string) (string, error) {
			return regenerateCopy(snap, module, into, u.env)
		}
	}
	dirs := [2]string{}
	for i, snap := range []snapshot{old, next} {
		into, err := os.MkdirTemp(tmp, "copy-")
		if err != nil {
			return err
		}
		if dirs[i], err = regenerate(snap, o.Module, into); err != nil {
			return err
		}
	}
	base, err := readTree(dirs[0])
	if err != nil {
		return err
	}
	theirs, err := readTree(dirs[1])
	if err != nil {
		return err
	}
	m := merge{base: base, theirs: theirs, oursDir: u.root,
		labels: [3]string{"this library", "template " + old.version.Version, "template " + next.version.Version}}
	if m.theirsOwn, err = readManifest(dirs[1]); err != nil {
		return fmt.Errorf("the template at %s: %w", next.version.Version, err)
	}
	if _, ok := base[manifestFile]; ok {
		if m.baseOwn, err = readManifest(dirs[0]); err != nil {
			return err
		}
	}
	changes, err := m.plan()
	if err != nil {
		return err
	}
	if err := apply(u.root, changes); err != nil {
		return err
	}
	tidy, err := m.mergeGoSum()
	if err != nil {
		return err
	}

	p := &pendingUpdate{Template: next.version, Newlib: version, Tidy: tidy}
	if theirsOrigin, ok, _ := readOrigin(dirs[1]); ok {
		p.Newlib = theirsOrigin.Newlib
	}
	for _, c := range changes {
		if c.kind == changeConflicted {
			p.Conflicted = append(p.Conflicted, c.path)
		}
	}
	u.summarize(o.Template, next.version, changes, m.untaken())
	o.Pending = p
	if err := writeOrigin(u.root, o); err != nil {
		return err
	}
	if len(p.Conflicted) > 0 {
		fmt.Fprintf(u.stdout, "\nResolve the conflicts in %s, then run go run ./%s update -continue: it checks the library and records %s. To give the update up: git restore . && git clean -fd\n",
			strings.Join(p.Conflicted, ", "), selfDir, next.version.Version)
		return errConflicts
	}
	return u.finish(o)
}

// mergeGoSum gives the copy the template's new checksums beside its own when
// the template's requirements changed, and reports whether go.mod needs
// tidying: only then, since the copy's go.mod was as tidy as the copy made it.
func (m merge) mergeGoSum() (bool, error) {
	changed := !m.base["go.mod"].same(m.theirs["go.mod"]) || !m.base[goSum].same(m.theirs[goSum])
	if !changed {
		return false, nil
	}
	ours, _, err := readFile(filepath.Join(m.oursDir, goSum))
	if err != nil {
		return false, err
	}
	union := file{data: unionLines(ours.data, m.theirs[goSum].data), mode: 0o644}
	return true, writeFileTo(m.oursDir, goSum, union)
}

// untaken lists the files the template changed between the two versions
// that it does not own: the example domain and the texts, which the update
// leaves to the library.
func (m merge) untaken() []string {
	var list []string
	for _, p := range slices.Sorted(maps.Keys(m.theirs)) {
		if !m.ownedByTemplate(p) && p != originFile && !m.base[p].same(m.theirs[p]) {
			list = append(list, p)
		}
	}
	for p := range m.base {
		if _, ok := m.theirs[p]; !ok && !m.ownedByTemplate(p) {
			list = append(list, p)
		}
	}
	slices.Sort(list)
	return list
}

// summarize prints what the update did, a line per file.
func (u *updater) summarize(from, to templateVersion, changes []change, untaken []string) {
	fmt.Fprintf(u.stdout, "Updating from %s@%s to %s:\n", from.Module, from.Version, to.Version)
	counts := map[string]int{}
	for _, c := range changes {
		counts[c.kind]++
		kind, p := c.kind, c.path
		if c.from != "" {
			p = c.from + " -> " + c.path
			if kind == changeUpdated {
				kind = "renamed"
			}
		}
		if c.note != "" {
			p += ": " + c.note
		}
		fmt.Fprintf(u.stdout, "  %-12s %s\n", kind, p)
	}
	fmt.Fprintf(u.stdout, "%d updated, %d added, %d removed, %d conflicted", counts[changeUpdated], counts[changeAdded], counts[changeRemoved], counts[changeConflicted])
	if n := counts[changeKeptDeleted]; n > 0 {
		fmt.Fprintf(u.stdout, ", %d kept deleted", n)
	}
	fmt.Fprintln(u.stdout, ".")
	if len(untaken) > 0 {
		fmt.Fprintf(u.stdout, "Left as they are, as the library's own (%s): the template changed %s.\n", manifestFile, strings.Join(untaken, ", "))
	}
}

// finish checks the merged library and records the pending version once
// the checks pass.
func (u *updater) finish(o origin) error {
	p := o.Pending
	for _, c := range p.Conflicted {
		data, err := os.ReadFile(filepath.Join(u.root, filepath.FromSlash(c)))
		if err == nil && hasMarkers(data) {
			return fmt.Errorf("%s still has conflict markers (lines starting <<<<<<<, |||||||, =======, >>>>>>>): resolve them, then run newlib update -continue", c)
		}
	}
	if p.Tidy {
		if err := u.check("go", "mod", "tidy"); err != nil {
			return err
		}
	}
	if err := u.check("go", "vet", "./..."); err != nil {
		return err
	}
	tests := u.tests
	if tests == nil {
		var err error
		if tests, err = machineryPackages(u.root); err != nil {
			return err
		}
	}
	if len(tests) > 0 {
		if err := u.check("go", append([]string{"test", "-short"}, tests...)...); err != nil {
			return err
		}
	}
	return u.record(o)
}

// check runs a go command in the copy and says which failed and what to do.
func (u *updater) check(name string, args ...string) error {
	line := name + " " + strings.Join(args, " ")
	out, err := goCmd(u.root, u.env, args...)
	if err != nil {
		return fmt.Errorf("%s fails in the updated library:\n%s\nfix it, then run go run ./%s update -continue: the version is recorded only once go vet and the machinery's tests pass", line, bytes.TrimSpace(out), selfDir)
	}
	fmt.Fprintf(u.stdout, "%s: ok\n", line)
	return nil
}

// record writes the pending version, or the origin as it is, as the
// library's origin.
func (u *updater) record(o origin) error {
	if p := o.Pending; p != nil {
		o.Template, o.Newlib, o.Pending = p.Template, p.Newlib, nil
	}
	if o.Newlib == "" {
		o.Newlib = version
	}
	if err := writeOrigin(u.root, o); err != nil {
		return err
	}
	fmt.Fprintf(u.stdout, "Recorded %s@%s in %s. Review the update with git diff, and commit it.\n", o.Template.Module, o.Template.Version, originFile)
	return nil
}

// machineryPackages lists the packages of the copy that hold a test file its
// manifest gives the template, as ./dir patterns.
func machineryPackages(root string) ([]string, error) {
	own, err := readManifest(root)
	if err != nil {
		return nil, err
	}
	files, err := gitFiles(root, "--cached", "--others", "--exclude-standard")
	if err != nil {
		return nil, err
	}
	var pkgs []string
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") || !own.isTemplate(f) {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(f))); err != nil {
			continue // deleted from the work tree
		}
		pkg := "."
		if dir := path.Dir(f); dir != "." {
			pkg = "./" + dir
		}
		if !slices.Contains(pkgs, pkg) {
			pkgs = append(pkgs, pkg)
		}
	}
	return pkgs, nil
}
