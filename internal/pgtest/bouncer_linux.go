package pgtest

import (
	"errors"
	"syscall"
)

// bouncerProcAttr makes pgbouncer die with the thread that started it, so a test binary killed with
// SIGKILL leaves no pooler behind, and run as owner when there is one.
func bouncerProcAttr(owner *bouncerOwner) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if owner != nil {
		attr.Credential = &syscall.Credential{Uid: owner.uid, Gid: owner.gid}
	}
	return attr
}

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
