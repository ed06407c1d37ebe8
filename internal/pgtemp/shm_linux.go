//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package pgtemp

import (
	"strconv"
	"strings"
	"syscall"
)

const removesSharedMemory = true

// removeSharedMemory removes the System V shared memory segment named in a dead postmaster's
// postmaster.pid. PostgreSQL removes it on a clean shutdown, or when it starts again on the same data
// directory; a killed server whose directory is removed would leave it until the next reboot.
func removeSharedMemory(postmasterPID []byte) {
	lines := strings.Split(string(postmasterPID), "\n")
	if len(lines) < 7 {
		return
	}
	fields := strings.Fields(lines[6]) // "key shmid"
	if len(fields) != 2 {
		return
	}
	key, err := strconv.ParseInt(fields[0], 10, 32)
	if err != nil {
		return
	}
	id, err := strconv.Atoi(fields[1])
	if err != nil {
		return
	}
	// Only while the key still names that very segment: keys and ids are reused.
	got, _, errno := syscall.Syscall(syscall.SYS_SHMGET, uintptr(key), 0, 0)
	if errno != 0 || int(got) != id {
		return
	}
	const ipcRMID = 0
	_, _, _ = syscall.Syscall(syscall.SYS_SHMCTL, uintptr(id), ipcRMID, 0)
}
