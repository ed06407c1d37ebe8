package migrate

import (
	"context"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

// To takes a schema down with the files' Down sections, newest first, each
// in a transaction of its own, and up again; what it undoes is gone with its
// version and its checksum, so that Up then applies it again.
func TestTo_DownAndUpAgain(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := fstest.MapFS{
		"00001_a.sql": sqlFile("a"),
		"00002_b.sql": sqlFile("b"),
		"00003_idx.sql": mapFile("-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY IF NOT EXISTS b_id ON {{tables.b}} (id);\n" +
			"-- +goose Down\nDROP INDEX CONCURRENTLY IF EXISTS {{schema}}.b_id;\n"),
	}
	_, err := r.up(files)
	require.NoError(t, err)
	m, err := Load(module, files)
	require.NoError(t, err)
	ctx := context.Background()

	res, err := m.To(ctx, r.pool, "lib", 1, Config{})
	require.NoError(t, err)
	require.Equal(t, []string{"00003_idx.sql", "00002_b.sql"}, res.Undone)
	require.Empty(t, res.Applied)
	require.Equal(t, int64(1), res.Version)
	require.Equal(t, []int64{1}, r.versions())
	require.False(t, r.tableExists("b"))
	require.False(t, r.tableExists("b_id"))
	var sums int
	require.NoError(t, r.pool.QueryRow(ctx, "SELECT count(*) FROM lib.mylib_goose_checksums").Scan(&sums))
	require.Equal(t, 1, sums, "the checksums of what was undone are gone with it")

	res, err = m.To(ctx, r.pool, "lib", 1, Config{})
	require.NoError(t, err)
	require.Empty(t, res.Undone, "already there: nothing to do")

	res, err = m.To(ctx, r.pool, "lib", 2, Config{})
	require.NoError(t, err)
	require.Equal(t, []string{"00002_b.sql"}, res.Applied, "up to a version, not beyond")
	res, err = r.up(files)
	require.NoError(t, err)
	require.Equal(t, []string{"00003_idx.sql"}, res.Applied)
	require.True(t, r.tableExists("b_id"))

	res, err = m.To(ctx, r.pool, "lib", 0, Config{})
	require.NoError(t, err)
	require.Equal(t, []string{"00003_idx.sql", "00002_b.sql", "00001_a.sql"}, res.Undone)
	require.Empty(t, r.versions())
}

// To refuses, before it changes anything, what it cannot undo: a file
// without a Down section, a version no file has, a target beyond the files.
func TestTo_RefusesWhatItCannotUndo(t *testing.T) {
	t.Parallel()
	r := newRun(t)
	files := fstest.MapFS{
		"00001_a.sql":      sqlFile("a"),
		"00002_noundo.sql": mapFile("-- +goose Up\nCREATE TABLE {{tables.n}} (id int);\n-- +goose Down\n-- nothing: data would be lost\n"),
		"00003_c.sql":      sqlFile("c"),
	}
	_, err := r.up(files)
	require.NoError(t, err)
	m, err := Load(module, files)
	require.NoError(t, err)
	ctx := context.Background()

	_, err = m.To(ctx, r.pool, "lib", 1, Config{})
	require.ErrorIs(t, err, ErrIrreversible)
	require.ErrorContains(t, err, "00002_noundo.sql (version 2) has no Down section")
	require.ErrorContains(t, err, "nothing was changed")
	require.Equal(t, []int64{1, 2, 3}, r.versions(), "not even the file above it was undone")
	require.True(t, r.tableExists("c"))

	res, err := m.To(ctx, r.pool, "lib", 2, Config{})
	require.NoError(t, err, "down to the file without a Down section is fine")
	require.Equal(t, []string{"00003_c.sql"}, res.Undone)

	_, err = m.To(ctx, r.pool, "lib", 4, Config{})
	require.ErrorContains(t, err, "the latest file is version 3")

	// A newer release applied a file this code does not have.
	newer := fstest.MapFS{"00004_d.sql": sqlFile("d")}
	for k, v := range files {
		newer[k] = v
	}
	_, err = r.up(newer)
	require.NoError(t, err)
	_, err = m.To(ctx, r.pool, "lib", 2, Config{})
	require.ErrorIs(t, err, ErrIrreversible)
	require.ErrorContains(t, err, "version 4, which no file of this code has")
	require.ErrorContains(t, err, "run the release that applied it")
	require.Equal(t, []int64{1, 2, 3, 4}, r.versions())
}
