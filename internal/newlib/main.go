// Command newlib makes a new library from this one:
//
//	go run ./internal/newlib example.com/acme/billing ../billing
//
// It copies the files git does not ignore (every file but .git and what the
// root .gitignore names, outside a git work tree) into a new or empty
// directory, and renames the module path and the library's name wherever they
// stand for the library: the module line and import paths, the root package
// and its qualifiers, its test helper package (<name>test), the moduleName
// constant and DefaultSchema (and so the default schema, the version table
// and the migration lock), cmd/<name>, the README and the CI files. A word
// that merely spells the old name is left alone. The license is copied as it
// is, and the new library starts a changelog of its own. The name is the
// module path's last element, so it must be a lowercase Go identifier that is
// also a schema name. It then runs go vet ./... in the copy and prints what is
// left to do.
//
// The copy records the template's module path and version in .newlib.json,
// and newlib.manifest says which of its files are the template's machinery
// and which its own. Run in the copy, newlib update merges the template's
// later changes into the machinery (see update.go):
//
//	go run ./internal/newlib update
//
// The copy keeps this command, and reads its own module path from go.mod, so
// it can be copied in turn.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

const usage = `usage: go run ./internal/newlib <new-module-path> <dir>
       go run ./internal/newlib update [flags]   (in a library made by newlib)

Copies this library into <dir>, a new or empty directory, as the module
<new-module-path>, whose last element names the new library (package name,
default schema, version table). Example:

	go run ./internal/newlib github.com/acme/billing ../billing

The copy records the template and its version in ` + originFile + `, and
` + manifestFile + ` says which of its files are the template's machinery and
which its own. newlib update, run in the copy, merges the template's later
changes into the machinery: go run ./internal/newlib update -h.
`

// errUsage is returned for wrong arguments, after the usage text is printed.
var errUsage = errors.New("wrong arguments")

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "newlib:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("newlib", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() { fmt.Fprint(stderr, usage) }
	if len(args) > 0 && args[0] == "update" {
		return runUpdate(args[1:], stdout, stderr)
	}
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() != 2 {
		flags.Usage()
		return errUsage
	}
	root, err := templateRoot()
	if err != nil {
		return err
	}
	c, err := generate(root, flags.Arg(0), flags.Arg(1))
	if err != nil {
		return err
	}
	if len(c.untracked) > 0 {
		fmt.Fprintf(stderr, "newlib: copied, though git does not track them yet: %s\n", strings.Join(c.untracked, ", "))
	}
	switch tv := c.origin.Template; {
	case tv.Version == "":
		fmt.Fprintf(stderr, "newlib: the template is neither in git nor in the module cache, so %s records no version of it: newlib update will need -origin with the template's commit\n", originFile)
	case !tv.Clean:
		fmt.Fprintf(stderr, "newlib: the template's work tree has changes that are not committed: %s records %s, which lacks them, and newlib update will take them for the copy's own\n", originFile, tv.Version)
	}
	if os.Getenv(vetEnv) == "off" {
		return nil // newlib update, making a copy only to compare it
	}
	if err := vet(c.dir, stderr); err != nil {
		return err
	}
	printNextSteps(stdout, c)
	return nil
}

// vet runs go vet ./... in the new library, which type-checks every package
// and test: a name that collides with something in the template shows here
// rather than in the user's first build.
func vet(dir string, stderr io.Writer) error {
	if _, err := exec.LookPath("go"); err != nil {
		fmt.Fprintf(stderr, "newlib: go is not on PATH, so the copy was not checked; run go vet ./... in %s\n", dir)
		return nil
	}
	cmd := exec.Command("go", "vet", "./...")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("the copy in %s does not pass go vet ./...: %w\n%s\nfix the template, or choose another name, remove %s and run newlib again", dir, err, out, dir)
	}
	return nil
}
