//go:build unix

package proc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStart_WaitsUntilReady(t *testing.T) {
	home := t.TempDir()
	marker := filepath.Join(home, "ready")
	p, err := Start(t.Context(), Command{
		Path: shell(t), Args: []string{"-c", "sleep 0.2; touch ready; exec sleep 60"}, Home: home,
		Ready: func(context.Context) error {
			_, err := os.Stat(marker)
			return err
		},
		Shutdown: []os.Signal{syscall.SIGTERM}, Grace: 5 * time.Second,
	})
	require.NoError(t, err)
	require.FileExists(t, marker)
	recorded, err := ReadPID(filepath.Join(home, pidFile))
	require.NoError(t, err)
	require.Equal(t, p.PID(), recorded, "the child's pid is recorded in its directory, for sweeps")

	require.NoError(t, p.Stop())
	require.False(t, Alive(p.PID()))
	require.NoError(t, p.Stop(), "a second Stop")
}

func TestStart_ProcessThatExitsReportsItsLog(t *testing.T) {
	_, err := Start(t.Context(), Command{
		Path: shell(t), Args: []string{"-c", "echo 'bad setting'; exit 3"},
		Ready: func(context.Context) error { return errors.New("not yet") },
	})
	require.ErrorContains(t, err, "sh exited during startup (exit status 3)")
	require.ErrorContains(t, err, "bad setting")
}

func TestStart_NeverReadyIsStoppedWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	home := t.TempDir()
	p, err := Start(ctx, Command{
		Path: shell(t), Args: []string{"-c", "echo waiting; exec sleep 60"}, Home: home,
		Ready:    func(context.Context) error { return errors.New("no socket yet") },
		Shutdown: []os.Signal{syscall.SIGTERM}, Grace: 5 * time.Second,
	})
	require.Nil(t, p)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "last attempt: no socket yet")
	require.ErrorContains(t, err, "waiting")
	child, err := ReadPID(filepath.Join(home, pidFile))
	require.NoError(t, err)
	require.False(t, Alive(child), "Start left the process running")
}

func TestStop_KillsAProcessThatIgnoresItsSignals(t *testing.T) {
	p, err := Start(t.Context(), Command{
		Path: shell(t), Args: []string{"-c", "trap '' TERM; echo trapped; while :; do sleep 0.05; done"},
		Ready:    func(context.Context) error { return nil },
		Shutdown: []os.Signal{syscall.SIGTERM}, Grace: 100 * time.Millisecond,
	})
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond) // lets the shell set its trap

	err = p.Stop()
	require.ErrorIs(t, err, ErrKilled)
	require.ErrorContains(t, err, "did not exit within 100ms")
	require.False(t, Alive(p.PID()))
}

func TestStopWith_NoSignalKillsAtOnce(t *testing.T) {
	p, err := Start(t.Context(), Command{Path: shell(t), Args: []string{"-c", "trap '' TERM INT QUIT; exec sleep 60"}})
	require.NoError(t, err)
	began := time.Now()
	require.NoError(t, p.StopWith(time.Minute))
	require.Less(t, time.Since(began), 5*time.Second)
}

func TestRun_FailureQuotesTheOutput(t *testing.T) {
	out, err := os.Create(filepath.Join(t.TempDir(), "log"))
	require.NoError(t, err)
	defer func() { _ = out.Close() }()
	log := NewLog(out)
	require.NoError(t, Run(t.Context(), Command{Path: shell(t), Args: []string{"-c", "echo fine"}, Log: log}))
	err = Run(t.Context(), Command{Path: shell(t), Args: []string{"-c", "echo 'no space left' >&2; exit 1"}, Log: log})
	require.ErrorContains(t, err, "exit status 1; its last output:\nfine\nno space left")
	copied, err := os.ReadFile(out.Name())
	require.NoError(t, err)
	require.Equal(t, "fine\nno space left\n", string(copied), "the Log copies everything to its writer")
}

func TestRun_ContextKillsTheProgram(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	require.Error(t, Run(ctx, Command{Path: shell(t), Args: []string{"-c", "exec sleep 60"}}))
	require.Less(t, time.Since(began), 5*time.Second)
}

func TestLog_TailKeepsWholeLastLines(t *testing.T) {
	log := NewLog(nil)
	for i := range 1000 {
		_, _ = log.Write([]byte("line " + strconv.Itoa(i) + "\n"))
	}
	tail := log.Tail()
	require.LessOrEqual(t, len(tail), tailBytes)
	require.Regexp(t, `^line \d+\n`, tail, "starts with a whole line")
	require.Regexp(t, `\nline 999$`, tail)
}

func shell(t *testing.T) string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	return sh
}
