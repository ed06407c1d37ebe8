package pgtemp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// ErrNoBinaries is returned by [Start] when no PostgreSQL server binaries (initdb and postgres) can be
// found. Test it with errors.Is: the error returned names the places that were searched.
var ErrNoBinaries = errors.New("pgtemp: no PostgreSQL server binaries (initdb and postgres) found: " +
	"install the PostgreSQL server packages (Debian/Ubuntu: apt-get install postgresql; " +
	"macOS: brew install postgresql@16) or set PGTEMP_BIN to the directory that holds initdb and postgres")

// searchPatterns are the usual install locations, tried in this order after PGTEMP_BIN and PATH. Within
// one pattern the newest version wins.
var searchPatterns = []string{
	"/usr/lib/postgresql/*/bin",                          // Debian, Ubuntu
	"/usr/pgsql-*/bin",                                   // RHEL, Fedora (PGDG packages)
	"/opt/homebrew/opt/postgresql@*/bin",                 // Homebrew, Apple silicon
	"/usr/local/opt/postgresql@*/bin",                    // Homebrew, Intel
	"/opt/homebrew/bin",                                  // Homebrew, unversioned formula
	"/Applications/Postgres.app/Contents/Versions/*/bin", // Postgres.app
}

// binaries are the two programs pgtemp runs.
type binaries struct {
	dir      string
	initdb   string
	postgres string
}

// noBinariesError explains which place lacked the binaries while still matching ErrNoBinaries.
type noBinariesError struct{ msg string }

func (e *noBinariesError) Error() string        { return e.msg }
func (e *noBinariesError) Is(target error) bool { return target == ErrNoBinaries }

// findBinaries looks in PGTEMP_BIN, then beside the initdb on PATH, then in the usual install locations.
func findBinaries() (binaries, error) {
	if dir := os.Getenv("PGTEMP_BIN"); dir != "" {
		b, err := binariesIn(dir)
		if err != nil {
			return binaries{}, &noBinariesError{msg: fmt.Sprintf(
				"pgtemp: PGTEMP_BIN=%s: %v: point PGTEMP_BIN at the directory that holds initdb and postgres "+
					"(e.g. /usr/lib/postgresql/16/bin), or unset it to search PATH and the usual locations", dir, err)}
		}
		return b, nil
	}
	if path, err := exec.LookPath(executable("initdb")); err == nil {
		// Package managers often link initdb into PATH alone; postgres sits beside the real file.
		if real, err := filepath.EvalSymlinks(path); err == nil {
			if b, err := binariesIn(filepath.Dir(real)); err == nil {
				return b, nil
			}
		}
	}
	for _, pattern := range searchPatterns {
		matches, _ := filepath.Glob(pattern)
		sortNewestFirst(matches)
		for _, dir := range matches {
			if b, err := binariesIn(dir); err == nil {
				return b, nil
			}
		}
	}
	return binaries{}, &noBinariesError{msg: fmt.Sprintf("%v (searched PATH and %s)",
		ErrNoBinaries, strings.Join(searchPatterns, ", "))}
}

// binariesIn reports whether dir holds both initdb and postgres.
func binariesIn(dir string) (binaries, error) {
	b := binaries{
		dir:      dir,
		initdb:   filepath.Join(dir, executable("initdb")),
		postgres: filepath.Join(dir, executable("postgres")),
	}
	for _, path := range []string{b.initdb, b.postgres} {
		fi, err := os.Stat(path)
		if err != nil {
			return binaries{}, fmt.Errorf("no %s in %s", filepath.Base(path), dir)
		}
		if fi.IsDir() || (runtime.GOOS != "windows" && fi.Mode().Perm()&0o111 == 0) {
			return binaries{}, fmt.Errorf("%s is not an executable file", path)
		}
	}
	return b, nil
}

func executable(name string) string {
	if runtime.GOOS == "windows" {
		return name + ".exe"
	}
	return name
}

// versionInPath finds the version a directory is named after: "15" in /usr/lib/postgresql/15/bin,
// "16" in /opt/homebrew/opt/postgresql@16/bin, "9.6" in /usr/pgsql-9.6/bin.
var versionInPath = regexp.MustCompile(`[/@-](\d+(?:\.\d+)*)(?:/|$)`)

// sortNewestFirst orders directories by the version in their path, numerically (16 before 9.6);
// directories without a version go last.
func sortNewestFirst(dirs []string) {
	version := func(dir string) []int {
		m := versionInPath.FindStringSubmatch(filepath.ToSlash(dir))
		if m == nil {
			return nil
		}
		var v []int
		for _, part := range strings.Split(m[1], ".") {
			n, _ := strconv.Atoi(part)
			v = append(v, n)
		}
		return v
	}
	slices.SortStableFunc(dirs, func(a, b string) int {
		va, vb := version(a), version(b)
		if (va == nil) != (vb == nil) {
			if va == nil {
				return 1
			}
			return -1
		}
		return slices.Compare(vb, va)
	})
}

// Program returns the path of one of PostgreSQL's client programs (psql,
// pg_dump...) beside the server binaries pgtemp would start, else on PATH.
// The error matches ErrNoBinaries when there is none.
func Program(name string) (string, error) {
	if b, err := findBinaries(); err == nil {
		if path := filepath.Join(b.dir, executable(name)); isExecutable(path) {
			return path, nil
		}
	}
	if path, err := exec.LookPath(executable(name)); err == nil {
		return path, nil
	}
	return "", &noBinariesError{msg: fmt.Sprintf("pgtemp: no %s beside the server binaries or on PATH: install PostgreSQL's client programs (apt-get install postgresql-client)", name)}
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && (runtime.GOOS == "windows" || fi.Mode().Perm()&0o111 != 0)
}
