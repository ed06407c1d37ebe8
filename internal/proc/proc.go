// Package proc supervises the throwaway processes of the test harness: PostgreSQL servers (package
// pgtemp) and PgBouncers (package pgtest). One piece of code starts them, waits until they serve,
// stops them and removes what they leave, so every kind of process gets the same guarantees:
//
//   - run as root, a child runs as the OS user postgres ([DropRoot]), since PostgreSQL and PgBouncer
//     refuse root;
//   - on Linux a child dies with the test binary, even one killed with SIGKILL: it is started with a
//     parent-death signal, from an OS thread kept for as long as it runs;
//   - a child lives in a directory of its own ([Kind.NewDir]) that records the test binary's pid and the
//     child's, so a later start removes the directories of killed test binaries ([Kind.Sweep]);
//   - Stop asks the child to exit, and kills it after a bound.
package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// Command is a program for [Start] or [Run].
type Command struct {
	Path string
	Args []string
	// Home is the process's directory, made by [Kind.NewDir]: its working directory, where its pid is
	// recorded (child.pid) so that a sweep leaves the directory alone while it runs. Empty for none.
	Home string
	// User is the OS user the program runs as; nil runs it as this process's user.
	User *User
	// Log receives the program's standard output and error, and quotes their end in errors; nil keeps
	// only the end.
	Log *Log

	// Ready reports whether the process serves yet (a connection attempt, say): Start calls it every
	// ReadyEvery until it returns nil. Nil means ready once started.
	Ready      func(ctx context.Context) error
	ReadyEvery time.Duration
	// Shutdown are the signals Stop sends in turn to ask the process to exit; after Grace it kills it.
	Shutdown []os.Signal
	Grace    time.Duration
}

// Process is a running child started by [Start].
type Process struct {
	cmd      *exec.Cmd
	name     string
	log      *Log
	shutdown []os.Signal
	grace    time.Duration
	exited   chan struct{} // closed once cmd.Wait returns
	err      error         // cmd.Wait's result, set before exited closes
}

// ErrKilled is part of the error of a stop that had to kill the process with SIGKILL: it did not exit
// within its grace period after the signals that ask it to.
var ErrKilled = errors.New("killed with SIGKILL")

const (
	// killTimeout bounds the wait for a process to exit after SIGKILL.
	killTimeout = 10 * time.Second
	// waitDelay is cmd.WaitDelay: children orphaned by a SIGKILL keep the log pipe open a moment.
	waitDelay = 5 * time.Second
	// pidFile holds the pid of the last child started in a directory.
	pidFile = "child.pid"
)

// Start starts c under supervision and, when c.Ready is set, waits until it serves. ctx bounds the
// wait, not the process, which runs until Stop. When the process exits before it serves, or ctx ends
// first, Start stops it and returns an error that quotes the end of its log.
func Start(ctx context.Context, c Command) (*Process, error) {
	p, err := launch(c, exec.Command(c.Path, c.Args...))
	if err != nil {
		return nil, err
	}
	if c.Ready == nil {
		return p, nil
	}
	if err := p.awaitReady(ctx, c.Ready, c.ReadyEvery); err != nil {
		return nil, errors.Join(err, p.Stop())
	}
	return p, nil
}

// Run runs c to its end under the same supervision as Start (ctx kills it), and returns an error that
// quotes the end of its log when it fails.
func Run(ctx context.Context, c Command) error {
	p, err := launch(c, exec.CommandContext(ctx, c.Path, c.Args...))
	if err != nil {
		return err
	}
	if err := p.Wait(); err != nil {
		return fmt.Errorf("%s failed: %w; its last output:\n%s", c.Path, err, p.log.Tail())
	}
	return nil
}

// launch starts cmd from a goroutine locked to its OS thread, which waits for it. The parent-death
// signal fires when the thread that started the child exits, not the process: Go ends a thread whose
// locked goroutine returns, so an unlocked start could lose the child to an unrelated goroutine's exit.
func launch(c Command, cmd *exec.Cmd) (*Process, error) {
	log := c.Log
	if log == nil {
		log = NewLog(nil)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = c.Home
	cmd.WaitDelay = waitDelay
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	dieWithParent(cmd.SysProcAttr)
	if c.User != nil {
		runAs(cmd.SysProcAttr, c.User)
	}
	p := &Process{
		cmd:      cmd,
		name:     filepath.Base(c.Path),
		log:      log,
		shutdown: c.Shutdown,
		grace:    c.Grace,
		exited:   make(chan struct{}),
	}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", c.Path, err)
	}
	if c.Home != "" {
		// Best effort: without it a sweep judges the directory by its owner alone.
		_ = os.WriteFile(filepath.Join(c.Home, pidFile), []byte(strconv.Itoa(p.PID())+"\n"), 0o644)
	}
	return p, nil
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Wait waits for the process to exit and returns how it ended (exec.Cmd.Wait's error).
func (p *Process) Wait() error {
	<-p.exited
	return p.err
}

// awaitReady calls ready every interval until it returns nil, the process exits, or ctx ends.
func (p *Process) awaitReady(ctx context.Context, ready func(context.Context) error, every time.Duration) error {
	if every <= 0 {
		every = 10 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited during startup (%v); its last output:\n%s", p.name, p.err, p.log.Tail())
		case <-ctx.Done():
			return fmt.Errorf("%s did not get ready: %w (last attempt: %v); its last output:\n%s",
				p.name, ctx.Err(), err, p.log.Tail())
		case <-tick.C:
		}
	}
}

// Stop asks the process to exit with the command's Shutdown signals and kills it if it has not within
// Grace. It returns nil once the process has exited, at once if it had already, and an error matching
// [ErrKilled] if it had to be killed. Stop must not run concurrently with itself or StopWith.
func (p *Process) Stop() error { return p.StopWith(p.grace, p.shutdown...) }

// StopWith is Stop with other signals and another grace period: StopWith(5*time.Second,
// syscall.SIGQUIT), say. A signal the system cannot send (Windows sends none but kill) kills at once,
// as do no signals at all; neither counts as [ErrKilled].
func (p *Process) StopWith(grace time.Duration, signals ...os.Signal) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	asked := len(signals) > 0
	for _, sig := range signals {
		if err := p.cmd.Process.Signal(sig); err != nil {
			asked = false
			break
		}
	}
	if asked {
		select {
		case <-p.exited:
			return nil
		case <-time.After(grace):
		}
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(killTimeout):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.PID())
	}
	if asked {
		return fmt.Errorf("%s (pid %d) did not exit within %v of %v: %w", p.name, p.PID(), grace, signals, ErrKilled)
	}
	return nil
}
