package mylib

import (
	"testing"

	"github.com/pgdual/mylib/internal/migrationcheck"
	"github.com/pgdual/mylib/internal/pgtest"
)

// TestMigrations_AreSafeToShip applies every migration file to tables that
// hold rows, as on an install in use, and refuses statements that would block
// its reads or writes or break the release before: see "Writing safe
// migrations" in the README.
func TestMigrations_AreSafeToShip(t *testing.T) {
	t.Parallel()
	err := migrationcheck.Check(t.Context(), pgtest.DSN(t), migrationcheck.Files{FS: embedded, Dir: "migrations", Module: moduleName})
	if err != nil {
		t.Fatal(err)
	}
}
