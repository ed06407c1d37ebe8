//go:build windows

package proc

import (
	"os"
	"syscall"
)

// Alive reports whether a process with this pid exists.
func Alive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	_ = p.Release()
	return true
}

// runAs is never needed on Windows: there is no root to step down from.
func runAs(*syscall.SysProcAttr, *User) {}

func searchable(string, *User) error { return nil }
