package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// templateRoot finds the module to copy: the one holding this program's
// source, else the one holding the working directory.
func templateRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if root, ok := moduleRoot(filepath.Dir(file)); ok {
			return root, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if root, ok := moduleRoot(wd); ok {
		return root, nil
	}
	return "", fmt.Errorf("no go.mod found in %s or above: run newlib from inside the library to copy", wd)
}

// moduleRoot walks up from dir to the directory holding go.mod.
func moduleRoot(dir string) (string, bool) {
	for {
		if fi, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !fi.IsDir() {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// readModulePath returns the path on the module line of root/go.mod.
func readModulePath(root string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", err
	}
	if p := modulePath(data); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("%s has no module line", filepath.Join(root, "go.mod"))
}

// modulePath parses the module directive of a go.mod file, quoted or not,
// ignoring comments; "" when there is none.
func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		line, _, _ = strings.Cut(line, "//")
		fields := strings.Fields(line)
		if len(fields) == 2 && fields[0] == "module" {
			if p, err := strconv.Unquote(fields[1]); err == nil {
				return p
			}
			return fields[1]
		}
	}
	return ""
}

// sourceFiles are the template's files, as slash-separated paths relative to
// its root, in order.
type sourceFiles struct {
	paths []string
	// untracked lists the files among paths that git does not track yet.
	untracked []string
}

// listFiles returns the files of the template at root. In a git work tree
// they are the files git tracks, and those it does not track but would (not
// ignored), so that the copy is what go build sees in the template. Elsewhere
// they are every file but .git, the paths the root .gitignore names and skip
// (the destination, when it lies inside root).
func listFiles(root, skip string) (sourceFiles, error) {
	tracked, err := gitFiles(root, "--cached")
	if err != nil || !slices.Contains(tracked, "go.mod") {
		paths, err := walkFiles(root, skip)
		return sourceFiles{paths: paths}, err
	}
	untracked, err := gitFiles(root, "--others", "--exclude-standard")
	if err != nil {
		return sourceFiles{}, err
	}
	var src sourceFiles
	for _, p := range tracked {
		// A file deleted from the work tree but not yet from the index is gone.
		if _, err := os.Lstat(filepath.Join(root, filepath.FromSlash(p))); err == nil {
			src.paths = append(src.paths, p)
		}
	}
	for _, p := range untracked {
		// A directory listed is a nested repository, not ours to copy.
		if strings.HasSuffix(p, "/") || inside(filepath.Join(root, filepath.FromSlash(p)), skip) {
			continue
		}
		src.paths = append(src.paths, p)
		src.untracked = append(src.untracked, p)
	}
	slices.Sort(src.paths)
	return src, nil
}

// inside reports whether file is dir or lies under it.
func inside(file, dir string) bool {
	rel, err := filepath.Rel(dir, file)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// gitFiles runs git ls-files in root. It fails when git is missing or root is
// not in a work tree.
func gitFiles(root string, args ...string) ([]string, error) {
	cmd := exec.Command("git", append([]string{"-C", root, "ls-files", "-z"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var files []string
	for _, p := range strings.Split(string(out), "\x00") {
		if p != "" && !slices.Contains(files, p) { // a file in a merge conflict is listed once per stage
			files = append(files, p)
		}
	}
	slices.Sort(files)
	return files, nil
}

// walkFiles lists every regular file and symbolic link under root, but .git,
// skip and what root/.gitignore ignores.
func walkFiles(root, skip string) ([]string, error) {
	ignore, err := readIgnore(filepath.Join(root, ".gitignore"))
	if err != nil {
		return nil, err
	}
	var files []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if d.Name() == ".git" || p == skip || ignore.match(rel, true) {
				return filepath.SkipDir
			}
			return nil
		}
		if ignore.match(rel, false) || !(d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0) {
			return nil
		}
		files = append(files, rel)
		return nil
	})
	return files, err
}

// ignoreRules is the subset of .gitignore that build outputs use: globs, a
// leading / to anchor at the root, a trailing / for directories only. Negation
// and ** are not supported; a line using them is skipped.
type ignoreRules []ignoreRule

type ignoreRule struct {
	pattern  string
	anchored bool // matched against the whole path, not only the last element
	dirOnly  bool
}

func readIgnore(file string) (ignoreRules, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rules ignoreRules
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "!") || strings.Contains(line, "**") {
			continue
		}
		var r ignoreRule
		line, r.dirOnly = strings.CutSuffix(line, "/")
		r.anchored = strings.Contains(line, "/")
		r.pattern = strings.TrimPrefix(line, "/")
		rules = append(rules, r)
	}
	return rules, sc.Err()
}

func (rules ignoreRules) match(rel string, isDir bool) bool {
	for _, r := range rules {
		if r.dirOnly && !isDir {
			continue
		}
		name := path.Base(rel)
		if r.anchored {
			name = rel
		}
		if ok, _ := path.Match(r.pattern, name); ok {
			return true
		}
	}
	return false
}
