package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A hot standby is an online copy of its primary's files, taken the way PostgreSQL's documentation
// describes a base backup made without pg_basebackup (which not every packaging of the server ships):
// pg_backup_start, a copy of the data directory, pg_backup_stop, whose label tells the copy where to
// begin its recovery. standby.signal and primary_conninfo make the copy start in recovery and stream
// the primary's WAL over the primary's unix socket, through a replication slot that keeps that WAL on
// the primary until the standby has it. initdb's pg_hba.conf already lets local replication
// connections in (trust), and PostgreSQL's defaults (wal_level=replica, max_wal_senders=10,
// hot_standby=on) do the rest.

// StartStandby copies s into a new directory while s runs and starts the copy as a hot standby of s: a
// server of its own (socket directory, DSN, Stop) that replays what s writes and accepts read-only
// connections, which it returns once it does. It is meant for tests of replication and of failover
// (Kill the primary, Promote the standby). It needs PostgreSQL 15 or later (pg_backup_start).
//
// The standby starts with the options s was started with, then opts: settings such as max_connections
// must be no lower on a standby than on its primary. Its replication slot on s (pgtemp_<number>) is
// dropped when the standby stops, if s still runs.
func (s *Server) StartStandby(ctx context.Context, opts ...Option) (*Server, error) {
	cfg, err := s.cfg.with(opts)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return nil, errors.New("pgtemp: StartStandby after Stop: the primary must run")
	}
	conn, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		return nil, fmt.Errorf("pgtemp: StartStandby: connect to the primary: %w", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return nil, fmt.Errorf("pgtemp: StartStandby: %w", err)
	}
	if version < 150000 {
		return nil, fmt.Errorf("pgtemp: StartStandby needs PostgreSQL 15 or later (pg_backup_start); the primary runs %d", version)
	}
	var slot string
	standby, err := startWith(ctx, s.bin, cfg, func(standby *Server, ctx context.Context) error {
		slot = slotName(standby.dir)
		return standby.copyOf(ctx, s, conn, slot)
	})
	if err != nil {
		if slot != "" {
			_ = dropSlot(context.Background(), conn, slot)
		}
		return nil, err
	}
	standby.primary, standby.slot = s, slot
	return standby, nil
}

// copyOf fills s's data directory with an online copy of primary's, made on conn, and the
// settings that make it a standby that streams from primary through slot.
func (s *Server) copyOf(ctx context.Context, primary *Server, conn *pgx.Conn, slot string) error {
	// Reserved now, before the backup's checkpoint: the primary keeps every WAL file the copy needs.
	if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true)", slot); err != nil {
		return fmt.Errorf("pgtemp: StartStandby: create a replication slot on the primary: %w", err)
	}
	// fast: an immediate checkpoint rather than a spread one. Until pg_backup_stop the primary writes
	// whole pages into its WAL, so a page the copy reads half-written is repaired by the replay.
	if _, err := conn.Exec(ctx, "SELECT pg_backup_start('pgtemp standby', fast => true)"); err != nil {
		return fmt.Errorf("pgtemp: StartStandby: pg_backup_start on the primary: %w", err)
	}
	copyErr := copyTree(primary.dataDir, s.dataDir, notInBackup)
	var label, spcmap string
	err := conn.QueryRow(ctx, "SELECT labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => false)").Scan(&label, &spcmap)
	if copyErr != nil {
		return fmt.Errorf("pgtemp: StartStandby: copy the primary's data directory: %w", copyErr)
	}
	if err != nil {
		return fmt.Errorf("pgtemp: StartStandby: pg_backup_stop on the primary: %w", err)
	}
	conninfo := fmt.Sprintf("host=%s port=%d user=postgres application_name=%s",
		conninfoValue(primary.sockDir), primary.port, conninfoValue(filepath.Base(s.dir)))
	// The label tells the copy where its recovery starts; the map, written only when the primary has
	// tablespaces, where they are; standby.signal makes it a standby.
	files := [][2]string{{"backup_label", label}, {"standby.signal", ""}}
	if spcmap != "" {
		files = append(files, [2]string{"tablespace_map", spcmap})
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(s.dataDir, f[0]), []byte(f[1]), 0o600); err != nil {
			return fmt.Errorf("pgtemp: StartStandby: %w", err)
		}
	}
	auto, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("pgtemp: StartStandby: %w", err)
	}
	_, err = fmt.Fprintf(auto, "primary_conninfo = %s\nprimary_slot_name = %s\n", confValue(conninfo), confValue(slot))
	if err = errors.Join(err, auto.Close()); err != nil {
		return fmt.Errorf("pgtemp: StartStandby: %w", err)
	}
	return wrap(s.user.Own(s.dataDir))
}

// Left out of a copy of a running server's data directory, as pg_basebackup leaves them out: the
// contents of directories that hold WAL (streamed instead) or state that a start makes anew, and files
// that belong to the running server.
var (
	backupSkipsContents = []string{"pg_wal", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"}
	backupSkipsFiles    = []string{"postmaster.pid", "postmaster.opts", "current_logfiles", "backup_label", "tablespace_map", "standby.signal", "recovery.signal"}
)

// notInBackup reports whether a base backup leaves out rel, a path in the data directory.
func notInBackup(rel string) bool {
	rel = filepath.ToSlash(rel)
	top, _, nested := strings.Cut(rel, "/")
	base := filepath.Base(rel)
	return (nested && slices.Contains(backupSkipsContents, top)) ||
		(!nested && slices.Contains(backupSkipsFiles, top)) ||
		base == "pg_internal.init" || strings.HasPrefix(base, "pgsql_tmp")
}

// slotName names a standby's replication slot after its directory (pgtemp-123 -> pgtemp_123): slot
// names hold lowercase letters, digits and underscores.
func slotName(dir string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r - 'A' + 'a'
		}
		return '_'
	}, filepath.Base(dir))
}

// conninfoValue quotes a value of a libpq connection string.
func conninfoValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// confValue quotes a value of postgresql.conf.
func confValue(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// dropStandbySlot drops a stopped standby's slot on its primary, so that the primary stops keeping WAL
// for it. A primary that no longer runs keeps nothing, and one that cannot be reached keeps the slot
// until it stops.
func (s *Server) dropStandbySlot() {
	p := s.primary
	p.mu.Lock()
	running := !p.stopped && p.pm != nil
	if running {
		select {
		case <-p.pm.Exited():
			running = false
		default:
		}
	}
	p.mu.Unlock()
	if !running {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN())
	if err != nil {
		return
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_ = dropSlot(ctx, conn, s.slot)
}

// dropSlot drops the replication slot if it exists. The walsender that served a standby that just
// stopped may hold it for a moment longer.
func dropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	for {
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" { // object_in_use: still active
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}
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
