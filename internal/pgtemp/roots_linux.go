package pgtemp

import "syscall"

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
