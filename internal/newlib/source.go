package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// snapshot is the template's files at one version, in a directory.
type snapshot struct {
	dir     string
	version templateVersion
}

// A source gives the template's files at a version.
type source interface {
	// at returns the files at rev: a version or a git revision; "" for the
	// newest (the module's latest version, or a directory's work tree).
	at(rev string) (snapshot, error)
	String() string
}

// proxySource downloads the template through the go command: from the
// module proxy (GOPROXY), into the module cache.
type proxySource struct {
	module string
	tmp    string // a directory outside any module, to run the go command in
	env    []string
}

func (s proxySource) String() string { return "the module proxy (" + s.module + ")" }

func (s proxySource) at(rev string) (snapshot, error) {
	if rev == "" {
		rev = "latest"
	}
	// Outside any module, so that no go.mod or go.work of the copy's is read or changed.
	cmd := goExec(s.tmp, s.env, "mod", "download", "-json", s.module+"@"+rev)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var m struct{ Dir, Version, Error string }
	if jerr := json.Unmarshal(out, &m); jerr != nil || m.Error != "" || m.Dir == "" {
		msg := m.Error
		if msg == "" && err != nil {
			msg = err.Error()
		}
		return snapshot{}, fmt.Errorf("downloading the template %s@%s: %s; check the version, GOPROXY and GOPRIVATE, or pass -template with a clone of it", s.module, rev, strings.TrimSpace(msg))
	}
	return snapshot{dir: m.Dir, version: templateVersion{Module: s.module, Version: m.Version, Clean: true}}, nil
}

// dirSource is a template on disk: its work tree as it is, or any revision
// of its git repository.
type dirSource struct {
	dir    string
	module string
	tmp    string // where revisions are unpacked
}

func (s dirSource) String() string { return s.dir }

func (s dirSource) at(rev string) (snapshot, error) {
	if rev == "" {
		return snapshot{dir: s.dir, version: versionOf(s.dir, s.module)}, nil
	}
	v, err := gitVersion(s.dir, rev, s.module)
	if err != nil {
		return snapshot{}, fmt.Errorf("the template in %s has no revision %s: %w", s.dir, rev, err)
	}
	dir, err := os.MkdirTemp(s.tmp, "template-")
	if err != nil {
		return snapshot{}, err
	}
	if err := gitArchive(s.dir, rev, dir); err != nil {
		return snapshot{}, err
	}
	return snapshot{dir: dir, version: templateVersion{Module: s.module, Version: v, Clean: true}}, nil
}

// gitArchive writes the files of the module in repo (which may lie in a
// subdirectory of its repository) at revision rev into dir.
func gitArchive(repo, rev, dir string) error {
	prefix, err := git(repo, "rev-parse", "--show-prefix")
	if err != nil {
		return err
	}
	sub := strings.TrimSpace(string(prefix))
	cmd := exec.Command("git", "-C", repo, "archive", "--format=tar", rev+":"+sub)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	terr := untar(pipe, dir)
	_, _ = io.Copy(io.Discard, pipe)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git archive %s in %s: %w: %s", rev, repo, err, strings.TrimSpace(stderr.String()))
	}
	return terr
}

// untar writes a tar stream's files, directories and symbolic links into dir.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !inside(name, dir) {
			return fmt.Errorf("the archive names %s, outside the directory it unpacks into", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(name, 0o755)
		case tar.TypeSymlink:
			if err = os.MkdirAll(filepath.Dir(name), 0o755); err == nil {
				err = os.Symlink(h.Linkname, name)
			}
		case tar.TypeReg:
			err = writeFrom(name, tr, h.FileInfo().Mode().Perm())
		}
		if err != nil {
			return err
		}
	}
}

func writeFrom(name string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	return errors.Join(err, f.Close())
}

// vetEnv, set to "off" in newlib's environment, makes it skip go vet: newlib
// update regenerates copies only to compare them.
const vetEnv = "NEWLIB_VET"

// regenerateCopy makes the copy that the template in snap makes for module,
// with the template's own newlib, so that it is exactly what that version
// wrote (or would write) for these names. It returns the copy's directory.
func regenerateCopy(snap snapshot, module, into string, env []string) (string, error) {
	dir := filepath.Join(into, "copy")
	if _, err := os.Stat(filepath.Join(snap.dir, selfDir)); err != nil {
		return "", fmt.Errorf("the template %s@%s has no %s to make the copy with", snap.version.Module, snap.version.Version, selfDir)
	}
	out, err := goCmd(snap.dir, append(env, vetEnv+"=off"), "run", "-mod=readonly", "./"+selfDir, module, dir)
	if err != nil {
		return "", fmt.Errorf("making the copy %s with the template %s@%s: %w\n%s", module, snap.version.Module, snap.version.Version, err, out)
	}
	return dir, nil
}

// goCmd runs the go command in dir, as goExec prepares it, and returns
// its combined output.
func goCmd(dir string, env []string, args ...string) ([]byte, error) {
	return goExec(dir, env, args...).CombinedOutput()
}

// goExec prepares the go command in dir, with env added to this
// process's environment and no workspace: a go.work around the copy would
// build something else than the copy.
func goExec(dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GOWORK=off"), env...)
	return cmd
}
