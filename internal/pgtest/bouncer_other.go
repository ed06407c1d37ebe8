//go:build !linux

package pgtest

import "syscall"

// bouncerProcAttr has no parent-death signal outside Linux; a run as root there is refused by
// PgBouncer itself, which says so.
func bouncerProcAttr(*bouncerOwner) *syscall.SysProcAttr { return &syscall.SysProcAttr{} }

// processAlive says yes outside Linux: directories left by killed test binaries stay there.
func processAlive(int) bool { return true }
