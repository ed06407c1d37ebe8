//go:build windows

package pgtemp

import (
	"os"
	"syscall"
)

func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	_ = p.Release()
	return true
}

// runAs is never needed on Windows: there is no root to step down from.
func runAs(*syscall.SysProcAttr, *osUser) {}

// interrupt stops the server at once: Windows has no signal for a fast shutdown.
func interrupt(p *os.Process) error { return p.Kill() }

func searchable(string, *osUser) error { return nil }
