//go:build !linux || !(amd64 || arm64 || riscv64 || loong64)

package pgtemp

const removesSharedMemory = false

// removeSharedMemory is left to the system where the syscall package has no shmget.
func removeSharedMemory([]byte) {}
