//go:build unix

package pgtemp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// processAlive reports whether a process with this pid runs (a zombie does not).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return (err == nil || errors.Is(err, syscall.EPERM)) && !zombie(pid)
}

// runAs makes the child run as u, with no supplementary groups.
func runAs(attr *syscall.SysProcAttr, u *osUser) {
	attr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid}
}

// interrupt asks the postmaster for a fast shutdown: sessions are ended, then a checkpoint.
func interrupt(p *os.Process) error { return p.Signal(os.Interrupt) }

// searchable reports whether u may enter path and every directory above it.
func searchable(path string, u *osUser) error {
	for p := path; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		var bit fs.FileMode = 0o001
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			switch {
			case st.Uid == u.uid:
				bit = 0o100
			case st.Gid == u.gid:
				bit = 0o010
			}
		}
		if fi.Mode().Perm()&bit == 0 {
			return fmt.Errorf("the OS user %s cannot enter %s", u.name, p)
		}
		if filepath.Dir(p) == p {
			return nil
		}
	}
}
