package pgtemp

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
)

// dieWithParent makes the kernel kill the child when the thread that started it exits, so a test
// binary killed with SIGKILL does not leave a server behind.
func dieWithParent(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }

// zombie reports whether pid has exited but not been reaped yet (an orphaned postmaster waits for init).
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may hold anything.
	rest := b[bytes.LastIndexByte(b, ')')+1:]
	fields := bytes.Fields(rest)
	return len(fields) > 0 && (string(fields[0]) == "Z" || string(fields[0]) == "X")
}

const (
	tmpfsMagic = 0x01021994
	// minMemoryBacked is the room /dev/shm needs for pgtemp to use it; Docker's default of 64 MB is
	// too small for even one cluster.
	minMemoryBacked = 1 << 30
)

// memoryBackedDir returns /dev/shm when it is a tmpfs with room to spare, else "".
func memoryBackedDir() string {
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil || uint32(st.Type) != tmpfsMagic {
		return ""
	}
	if uint64(st.Bavail)*uint64(st.Bsize) < minMemoryBacked {
		return ""
	}
	return "/dev/shm"
}
