//go:build !linux

package pgtemp

import "syscall"

// dieWithParent has no equivalent outside Linux: a server whose test binary was killed keeps running,
// and the next Start leaves its directory alone until it exits.
func dieWithParent(*syscall.SysProcAttr) {}

func zombie(int) bool { return false }

func memoryBackedDir() string { return "" }
