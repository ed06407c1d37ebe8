package proc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Kind describes the directories of one kind of process: how they are named, what must fit in them,
// and what a dead process leaves outside its directory.
type Kind struct {
	// Prefix starts the name of every directory of this kind ("pgtemp-"); Sweep removes only these.
	Prefix string
	// Socket is the path, inside a directory, of the unix socket the process listens on
	// ("sock/.s.PGSQL.5432"): a root where it would be too long for a socket is passed over.
	Socket string
	// Release, when set, frees what the process of a directory left outside it (System V shared
	// memory, say) before the directory is removed. The process has exited when it is called.
	Release func(dir string)
}

const (
	// ownerFile holds the pid of the process that made a directory, the test binary, so a later sweep
	// can tell a directory left by a killed test binary from one still in use.
	ownerFile = "owner.pid"
	// maxSocketPath is the shortest limit on a unix socket path among the systems the harness runs on
	// (macOS).
	maxSocketPath = 103
)

// NewDir removes stale directories of this kind from roots, then makes a new one in the first root
// that u can enter and where the socket's path fits, and records this process as its owner. The
// caller fills it, then hands it to u ([User.Own]).
func (k Kind) NewDir(roots []string, u *User) (string, error) {
	var unique []string
	for _, root := range roots {
		if root != "" && !slices.Contains(unique, root) {
			unique = append(unique, root)
			k.Sweep(root)
		}
	}
	root, err := k.pickRoot(unique, u)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(root, k.Prefix)
	if err != nil {
		return "", fmt.Errorf("create a directory in %s: %w (set TMPDIR to a writable directory)", root, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("write %s: %w", filepath.Join(dir, ownerFile), err)
	}
	return dir, nil
}

// pickRoot returns the first of roots that u can reach and where the socket path stays within the
// system's limit.
func (k Kind) pickRoot(roots []string, u *User) (string, error) {
	var reasons []string
	for _, root := range roots {
		resolved, err := filepath.EvalSymlinks(root)
		if err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		// os.MkdirTemp's random part is at most ten digits.
		if sock := filepath.Join(resolved, k.Prefix+"0123456789", k.Socket); len(sock) > maxSocketPath {
			reasons = append(reasons, fmt.Sprintf("%s is too long a path for a unix socket", resolved))
			continue
		}
		if u != nil {
			if err := searchable(resolved, u); err != nil {
				reasons = append(reasons, err.Error())
				continue
			}
		}
		return resolved, nil
	}
	return "", fmt.Errorf("no usable temporary directory (%s): set TMPDIR to a short directory "+
		"every user can enter, such as /tmp", strings.Join(reasons, "; "))
}

// Sweep removes the directories of this kind in root whose owner and last child have both exited:
// those of test binaries killed before they could clean up. It is best effort: a directory it cannot
// read or judge is left alone.
func (k Kind) Sweep(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, k.Prefix+"*"))
	for _, dir := range dirs {
		if stale(dir) {
			_ = k.Remove(dir)
		}
	}
}

// Remove removes a directory of this kind, after Release; its processes must have exited.
func (k Kind) Remove(dir string) error {
	if k.Release != nil {
		k.Release(dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// stale reports whether dir's owner is another process that has exited, and its last child too.
func stale(dir string) bool {
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return false
	}
	owner, err := ReadPID(filepath.Join(dir, ownerFile))
	if err != nil || owner == os.Getpid() || Alive(owner) {
		return false
	}
	child, err := ReadPID(filepath.Join(dir, pidFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true
	case err != nil:
		return false
	default:
		return !Alive(child)
	}
}

// ReadPID reads the pid on the first line of a file (owner.pid, or postgres's postmaster.pid).
func ReadPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}
