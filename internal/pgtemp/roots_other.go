//go:build !linux

package pgtemp

// memoryBackedDir finds no memory-backed directory outside Linux: servers go in the temporary directory.
func memoryBackedDir() string { return "" }
