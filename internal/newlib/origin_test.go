package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPseudoVersion_AsTheGoCommandNamesACommit(t *testing.T) {
	at := time.Date(2026, 11, 29, 12, 56, 45, 0, time.FixedZone("CET", 3600))
	const hash = "b48575973bd472a7d24f3555973498ed8451d1af"
	for _, tc := range []struct{ major, base, want string }{
		{"", "", "v0.0.0-20261129115645-b48575973bd4"},
		{"v2", "", "v2.0.0-20261129115645-b48575973bd4"},
		{"", "v1.4.0", "v1.4.1-0.20261129115645-b48575973bd4"},
		{"", "v1.4.0-rc.1", "v1.4.0-rc.1.0.20261129115645-b48575973bd4"},
	} {
		require.Equal(t, tc.want, pseudoVersion(tc.major, tc.base, at, hash), "%+v", tc)
	}
}

func TestRevisionOf(t *testing.T) {
	for v, want := range map[string]string{
		"v0.0.0-20261129115645-b48575973bd4":       "b48575973bd4",
		"v1.4.1-0.20261129115645-b48575973bd4":     "b48575973bd4",
		"v1.4.0":                                   "v1.4.0",
		"v1.4.0-rc.1":                              "v1.4.0-rc.1",
		"b48575973bd472a7d24f3555973498ed8451d1af": "b48575973bd472a7d24f3555973498ed8451d1af",
	} {
		require.Equal(t, want, revisionOf(v), v)
	}
}

func TestCompareSemver(t *testing.T) {
	ordered := []string{"v0.9.0", "v1.0.0-alpha", "v1.0.0-alpha.1", "v1.0.0-alpha.beta", "v1.0.0-beta.2", "v1.0.0-beta.11", "v1.0.0-rc.1", "v1.0.0", "v1.2.0", "v1.10.0"}
	for i := 1; i < len(ordered); i++ {
		require.Negative(t, compareSemver(ordered[i-1], ordered[i]), "%s < %s", ordered[i-1], ordered[i])
		require.Positive(t, compareSemver(ordered[i], ordered[i-1]), "%s > %s", ordered[i], ordered[i-1])
	}
}

// TestGitVersion_TagsAndCommits: a tagged commit is its tag, a later one a
// pseudo-version above the highest tag among its ancestors, and a work tree
// with changes not committed is not clean.
func TestGitVersion_TagsAndCommits(t *testing.T) {
	dir := t.TempDir()
	gitIn(t, dir, "init", "-q")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/acme/Tmpl\n"), 0o644))
	commitAll(t, dir, "first")
	first := versionOf(dir, "example.com/acme/Tmpl")
	hash := strings.TrimSpace(gitIn(t, dir, "rev-parse", "HEAD"))
	require.Regexp(t, `^v0\.0\.0-\d{14}-`+hash[:12]+`$`, first.Version)
	require.True(t, first.Clean)

	gitIn(t, dir, "tag", "v1.2.0")
	gitIn(t, dir, "tag", "v1.10.0-rc.1")
	gitIn(t, dir, "tag", "v2.0.0") // another major version's: not this module's
	gitIn(t, dir, "tag", "not-a-version")
	require.Equal(t, "v1.10.0-rc.1", versionOf(dir, "example.com/acme/Tmpl").Version)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.go"), []byte("package tmpl\n"), 0o644))
	require.False(t, versionOf(dir, "example.com/acme/Tmpl").Clean, "an untracked file is copied too")
	commitAll(t, dir, "second")
	hash = strings.TrimSpace(gitIn(t, dir, "rev-parse", "HEAD"))
	require.Regexp(t, `^v1\.10\.0-rc\.1\.0\.\d{14}-`+hash[:12]+`$`, versionOf(dir, "example.com/acme/Tmpl").Version)
	require.Regexp(t, `^v2\.0\.1-0\.\d{14}-`+hash[:12]+`$`, versionOf(dir, "example.com/acme/Tmpl/v2").Version)

	require.Equal(t, templateVersion{Module: "example.com/acme/Tmpl"}, versionOf(t.TempDir(), "example.com/acme/Tmpl"), "outside git and the module cache: unknown")
}

// gitIn runs git in dir with an identity of its own, and returns its output.
func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := git(dir, append([]string{"-c", "user.name=newlib test", "-c", "user.email=newlib@example.com", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"}, args...)...)
	require.NoError(t, err)
	return string(out)
}

// commitAll commits everything in dir's work tree.
func commitAll(t *testing.T, dir, message string) {
	t.Helper()
	gitIn(t, dir, "add", "-A")
	gitIn(t, dir, "commit", "-q", "-m", message)
}
