// Package hostmod writes throwaway host modules for tests: a module that
// requires libraries from directories on disk (replace directives), as an
// application that imports them would, and builds offline.
//
// Offline works only if the host's module graph needs no go.mod file that
// the libraries' own builds did not download. A host that requires only the
// library would load the full graph below it (pgpassfile v1.0.0 has no go.mod
// of its own, so its requirements are not pruned) and ask for go.mod files
// that no earlier command fetched into an empty module cache. Listing the
// libraries' own requirements in the host's go.mod keeps module graph
// pruning where the libraries have it: the host then needs exactly what the
// libraries' builds downloaded.
package hostmod

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Library is a library the host requires: its module path and the directory
// that holds its go.mod.
type Library struct {
	Path string
	Dir  string
}

// Env is the environment of the go command in a host module: offline, with
// no workspace and this machine's toolchain, so that the host builds with
// exactly what the libraries' own builds brought into the module cache.
var Env = []string{"GOFLAGS=-mod=mod -buildvcs=false", "GOPROXY=off", "GOSUMDB=off", "GOWORK=off", "GOTOOLCHAIN=local"}

// Write writes go.mod and go.sum of a host module named module into dir,
// requiring libs (the first library's go directive is the host's).
func Write(dir, module string, libs ...Library) error {
	if len(libs) == 0 {
		return fmt.Errorf("a host module needs at least one library")
	}
	var goVersion string
	var requires, sums []string
	for _, l := range libs {
		gomod, err := os.ReadFile(filepath.Join(l.Dir, "go.mod"))
		if err != nil {
			return err
		}
		v, reqs := parse(string(gomod))
		if goVersion == "" {
			goVersion = v
		}
		requires = appendNew(requires, reqs...)
		gosum, err := os.ReadFile(filepath.Join(l.Dir, "go.sum"))
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		sums = appendNew(sums, strings.Split(strings.TrimSpace(string(gosum)), "\n")...)
	}
	if goVersion == "" {
		return fmt.Errorf("%s/go.mod has no go directive", libs[0].Dir)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "module %s\n\ngo %s\n\nrequire (\n", module, goVersion)
	for _, l := range libs {
		fmt.Fprintf(&b, "\t%s v0.0.0\n", l.Path)
	}
	b.WriteString(")\n\n")
	for _, l := range libs {
		// Quoted: a directory's name may hold what go.mod reads as syntax (a comma, a space).
		fmt.Fprintf(&b, "replace %s => %s\n", l.Path, strconv.Quote(l.Dir))
	}
	// The libraries' requirements, so that graph pruning holds (see the
	// package comment).
	b.WriteString("\nrequire (\n")
	for _, r := range requires {
		fmt.Fprintf(&b, "\t%s // indirect\n", r)
	}
	b.WriteString(")\n")
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "go.sum"), []byte(strings.Join(sums, "\n")+"\n"), 0o644)
}

// parse returns a go.mod file's go directive and its requirements, each as
// "path version".
func parse(gomod string) (goVersion string, requires []string) {
	inBlock := false
	for _, line := range strings.Split(gomod, "\n") {
		line, _, _ = strings.Cut(line, "//")
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0:
		case inBlock && fields[0] == ")":
			inBlock = false
		case inBlock && len(fields) == 2:
			requires = append(requires, fields[0]+" "+fields[1])
		case fields[0] == "go" && len(fields) == 2:
			goVersion = fields[1]
		case fields[0] == "require" && len(fields) == 2 && fields[1] == "(":
			inBlock = true
		case fields[0] == "require" && len(fields) == 3:
			requires = append(requires, fields[1]+" "+fields[2])
		}
	}
	return goVersion, requires
}

// appendNew appends the items of add that list does not hold yet.
func appendNew(list []string, add ...string) []string {
	for _, a := range add {
		if a != "" && !slices.Contains(list, a) {
			list = append(list, a)
		}
	}
	return list
}
