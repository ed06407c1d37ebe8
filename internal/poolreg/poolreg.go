// Package poolreg counts the standalone pools a process opens per server,
// database and user, to warn when a second one opens: each pool holds its
// own connections, and a process should share one.
package poolreg

import (
	"context"
	"log/slog"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

var registry = struct {
	mu   sync.Mutex
	open map[string]int
}{open: make(map[string]int)}

// Add records a pool and logs warning, with the server, database and user,
// when one to the same ones is already open. The key and the log line hold
// no password. forget removes the pool from the count; calling it again does
// nothing.
func Add(cc *pgconn.Config, log *slog.Logger, warning string) (forget func()) {
	key := cc.Host + "\x00" + strconv.Itoa(int(cc.Port)) + "\x00" + cc.Database + "\x00" + cc.User
	registry.mu.Lock()
	registry.open[key]++
	n := registry.open[key]
	registry.mu.Unlock()
	if n > 1 {
		log.LogAttrs(context.Background(), slog.LevelWarn, warning,
			slog.String("host", cc.Host), slog.Int("port", int(cc.Port)),
			slog.String("database", cc.Database), slog.String("user", cc.User), slog.Int("pools", n))
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			registry.mu.Lock()
			defer registry.mu.Unlock()
			if registry.open[key]--; registry.open[key] <= 0 {
				delete(registry.open, key)
			}
		})
	}
}
