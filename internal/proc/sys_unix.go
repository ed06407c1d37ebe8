//go:build unix

package proc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Alive reports whether a process with this pid runs (a zombie does not).
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return (err == nil || errors.Is(err, syscall.EPERM)) && !zombie(pid)
}

// runAs makes the child run as u, with no supplementary groups.
func runAs(attr *syscall.SysProcAttr, u *User) {
	attr.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID}
}

// searchable reports whether u may enter path and every directory above it.
func searchable(path string, u *User) error {
	for p := path; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		var bit fs.FileMode = 0o001
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			switch {
			case st.Uid == u.UID:
				bit = 0o100
			case st.Gid == u.GID:
				bit = 0o010
			}
		}
		if fi.Mode().Perm()&bit == 0 {
			return fmt.Errorf("the OS user %s cannot enter %s", u.Name, p)
		}
		if filepath.Dir(p) == p {
			return nil
		}
	}
}
