package pgtest

import "syscall"

// bouncerProcAttr makes pgbouncer die with the thread that started it, so a test binary killed with
// SIGKILL leaves no pooler behind, and run as owner when there is one.
func bouncerProcAttr(owner *bouncerOwner) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if owner != nil {
		attr.Credential = &syscall.Credential{Uid: owner.uid, Gid: owner.gid}
	}
	return attr
}
