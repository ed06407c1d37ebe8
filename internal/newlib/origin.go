package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// originFile is where a copy records the template it was made from, so that
// newlib update can make that template again and replay what changed since.
const originFile = ".newlib.json"

// version is newlib's own version: it changes when newlib changes what it
// writes for the same template and names, or what it records here.
const version = "1"

// origin is the content of originFile.
type origin struct {
	Template templateVersion `json:"template"`
	// Module and Name are the names the copy was made with: its module path
	// and the library's name (the path's last element).
	Module string `json:"module"`
	Name   string `json:"name"`
	// Newlib is the version of the newlib that made the copy, or that last
	// updated it.
	Newlib string `json:"newlib"`
	// Pending is an update merged into the work tree but not yet checked:
	// conflicts to resolve, or go vet or the tests to make pass. newlib update
	// -continue records it as Template once they pass.
	Pending *pendingUpdate `json:"pending,omitempty"`
}

// templateVersion names one version of the template.
type templateVersion struct {
	Module string `json:"module"`
	// Version is a module version or pseudo-version that the go command can
	// download (go mod download module@version); empty when unknown.
	Version string `json:"version"`
	// Clean is false when the files copied differed from that version: a git
	// work tree with changes not committed, or no version known.
	Clean bool `json:"clean"`
}

// pendingUpdate is an update to a version not yet recorded.
type pendingUpdate struct {
	Template   templateVersion `json:"template"`
	Newlib     string          `json:"newlib"`
	Conflicted []string        `json:"conflicted,omitempty"`
	Tidy       bool            `json:"tidy,omitempty"`
}

// readOrigin reads a copy's origin; ok is false when it records none.
func readOrigin(root string) (o origin, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(root, originFile))
	if errors.Is(err, fs.ErrNotExist) {
		return origin{}, false, nil
	}
	if err != nil {
		return origin{}, false, err
	}
	if err := json.Unmarshal(data, &o); err != nil {
		return origin{}, false, fmt.Errorf("%s is not what newlib writes: %w; restore it from git", filepath.Join(root, originFile), err)
	}
	return o, true, nil
}

// writeOrigin writes a copy's origin.
func writeOrigin(root string, o origin) error {
	data, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, originFile), append(data, '\n'), 0o644)
}

// versionOf says which version of the module at root its files are: from git
// when root is in a work tree, from the module cache when the go command
// downloaded it there.
func versionOf(root, modulePath string) templateVersion {
	tv := templateVersion{Module: modulePath}
	if v, err := gitVersion(root, "HEAD", modulePath); err == nil {
		tv.Version = v
		status, err := git(root, "status", "--porcelain", "--untracked-files=normal", "--", ".")
		tv.Clean = err == nil && len(bytes.TrimSpace(status)) == 0
		return tv
	}
	if v, ok := moduleCacheVersion(root); ok {
		tv.Version, tv.Clean = v, true
	}
	return tv
}

// moduleCacheVersion returns the version of a module the go command
// downloaded into root: its directory in the module cache is path@version.
func moduleCacheVersion(root string) (string, bool) {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	cache := strings.TrimSpace(string(out))
	if err != nil || cache == "" || !inside(root, cache) {
		return "", false
	}
	_, v, ok := strings.Cut(filepath.Base(root), "@")
	return v, ok && v != ""
}

// git runs git in dir and returns its standard output; the error holds its
// standard error.
func git(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// gitVersion returns the module version of revision rev of the module in dir,
// as the go command names it: a release tag on the commit itself, else a
// pseudo-version based on the highest release tag among its ancestors.
func gitVersion(dir, rev, modulePath string) (string, error) {
	out, err := git(dir, "show", "-s", "--format=%H %ct", rev+"^{commit}")
	if err != nil {
		return "", err
	}
	fields := strings.Fields(string(out))
	if len(fields) != 2 {
		return "", fmt.Errorf("git show %s in %s: unexpected output %q", rev, dir, out)
	}
	hash := fields[0]
	secs, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return "", err
	}
	// A module in a subdirectory of its repository tags its versions sub/dir/v1.2.3.
	prefix, err := git(dir, "rev-parse", "--show-prefix")
	if err != nil {
		return "", err
	}
	major := majorOf(modulePath)
	tags := func(args ...string) []string {
		out, _ := git(dir, append([]string{"tag", "--list", string(bytes.TrimSpace(prefix)) + "v*"}, args...)...)
		var vs []string
		for _, t := range strings.Fields(string(out)) {
			v := strings.TrimPrefix(t, string(bytes.TrimSpace(prefix)))
			if semverRe.MatchString(v) && versionMajor(v) == major {
				vs = append(vs, v)
			}
		}
		slices.SortFunc(vs, compareSemver)
		return vs
	}
	if exact := tags("--points-at", hash); len(exact) > 0 {
		return exact[len(exact)-1], nil
	}
	var base string
	if ancestors := tags("--merged", hash); len(ancestors) > 0 {
		base = ancestors[len(ancestors)-1]
	}
	return pseudoVersion(major, base, time.Unix(secs, 0), hash), nil
}

// semverRe matches the versions the go command accepts as tags: vX.Y.Z with
// an optional pre-release, no build metadata.
var semverRe = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

// majorOf returns the major version a module path allows: v0 or v1 without
// a /vN suffix, else vN.
func majorOf(modulePath string) string {
	elems := strings.Split(modulePath, "/")
	if last := elems[len(elems)-1]; len(elems) > 1 && majorSuffix.MatchString(last) {
		return last
	}
	return ""
}

// versionMajor returns "" for v0 and v1 versions, else vN, to compare with majorOf.
func versionMajor(v string) string {
	m := semverRe.FindStringSubmatch(v)
	if m == nil || m[1] == "0" || m[1] == "1" {
		return ""
	}
	return "v" + m[1]
}

// pseudoVersion builds the go command's pseudo-version of a commit, given
// the highest release tag among its ancestors (base, possibly "").
func pseudoVersion(major, base string, t time.Time, hash string) string {
	stamp := t.UTC().Format("20060102150405") + "-" + hash[:12]
	m := semverRe.FindStringSubmatch(base)
	switch {
	case m == nil && major == "":
		return "v0.0.0-" + stamp
	case m == nil:
		return major + ".0.0-" + stamp
	case m[4] != "": // a pre-release: v1.2.3-pre.0.stamp
		return base + ".0." + stamp
	}
	patch, _ := strconv.Atoi(m[3])
	return fmt.Sprintf("v%s.%s.%d-0.%s", m[1], m[2], patch+1, stamp)
}

// revisionOf returns the git revision a version names: the commit of a
// pseudo-version, else the tag itself.
func revisionOf(v string) string {
	if i := strings.LastIndexByte(v, '-'); i > 0 && pseudoHash.MatchString(v[i+1:]) && strings.Count(v, "-") >= 2 {
		return v[i+1:]
	}
	return v
}

var pseudoHash = regexp.MustCompile(`^[0-9a-f]{12}$`)

// compareSemver orders versions that semverRe matches, as semantic
// versioning does.
func compareSemver(a, b string) int {
	ma, mb := semverRe.FindStringSubmatch(a), semverRe.FindStringSubmatch(b)
	for i := 1; i <= 3; i++ {
		x, _ := strconv.Atoi(ma[i])
		y, _ := strconv.Atoi(mb[i])
		if x != y {
			return x - y
		}
	}
	switch pa, pb := strings.TrimPrefix(ma[4], "-"), strings.TrimPrefix(mb[4], "-"); {
	case pa == pb:
		return 0
	case pa == "":
		return 1 // a release follows its pre-releases
	case pb == "":
		return -1
	default:
		return comparePrerelease(strings.Split(pa, "."), strings.Split(pb, "."))
	}
}

// comparePrerelease orders dot-separated pre-release identifiers: numbers
// numerically and below words, words in ASCII order, a shorter list first.
func comparePrerelease(a, b []string) int {
	for i := range min(len(a), len(b)) {
		x, errX := strconv.Atoi(a[i])
		y, errY := strconv.Atoi(b[i])
		switch {
		case errX == nil && errY == nil && x != y:
			return x - y
		case errX == nil && errY != nil:
			return -1
		case errX != nil && errY == nil:
			return 1
		case a[i] != b[i]:
			return strings.Compare(a[i], b[i])
		}
	}
	return len(a) - len(b)
}
