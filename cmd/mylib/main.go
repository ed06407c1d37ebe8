// Command mylib operates the library from outside an application: a deploy
// step migrates a schema with its owner's role, an operator sees where a
// schema stands or the SQL it would get, a runtime role is given what the
// application needs and nothing more. Its commands:
//
//	migrate [-dsn DSN] [-schema NAME] [-to V]    bring the schema up to date, or to version V (down through
//	                                             the files' Down sections); print what was applied or undone
//	status  [-dsn DSN] [-schema NAME] [-json]    one line per migration file (applied, pending or changed)
//	                                             and per invalid index
//	sql     [-schema NAME] [-from VERSION]       print a psql script for the files above VERSION
//	grant   [-dsn DSN] [-schema NAME] -role ROLE give ROLE what the library needs at run time
//
// -dsn defaults to $DATABASE_URL, -schema to the library's default schema.
// Exit codes: 0 done, or up to date; 1 an error; 2 bad usage; 3 (status)
// migrations are pending; 4 (status) refused: an applied file changed, a
// file is numbered below the applied version, or an applied version has no
// file. status and sql change nothing in the database and take no lock.
//
// With no command it prints this usage and touches nothing. The demo that
// runs the library end to end is a program of its own (examples/demo), so
// that this command, which deploy steps install, carries no test server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes, for deploy gates.
const (
	exitOK      = 0
	exitError   = 1
	exitUsage   = 2
	exitPending = 3
	exitRefused = 4
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is a subcommand: its flags are defined by flags, and do runs it.
type command struct {
	name, usage, summary string
	flags                func(fs *flag.FlagSet) func(ctx context.Context, out, errOut io.Writer) int
}

var commands = []command{
	{"migrate", "[-dsn DSN] [-schema NAME] [-to VERSION]", "bring the schema up to date (what New does), or to VERSION, down through the files' Down sections; print what was applied or undone", migrateCmd},
	{"status", "[-dsn DSN] [-schema NAME] [-json]", "one line per migration file: version, file, applied | pending | changed, when applied", statusCmd},
	{"sql", "[-schema NAME] [-from VERSION]", "print a psql script for the files above VERSION (default 0)", sqlCmd},
	{"grant", "[-dsn DSN] [-schema NAME] -role ROLE", "give ROLE what the library needs at run time, print the statements", grantCmd},
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
		usage(errOut)
		return exitOK
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(errOut, "%s: no command\n\n", progName)
		usage(errOut)
		return exitUsage
	}
	name, args := args[0], args[1:]
	if name == "demo" {
		fmt.Fprintf(errOut, "%s: the demo is a program of its own, which never touches $DATABASE_URL: %s\n", progName, demoCommand)
		return exitUsage
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		fs := flag.NewFlagSet(progName+" "+c.name, flag.ContinueOnError)
		fs.SetOutput(errOut)
		do := c.flags(fs)
		fs.Usage = func() {
			fmt.Fprintf(errOut, "usage: %s %s %s\n\n%s.\n\n", progName, c.name, c.usage, c.summary)
			fs.PrintDefaults()
			fmt.Fprintf(errOut, "\n%s\n", exitCodes)
		}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(errOut, "%s %s: unexpected argument %q\n", progName, c.name, fs.Arg(0))
			fs.Usage()
			return exitUsage
		}
		return do(ctx, out, errOut)
	}
	fmt.Fprintf(errOut, "%s: unknown command %q\n\n", progName, name)
	usage(errOut)
	return exitUsage
}

// progName is the command's name: the library's.
const progName = "mylib"

// demoCommand runs the demo, from a clone of the repository or from anywhere.
const demoCommand = "go run ./examples/demo (in a clone), or go run github.com/pgdual/mylib/examples/demo@latest"

const exitCodes = `exit codes: 0 done or up to date; 1 error; 2 bad usage; 3 (status) migrations pending;
4 (status) refused: an applied file changed, a file out of order, or an applied version with no file`

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\n", progName)
	for _, c := range commands {
		fmt.Fprintf(w, "  %s %-8s %s\n      %s\n", progName, c.name, c.usage, c.summary)
	}
	fmt.Fprintf(w, "\n-dsn defaults to $DATABASE_URL; -schema to %q. Run %s <command> -h for a command's flags.\n%s\n",
		defaultSchema, progName, exitCodes)
	fmt.Fprintf(w, "\nThe library end to end, on a throwaway server: %s\n", demoCommand)
}
