//go:build unix

package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSweep_RemovesOnlyDirectoriesOfDeadOwners(t *testing.T) {
	dead := deadPID(t)
	alive := os.Getppid() // the go command, or whatever ran this test: alive while the test runs

	tests := []struct {
		name        string
		owner       string // contents of owner.pid; "" for no file
		child       string // contents of child.pid; "" for no file
		wantRemoved bool
	}{
		{name: "owner dead, child never started", owner: pid(dead), wantRemoved: true},
		{name: "owner and child dead", owner: pid(dead), child: pid(dead), wantRemoved: true},
		{name: "owner alive", owner: pid(alive)},
		{name: "owner is this process", owner: pid(os.Getpid())},
		{name: "owner dead, child alive", owner: pid(dead), child: pid(alive)},
		{name: "no owner file yet", owner: ""},
		{name: "owner file unreadable as a pid", owner: "garbage"},
	}
	var released []string
	kind := Kind{Prefix: "test-", Release: func(dir string) { released = append(released, filepath.Base(dir)) }}
	root := t.TempDir()
	dirs := make([]string, len(tests))
	for i, tt := range tests {
		dirs[i] = filepath.Join(root, kind.Prefix+strconv.Itoa(i))
		require.NoError(t, os.Mkdir(dirs[i], 0o700))
		for file, content := range map[string]string{ownerFile: tt.owner, pidFile: tt.child} {
			if content != "" {
				require.NoError(t, os.WriteFile(filepath.Join(dirs[i], file), []byte(content+"\n"), 0o644))
			}
		}
	}
	other := filepath.Join(root, "not-"+kind.Prefix+"0")
	require.NoError(t, os.Mkdir(other, 0o700))

	kind.Sweep(root)

	var wantReleased []string
	for i, tt := range tests {
		_, err := os.Stat(dirs[i])
		require.Equal(t, tt.wantRemoved, os.IsNotExist(err), tt.name)
		if tt.wantRemoved {
			wantReleased = append(wantReleased, filepath.Base(dirs[i]))
		}
	}
	require.ElementsMatch(t, wantReleased, released, "Release runs for each removed directory, before it goes")
	require.DirExists(t, other)
}

func TestNewDir_RecordsItsOwnerAndSweepsFirst(t *testing.T) {
	kind := Kind{Prefix: "test-", Socket: ".s.PGSQL.5432"}
	root := t.TempDir()
	left := filepath.Join(root, kind.Prefix+"left")
	require.NoError(t, os.Mkdir(left, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(left, ownerFile), []byte(pid(deadPID(t))), 0o644))

	dir, err := kind.NewDir([]string{"", root, root}, nil)
	require.NoError(t, err)

	require.NoDirExists(t, left)
	require.True(t, strings.HasPrefix(dir, filepath.Join(root, kind.Prefix)), dir)
	owner, err := ReadPID(filepath.Join(dir, ownerFile))
	require.NoError(t, err)
	require.Equal(t, os.Getpid(), owner)
}

func TestNewDir_PassesOverRootsTooLongForASocket(t *testing.T) {
	kind := Kind{Prefix: "test-", Socket: ".s.PGSQL.5432"}
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	require.NoError(t, os.Mkdir(long, 0o700))

	_, err := kind.NewDir([]string{long}, nil)
	require.ErrorContains(t, err, "too long a path for a unix socket")
	require.ErrorContains(t, err, "set TMPDIR")

	short := t.TempDir()
	dir, err := kind.NewDir([]string{long, short}, nil)
	require.NoError(t, err)
	require.Equal(t, short, filepath.Dir(dir))
}

func pid(n int) string { return strconv.Itoa(n) }

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	require.False(t, Alive(cmd.Process.Pid))
	return cmd.Process.Pid
}
