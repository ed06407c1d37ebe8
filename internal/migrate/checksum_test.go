package migrate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// releasedChecksums are the checksums that installs recorded for the
// template's files as released (testdata/released holds them byte for byte),
// before allowances were read. A change to checksum that moves any of them
// makes every such install fail with drift.
var releasedChecksums = map[string]int64{
	"00001_events.sql":            6749179983958307765,
	"00002_subjects.sql":          8208196560686436439,
	"00003_subject_estimates.sql": 4112469326980280251,
}

func TestChecksum_ReleasedFilesKeepTheirChecksums(t *testing.T) {
	t.Parallel()
	names, err := filepath.Glob(filepath.Join("testdata", "released", "*.sql"))
	require.NoError(t, err)
	require.Len(t, names, len(releasedChecksums))
	for _, name := range names {
		text, err := os.ReadFile(name)
		require.NoError(t, err)
		want, ok := releasedChecksums[filepath.Base(name)]
		require.True(t, ok, name)
		require.Equal(t, want, checksum(text), "%s as released", name)

		// The same file given allowances, before and after every line, indented
		// or not, with Windows line endings: still the same migration.
		lines := strings.Split(string(text), "\n")
		var allowed []string
		for i, l := range lines {
			allowed = append(allowed, "-- mylib:allow index: a reason", l, "    -- mylib:allow rewrite: another reason  ")
			if i%2 == 0 {
				allowed[len(allowed)-1] += "\r"
			}
		}
		require.Equal(t, want, checksum([]byte(strings.Join(allowed, "\n"))), "%s with allowances", name)
	}
}

func TestChecksum_OnlyWholeLineAllowancesAreNotContent(t *testing.T) {
	t.Parallel()
	base := checksum([]byte("-- +goose Up\nCREATE INDEX i ON t (a);\n"))
	require.Equal(t, base, checksum([]byte("-- +goose Up\n-- mylib:allow index: t is empty in every install\nCREATE INDEX i ON t (a);\n")))
	require.NotEqual(t, base, checksum([]byte("-- +goose Up\nCREATE INDEX i ON t (a); -- mylib:allow index: t is empty\n")),
		"an allowance after SQL on its line is part of the line")
	require.NotEqual(t, base, checksum([]byte("-- +goose Up\n-- an index: mylib:allow\nCREATE INDEX i ON t (a);\n")),
		"another comment is content")
}
