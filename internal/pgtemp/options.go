package pgtemp

import (
	"fmt"
	"io"
	"regexp"
	"time"
)

// Option configures [Start] and [Server.StartStandby].
type Option interface {
	apply(*config) error
}

type config struct {
	logOutput    io.Writer
	settings     [][2]string
	startTimeout time.Duration
	durable      bool
}

func newConfig(opts []Option) (*config, error) {
	cfg := &config{logOutput: io.Discard, startTimeout: 60 * time.Second}
	for _, o := range opts {
		if err := o.apply(cfg); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// with returns a copy of c changed by opts: a standby starts with its primary's options.
func (c *config) with(opts []Option) (*config, error) {
	cp := *c
	cp.settings = append([][2]string(nil), c.settings...)
	for _, o := range opts {
		if err := o.apply(&cp); err != nil {
			return nil, err
		}
	}
	return &cp, nil
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

// WithLogOutput copies the output of initdb and the server log to w (by default it is discarded; the
// last lines are still quoted in startup errors). Writes come from other goroutines, until Stop returns.
func WithLogOutput(w io.Writer) Option {
	return optionFunc(func(c *config) error {
		if w == nil {
			return fmt.Errorf("pgtemp: WithLogOutput(nil): pass io.Discard to drop the log")
		}
		c.logOutput = w
		return nil
	})
}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// WithSetting passes a server setting on the postgres command line (-c name=value), after pgtemp's own
// test settings, so it can override them: WithSetting("max_connections", "50").
func WithSetting(name, value string) Option {
	return optionFunc(func(c *config) error {
		if !settingName.MatchString(name) {
			return fmt.Errorf("pgtemp: WithSetting(%q): not a setting name; use a name such as work_mem", name)
		}
		c.settings = append(c.settings, [2]string{name, value})
		return nil
	})
}

// WithDurableCommits makes every commit the server acknowledges survive a crash of the server (Kill,
// a killed backend, an immediate shutdown): synchronous_commit is on, so a commit returns once its WAL
// is written. fsync stays off, so only a crash of the machine itself could lose it. A test that
// crashes or restarts its server and then reads what it committed needs this; without it a crash may
// lose the commits of the last fraction of a second. A standby started with it keeps it.
func WithDurableCommits() Option {
	return optionFunc(func(c *config) error {
		c.durable = true
		return nil
	})
}

// WithStartTimeout bounds how long Start, Restart and StartStandby wait for the server to accept
// connections, and Promote for it to accept writes (default 60 s). The context passed to them can end
// the wait sooner.
func WithStartTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("pgtemp: WithStartTimeout(%v): the timeout must be positive", d)
		}
		c.startTimeout = d
		return nil
	})
}
