package pgtemp

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	dirPrefix = "pgtemp-"
	// ownerFile holds the pid of the process that called Start, so a later Start can tell a directory
	// left by a killed test binary from one still in use.
	ownerFile = "owner.pid"
)

// removeStale removes the pgtemp directories in root whose owner process and postmaster are both gone.
// It is best effort: a directory it cannot read or judge is left alone.
func removeStale(root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, dirPrefix+"*"))
	for _, dir := range dirs {
		if isStale(dir) {
			if pid, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
				removeSharedMemory(pid)
			}
			_ = os.RemoveAll(dir)
		}
	}
}

func isStale(dir string) bool {
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return false
	}
	owner, err := readPID(filepath.Join(dir, ownerFile))
	if err != nil || owner == os.Getpid() || processAlive(owner) {
		return false
	}
	postmaster, err := readPID(filepath.Join(dir, "data", "postmaster.pid"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true
	case err != nil:
		return false
	default:
		return !processAlive(postmaster)
	}
}

// readPID reads the pid on the first line of a file (owner.pid, or postgres's postmaster.pid).
func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}
