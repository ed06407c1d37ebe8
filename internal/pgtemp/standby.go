package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A hot standby is a copy of a primary taken by pg_basebackup -R, which also writes the settings that
// make the copy start in recovery and stream the primary's WAL over the primary's unix socket. initdb's
// pg_hba.conf already lets local replication connections in (trust), and PostgreSQL's defaults
// (wal_level=replica, max_wal_senders=10, hot_standby=on) do the rest.

// StartStandby copies s with pg_basebackup into a new directory and starts the copy as a hot standby of
// s: a server of its own (socket directory, DSN, Stop) that replays what s writes and accepts read-only
// connections, which it returns once it does. It is meant for tests of replication and of failover
// (Kill the primary, Promote the standby).
//
// The standby starts with the options s was started with, then opts: settings such as max_connections
// must be no lower on a standby than on its primary. It needs pg_basebackup beside postgres (Debian
// ships it in the same directory, with the client package); without it the error matches
// [ErrNoBinaries].
func (s *Server) StartStandby(ctx context.Context, opts ...Option) (*Server, error) {
	cfg, err := s.cfg.with(opts)
	if err != nil {
		return nil, err
	}
	basebackup := filepath.Join(s.bin.dir, executable("pg_basebackup"))
	if _, err := os.Stat(basebackup); err != nil {
		return nil, &noBinariesError{msg: fmt.Sprintf("pgtemp: StartStandby needs pg_basebackup beside postgres in %s: "+
			"install the PostgreSQL client package of the same version (Debian/Ubuntu: postgresql-client-<version>)", s.bin.dir)}
	}
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return nil, errors.New("pgtemp: StartStandby after Stop: the primary must run")
	}
	// -R writes standby.signal and primary_conninfo (recovery.conf before PostgreSQL 12); -X stream
	// adds the WAL written during the copy, so that the copy is consistent; -c fast starts it from an
	// immediate checkpoint rather than a spread one; -w: trust, never a password prompt.
	return startWith(ctx, s.bin, cfg, func(standby *Server, ctx context.Context) error {
		return standby.run(ctx, basebackup, "-D", standby.dataDir,
			"-h", s.sockDir, "-p", strconv.Itoa(s.port), "-U", "postgres", "-w",
			"-R", "-X", "stream", "-c", "fast", "--no-sync")
	})
}

// Promote turns a hot standby into a primary, which accepts writes once Promote returns; it ends
// replication from the former primary, which may be gone (Kill). Promoting a server that is not a
// standby is an error. It needs PostgreSQL 12 or later (pg_promote).
func (s *Server) Promote(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.startTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		return fmt.Errorf("pgtemp: Promote: connect to the standby: %w", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	// pg_promote (PostgreSQL 12) waits for the promotion itself, for at most wait_seconds.
	var promoted bool
	wait := max(1, int(time.Until(deadline(ctx)).Seconds()))
	err = conn.QueryRow(ctx, "SELECT pg_promote(true, $1)", wait).Scan(&promoted)
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "55000" {
		return errors.New("pgtemp: Promote: the server is not a standby (it is not in recovery)")
	}
	if err != nil {
		return fmt.Errorf("pgtemp: Promote: %w", err)
	}
	var inRecovery bool
	if promoted {
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			return fmt.Errorf("pgtemp: Promote: %w", err)
		}
	}
	if !promoted || inRecovery {
		return fmt.Errorf("pgtemp: Promote: the standby did not finish its promotion within %d s; its last output:\n%s",
			wait, s.log.Tail())
	}
	return nil
}

// deadline returns ctx's deadline; Promote's context always has one.
func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}
