package pgtemp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// initdb takes about a second of CPU, most of a Start. Its result depends only on the binaries and the
// arguments, so the first Start on a machine keeps a copy of the new cluster in the user's cache
// directory (about 40 MB) and later Starts copy it instead, which takes a fraction of the time. A copy is
// never started itself, so it stays exactly what initdb produced.

// clusterCacheDir returns the directory holding the copies; a variable so tests can move it.
var clusterCacheDir = func() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "pgtemp"), nil
}

const (
	cacheFormat  = "1" // change when the layout of the cache or the cluster's settings change
	cacheUnused  = 14 * 24 * time.Hour
	tmpCachePref = ".tmp-"
)

var initdbArgs = []string{"--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"}

// cachedCluster returns the cached copy of a cluster made by these binaries, or "" if there is none.
func cachedCluster(bin binaries) string {
	path, err := cachePath(bin)
	if err != nil {
		return ""
	}
	if _, err := os.Stat(filepath.Join(path, "PG_VERSION")); err != nil {
		return ""
	}
	now := time.Now()
	_ = os.Chtimes(path, now, now) // marks it used, for pruneCache
	return path
}

// saveCluster keeps a copy of a cluster initdb has just made. It is best effort: a Start that cannot
// save its cluster still works, and the next one runs initdb again.
func saveCluster(bin binaries, dataDir string) {
	path, err := cachePath(bin)
	if err != nil {
		return
	}
	parent := filepath.Dir(path)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return
	}
	pruneCache(parent, path)
	tmp, err := os.MkdirTemp(parent, tmpCachePref)
	if err != nil {
		return
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	copyDir := filepath.Join(tmp, "data")
	if err := copyTree(dataDir, copyDir, nil); err != nil {
		return
	}
	// Rename makes the copy appear whole; when another process saved one first, ours is dropped.
	_ = os.Rename(copyDir, path)
}

// cachePath names the copy after everything initdb's result depends on.
func cachePath(bin binaries) (string, error) {
	root, err := clusterCacheDir()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintln(h, cacheFormat, strings.Join(initdbArgs, " "))
	for _, path := range []string{bin.initdb, bin.postgres} {
		fi, err := os.Stat(path)
		if err != nil {
			return "", err
		}
		fmt.Fprintln(h, path, fi.Size(), fi.ModTime().UnixNano())
	}
	return filepath.Join(root, hex.EncodeToString(h.Sum(nil))[:16]), nil
}

// pruneCache removes copies made by binaries not used for two weeks and unfinished copies older than an
// hour, which a killed process may have left.
func pruneCache(parent, keep string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		path := filepath.Join(parent, e.Name())
		fi, err := e.Info()
		if err != nil || path == keep || !e.IsDir() {
			continue
		}
		age := time.Since(fi.ModTime())
		if age > cacheUnused || (strings.HasPrefix(e.Name(), tmpCachePref) && age > time.Hour) {
			_ = os.RemoveAll(path)
		}
	}
}

// copyTree copies the directory src to dst, which must not exist, keeping permission bits. skip, when
// set, names entries to leave out (by their path relative to src) and says that src is in use: a file
// that vanishes during the copy is left out too.
func copyTree(src, dst string, skip func(rel string) bool) error {
	gone := func(err error) bool { return skip != nil && errors.Is(err, fs.ErrNotExist) }
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if gone(err) {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if skip != nil && rel != "." && skip(rel) {
			return nil
		}
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			if gone(err) {
				return nil
			}
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(target, fi.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			if err := copyFile(path, target, fi.Mode().Perm()); err != nil && !gone(err) {
				return err
			}
			return nil
		default:
			return fmt.Errorf("%s: cannot copy a %v", path, d.Type())
		}
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
