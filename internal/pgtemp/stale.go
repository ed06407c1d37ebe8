package pgtemp

import (
	"os"
	"path/filepath"

	"github.com/pgdual/mylib/internal/proc"
)

// releaseSharedMemory removes the System V shared memory of a server directory's dead postmaster.
// PostgreSQL removes it itself on a clean shutdown (postmaster.pid goes too), or when it starts again on
// the same data directory; a killed server whose directory is removed would leave it until the next
// reboot.
func releaseSharedMemory(dir string) {
	pidFile := filepath.Join(dir, "data", "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	if pid, err := proc.ReadPID(pidFile); err != nil || proc.Alive(pid) {
		return
	}
	removeSharedMemory(b)
}
