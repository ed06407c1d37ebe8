// Package releasetest builds releases of the library and runs them as
// processes, the way a deploy and a rollback run them: release N is the
// module as it is, release N+1 a copy of its tree with more migration files.
// Each build holds the library's command (cmd/<name>) and a host application
// (./host) that serves traffic until told to stop.
//
// A rollback of the binary is a process restart, and the migration files are
// embedded in the binary at build time, so these tests build real binaries:
// the go command builds them offline, with the race detector when the tests
// have it, so that they share the build cache with the test run.
package releasetest

// The library's own (newlib.manifest): the example domain's release tests,
// which a library made from the template writes for its own domain.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgdual/mylib/internal/releasetest/traffic"
)

// Release is one release of the library, built.
type Release struct {
	// Name says which release it is in messages, such as "N+1".
	Name string
	// Command is the library's command; Host the host application.
	Command, Host string
}

// buildTimeout bounds one go build: a cold build cache compiles the
// dependencies too.
const buildTimeout = 5 * time.Minute

// hostPackage is the host application's package, relative to the module root.
const hostPackage = "./internal/releasetest/host"

// Build builds the module that holds the working directory, with files
// (name to text) added to its migrations/ directory: with none, the module
// as it is; otherwise a copy of its tree.
func Build(t testing.TB, name string, files map[string]string) *Release {
	t.Helper()
	root, err := moduleRoot()
	require.NoError(t, err)
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	cmd := "./cmd/" + libraryName(modulePath(string(gomod)))
	if len(files) > 0 {
		src := filepath.Join(t.TempDir(), "src")
		require.NoError(t, copyTree(root, src))
		for file, text := range files {
			require.NoError(t, os.WriteFile(filepath.Join(src, "migrations", file), []byte(text), 0o644))
		}
		root = src
	}
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	args := []string{"build", "-o", bin + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, "go", append(args, cmd, hostPackage)...)
	build.Dir = root
	// Offline: the dependencies are those the tests were built with.
	build.Env = append(os.Environ(), "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local", "GOFLAGS=-buildvcs=false")
	began := time.Now()
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building release %s (go %s in %s):\n%s", name, strings.Join(build.Args[1:], " "), root, out)
	t.Logf("built release %s in %s", name, time.Since(began).Round(100*time.Millisecond))
	return &Release{Name: name, Command: filepath.Join(bin, path.Base(cmd)), Host: filepath.Join(bin, path.Base(hostPackage))}
}

// Result is what a run of the command printed and returned.
type Result struct {
	Code           int
	Stdout, Stderr string
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// Run runs the release's command with args, DATABASE_URL set to dsn.
func (r *Release) Run(t testing.TB, dsn string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.Command, args...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running release %s's command %v: %v", r.Name, args, err)
	}
	return Result{Code: cmd.ProcessState.ExitCode(), Stdout: stdout.String(), Stderr: stderr.String()}
}

// Host is a running host application.
type Host struct {
	release *Release
	cmd     *exec.Cmd
	stdin   io.Closer
	stdout  lines
	log     string // the file that holds its standard error
	exited  chan struct{}
}

// Start starts the release's host application on schema, DATABASE_URL set
// to dsn and args added to its command line, and returns once it serves. It
// fails the test, with what the host logged, if the host exits first.
func (r *Release) Start(t testing.TB, dsn, schema string, args ...string) *Host {
	t.Helper()
	cmd := exec.Command(r.Host, append([]string{"-schema", schema}, args...)...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	h := &Host{release: r, cmd: cmd, stdout: lines{c: make(chan string, 16)}, exited: make(chan struct{})}
	// A file, which the host writes and the test reads at any time.
	stderr, err := os.CreateTemp(t.TempDir(), "host-*.log")
	require.NoError(t, err)
	defer stderr.Close() // the host has its own copy
	h.log = stderr.Name()
	cmd.Stdout, cmd.Stderr = &h.stdout, stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	h.stdin = stdin
	require.NoError(t, cmd.Start())
	go func() {
		_ = cmd.Wait()
		close(h.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // a test that failed midway leaves no process behind
		<-h.exited
	})
	select {
	case line := <-h.stdout.c:
		require.Equal(t, "serving", line, "release %s's host:\n%s", r.Name, h.Log())
	case <-h.exited:
		t.Fatalf("release %s's host exited with %d before it served:\n%s", r.Name, cmd.ProcessState.ExitCode(), h.Log())
	case <-time.After(2 * time.Minute):
		t.Fatalf("release %s's host has not served within 2 minutes:\n%s", r.Name, h.Log())
	}
	return h
}

// Log returns what the host has written on standard error: the library's log
// lines.
func (h *Host) Log() string {
	text, err := os.ReadFile(h.log)
	if err != nil {
		return err.Error()
	}
	return string(text)
}

// Stop closes the host's standard input, as an application is told to shut
// down, and returns its report once it exits. It fails the test if the host
// exits otherwise than with 0.
func (h *Host) Stop(t testing.TB) traffic.Report {
	t.Helper()
	require.NoError(t, h.stdin.Close())
	select {
	case <-h.exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("release %s's host has not stopped within 2 minutes:\n%s", h.release.Name, h.Log())
	}
	require.Zero(t, h.cmd.ProcessState.ExitCode(), "release %s's host:\n%s", h.release.Name, h.Log())
	var report traffic.Report
	select {
	case line := <-h.stdout.c:
		require.NoError(t, json.Unmarshal([]byte(line), &report), line)
	default:
		t.Fatalf("release %s's host printed no report:\n%s", h.release.Name, h.Log())
	}
	return report
}

// lines passes on each line written to it, without its newline.
type lines struct {
	c    chan string
	part []byte
}

func (l *lines) Write(p []byte) (int, error) {
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.c <- string(l.part[:i])
		l.part = l.part[i+1:]
	}
}

// moduleRoot walks up from the working directory to the directory holding
// go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above it")
		}
		dir = parent
	}
}

// modulePath returns the path on a go.mod file's module line.
func modulePath(gomod string) string {
	for _, line := range strings.Split(gomod, "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`)
		}
	}
	return ""
}

// libraryName is the last element of a module path, a major version suffix
// skipped: what names the library and its command.
func libraryName(module string) string {
	name := path.Base(module)
	if len(name) > 1 && name[0] == 'v' && strings.Trim(name[1:], "0123456789") == "" {
		name = path.Base(path.Dir(module))
	}
	return name
}

// copyTree copies the regular files under src, but .git, to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		switch {
		case d.Name() == ".git" && d.IsDir():
			return filepath.SkipDir
		case d.Name() == ".git": // a worktree's link to its repository
			return nil
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		case !d.Type().IsRegular():
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
}
