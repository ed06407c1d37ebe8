//go:build unix

package pgtemp

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRemoveStale_RemovesOnlyDirectoriesOfDeadOwners(t *testing.T) {
	dead := deadPID(t)
	alive := os.Getppid() // the go command, or whatever ran this test: alive while the test runs

	tests := []struct {
		name        string
		owner       string // contents of owner.pid; "" for no file
		postmaster  string // contents of data/postmaster.pid; "" for no file
		wantRemoved bool
	}{
		{name: "owner dead, server never started", owner: pid(dead), wantRemoved: true},
		{name: "owner and server dead", owner: pid(dead), postmaster: pid(dead) + "\n/data\n", wantRemoved: true},
		{name: "owner alive", owner: pid(alive)},
		{name: "owner is this process", owner: pid(os.Getpid())},
		{name: "owner dead, server alive", owner: pid(dead), postmaster: pid(alive) + "\n/data\n"},
		{name: "no owner file yet", owner: ""},
		{name: "owner file unreadable as a pid", owner: "garbage"},
	}
	root := t.TempDir()
	dirs := make([]string, len(tests))
	for i, tt := range tests {
		dirs[i] = filepath.Join(root, dirPrefix+strconv.Itoa(i))
		require.NoError(t, os.MkdirAll(filepath.Join(dirs[i], "data"), 0o700))
		if tt.owner != "" {
			require.NoError(t, os.WriteFile(filepath.Join(dirs[i], ownerFile), []byte(tt.owner+"\n"), 0o644))
		}
		if tt.postmaster != "" {
			require.NoError(t, os.WriteFile(filepath.Join(dirs[i], "data", "postmaster.pid"), []byte(tt.postmaster), 0o600))
		}
	}
	other := filepath.Join(root, "not-pgtemp")
	require.NoError(t, os.Mkdir(other, 0o700))

	removeStale(root)

	for i, tt := range tests {
		_, err := os.Stat(dirs[i])
		require.Equal(t, tt.wantRemoved, os.IsNotExist(err), tt.name)
	}
	require.DirExists(t, other)
}

func pid(n int) string { return strconv.Itoa(n) }

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	require.False(t, processAlive(cmd.Process.Pid))
	return cmd.Process.Pid
}
