package pgtemp

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSortNewestFirst_ComparesVersionsNumerically(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{
			name: "debian",
			in:   []string{"/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/10/bin"},
			want: []string{"/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/10/bin", "/usr/lib/postgresql/9.6/bin"},
		},
		{
			name: "homebrew",
			in:   []string{"/opt/homebrew/opt/postgresql@14/bin", "/opt/homebrew/opt/postgresql@17/bin"},
			want: []string{"/opt/homebrew/opt/postgresql@17/bin", "/opt/homebrew/opt/postgresql@14/bin"},
		},
		{
			name: "unversioned last",
			in: []string{"/Applications/Postgres.app/Contents/Versions/latest/bin",
				"/Applications/Postgres.app/Contents/Versions/15/bin"},
			want: []string{"/Applications/Postgres.app/Contents/Versions/15/bin",
				"/Applications/Postgres.app/Contents/Versions/latest/bin"},
		},
		{
			name: "rhel",
			in:   []string{"/usr/pgsql-12/bin", "/usr/pgsql-15/bin"},
			want: []string{"/usr/pgsql-15/bin", "/usr/pgsql-12/bin"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sortNewestFirst(tt.in)
			require.Equal(t, tt.want, tt.in)
		})
	}
}

func TestFindBinaries_PGTEMP_BIN(t *testing.T) {
	withBoth := t.TempDir()
	fakeExecutable(t, withBoth, "initdb")
	fakeExecutable(t, withBoth, "postgres")
	onlyInitdb := t.TempDir()
	fakeExecutable(t, onlyInitdb, "initdb")

	tests := []struct {
		name    string
		dir     string
		wantErr string // empty: the directory is used
	}{
		{name: "directory with both programs", dir: withBoth},
		{name: "missing directory", dir: "/nonexistent", wantErr: "PGTEMP_BIN=/nonexistent: no initdb in /nonexistent"},
		{name: "no postgres", dir: onlyInitdb, wantErr: "no postgres in " + onlyInitdb},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PGTEMP_BIN", tt.dir)
			b, err := findBinaries()
			if tt.wantErr == "" {
				require.NoError(t, err)
				require.Equal(t, tt.dir, b.dir)
				return
			}
			require.ErrorIs(t, err, ErrNoBinaries)
			require.ErrorContains(t, err, tt.wantErr)
			require.ErrorContains(t, err, "unset it to search PATH")
		})
	}
}

func TestStart_NoBinariesSaysHowToFix(t *testing.T) {
	t.Setenv("PGTEMP_BIN", "/nonexistent")
	_, err := Start(t.Context())
	require.True(t, errors.Is(err, ErrNoBinaries), "got %v", err)
	require.ErrorContains(t, err, "/nonexistent")
	require.Contains(t, ErrNoBinaries.Error(), "install the PostgreSQL server packages")
	require.Contains(t, ErrNoBinaries.Error(), "set PGTEMP_BIN")
}

func TestWithSetting_RefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "work_mem=1MB", "a b", "-c"} {
		_, err := newConfig([]Option{WithSetting(name, "x")})
		require.Error(t, err, "name %q", name)
	}
	_, err := newConfig([]Option{WithSetting("auto_explain.log_min_duration", "0")})
	require.NoError(t, err)
}

func fakeExecutable(t *testing.T, dir, name string) {
	t.Helper()
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755))
}
