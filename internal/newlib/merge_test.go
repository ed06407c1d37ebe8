package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// lines makes a text of n numbered lines, each prefixed with name.
func lines(name string, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%s line %d\n", name, i+1)
	}
	return b.String()
}

func textTree(files map[string]string) tree {
	t := tree{}
	for p, s := range files {
		t[p] = file{data: []byte(s), mode: 0o644}
	}
	return t
}

// TestMerge_PlansEachCase runs the merge of an update on small trees: one
// file per case, the library's own files beside them.
func TestMerge_PlansEachCase(t *testing.T) {
	own, err := parseManifest("m", []byte("template internal/\nlibrary internal/own/\nlibrary migrations/\n"))
	require.NoError(t, err)
	long := lines("kept", 20)
	base := textTree(map[string]string{
		"internal/same.go":         "same\n",
		"internal/fixed.go":        "a\nb\nc\n",
		"internal/both.go":         "a\nb\nc\nd\ne\nf\n",
		"internal/clash.go":        "a\nb\nc\n",
		"internal/gone.go":         "gone\n",
		"internal/gone_edited.go":  "gone\n",
		"internal/deleted.go":      "x\n",
		"internal/old_name.go":     long,
		"internal/split.go":        lines("first", 12) + lines("second", 4),
		"internal/own/domain.go":   "domain\n",
		"migrations/00001_a.sql":   "one\n",
		"internal/tiny_source.go":  lines("other", 30),
		"internal/own/replaced.go": "old\n",
	})
	theirs := textTree(map[string]string{
		"internal/same.go":         "same\n",
		"internal/fixed.go":        "a\nB\nc\n",
		"internal/both.go":         "A\nb\nc\nd\ne\nf\n",
		"internal/clash.go":        "a\nB\nc\n",
		"internal/deleted.go":      "y\n",
		"internal/new_name.go":     long + "one more\n",
		"internal/split_first.go":  lines("first", 12),
		"internal/split_second.go": lines("second", 4),
		"internal/added.go":        "added\n",
		"internal/both_added.go":   "theirs\n",
		"internal/own/domain.go":   "the template's domain\n",
		"migrations/00002_b.sql":   "two\n",
		"internal/tiny.go":         "other line 1\n", // one line of tiny_source.go, which is gone: no rename
	})
	ours := t.TempDir()
	for p, s := range map[string]string{
		"internal/same.go":        "same\n",
		"internal/fixed.go":       "a\nb\nc\n",
		"internal/both.go":        "a\nb\nc\nd\ne\nF\n",
		"internal/clash.go":       "a\nb!\nc\n",
		"internal/gone.go":        "gone\n",
		"internal/gone_edited.go": "gone, edited\n",
		"internal/old_name.go":    "edited\n" + long,
		"internal/split.go":       lines("first", 12) + lines("second", 4),
		"internal/both_added.go":  "ours\n",
		"internal/own/domain.go":  "the library's domain\n",
		"internal/own/mine.go":    "mine\n",
		"internal/tiny_source.go": lines("other", 30),
		"migrations/00001_a.sql":  "one\n",
		"migrations/00002_x.sql":  "the library's two\n",
	} {
		writeText(t, ours, p, s)
	}
	m := merge{base: base, theirs: theirs, oursDir: ours, baseOwn: own, theirsOwn: own, labels: [3]string{"ours", "base", "theirs"}}
	changes, err := m.plan()
	require.NoError(t, err)

	got := map[string]string{}
	for _, c := range changes {
		desc := c.kind
		if c.from != "" {
			desc += " from " + c.from
		}
		got[c.path] = desc
	}
	require.Equal(t, map[string]string{
		"internal/fixed.go":        changeUpdated,
		"internal/both.go":         changeUpdated,
		"internal/clash.go":        changeConflicted,
		"internal/gone.go":         changeRemoved,
		"internal/gone_edited.go":  changeConflicted,
		"internal/deleted.go":      changeKeptDeleted,
		"internal/new_name.go":     changeUpdated + " from internal/old_name.go",
		"internal/split_first.go":  changeUpdated + " from internal/split.go",
		"internal/split_second.go": changeAdded,
		"internal/added.go":        changeAdded,
		"internal/both_added.go":   changeConflicted,
		"internal/tiny.go":         changeAdded,
		"internal/tiny_source.go":  changeRemoved,
	}, got)
	require.Equal(t, []string{"internal/own/domain.go", "internal/own/replaced.go", "migrations/00001_a.sql", "migrations/00002_b.sql"}, m.untaken())

	require.NoError(t, apply(ours, changes))
	after := readTreeT(t, ours)
	for p, want := range map[string]string{
		"internal/fixed.go":      "a\nB\nc\n",
		"internal/both.go":       "A\nb\nc\nd\ne\nF\n",
		"internal/new_name.go":   "edited\n" + long + "one more\n",
		"internal/own/domain.go": "the library's domain\n",
		"internal/own/mine.go":   "mine\n",
		"migrations/00002_x.sql": "the library's two\n",
		"internal/added.go":      "added\n",
		"internal/tiny.go":       "other line 1\n",
	} {
		require.Equal(t, want, string(after[p].data), p)
	}
	require.Equal(t, "a\n<<<<<<< ours\nb!\n||||||| base\nb\n=======\nB\n>>>>>>> theirs\nc\n", string(after["internal/clash.go"].data))
	require.True(t, hasMarkers(after["internal/both_added.go"].data))
	require.Equal(t, "gone, edited\n", string(after["internal/gone_edited.go"].data), "kept for the library to decide")
	for _, p := range []string{"internal/gone.go", "internal/old_name.go", "internal/split.go", "internal/deleted.go", "migrations/00002_b.sql", "internal/own/replaced.go"} {
		require.NotContains(t, after, p)
	}
	require.NoFileExists(t, filepath.Join(ours, "internal/deleted.go"), "what the library deleted stays deleted")
}
