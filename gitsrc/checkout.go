package gitsrc

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// copyCommit makes dir a repository holding s.SHA's commit and tree, copied
// from src as one pack, shallow at the commit when it has parents, with a
// remote "origin" at s.CloneURL. It reads src; checkoutHead does not.
func copyCommit(src storage.Storer, s Spec, dir string) error {
	want := plumbing.NewHash(s.SHA)
	commit, err := object.GetCommit(src, want)
	if err != nil {
		return fmt.Errorf("reading fetched commit %s: %w", s.SHA, err)
	}
	hashes, err := commitObjects(src, commit)
	if err != nil {
		return fmt.Errorf("listing the objects of %s: %w", s.SHA, err)
	}

	st, wt, err := workDirStorage(dir)
	if err != nil {
		return err
	}
	defer st.Close()
	repo, err := git.Init(st, wt)
	if err != nil {
		return fmt.Errorf("creating repository in %s: %w", dir, err)
	}
	if err := writePack(src, filepath.Join(dir, git.GitDirName, "objects", "pack"), hashes); err != nil {
		return fmt.Errorf("copying %s into %s: %w", s.SHA, dir, err)
	}
	if commit.NumParents() > 0 {
		if err := st.SetShallow([]plumbing.Hash{want}); err != nil {
			return fmt.Errorf("marking %s shallow: %w", s.SHA, err)
		}
	}
	if _, err := repo.CreateRemote(&gitconfig.RemoteConfig{Name: git.DefaultRemoteName, URLs: []string{s.CloneURL}}); err != nil {
		return fmt.Errorf("recording remote in %s: %w", dir, err)
	}
	return nil
}

// checkoutHead checks out s.SHA in the repository copyCommit made in dir,
// detaching HEAD at it, and verifies HEAD.
func checkoutHead(s Spec, dir string) error {
	want := plumbing.NewHash(s.SHA)
	st, wt, err := workDirStorage(dir)
	if err != nil {
		return err
	}
	defer st.Close()
	repo, err := git.Open(st, wt)
	if err != nil {
		return fmt.Errorf("opening repository in %s: %w", dir, err)
	}
	w, err := repo.Worktree()
	if err != nil {
		return fmt.Errorf("opening work tree %s: %w", dir, err)
	}
	if err := w.Checkout(&git.CheckoutOptions{Hash: want, Force: true}); err != nil {
		return fmt.Errorf("checking out %s in %s: %w", s.SHA, dir, err)
	}

	head, err := repo.Head()
	if err != nil {
		return fmt.Errorf("reading HEAD in %s: %w", dir, err)
	}
	if head.Name() != plumbing.HEAD || head.Hash() != want {
		return fmt.Errorf("checking out %s in %s: HEAD is %s at %s", s.SHA, dir, head.Name(), head.Hash())
	}
	return nil
}

// workDirStorage returns the storage of dir/.git and the work tree dir. The
// caller closes the storage.
func workDirStorage(dir string) (*filesystem.Storage, billy.Filesystem, error) {
	wt := osfs.New(dir)
	dot, err := wt.Chroot(git.GitDirName)
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	st := filesystem.NewStorageWithOptions(dot, cache.NewObjectLRUDefault(),
		filesystem.Options{KeepDescriptors: true, ExclusiveAccess: true})
	return st, wt, nil
}

// commitObjects lists the commit, its trees and its blobs (not submodules).
func commitObjects(s storer.EncodedObjectStorer, c *object.Commit) ([]plumbing.Hash, error) {
	seen := map[plumbing.Hash]bool{c.Hash: true}
	hashes := []plumbing.Hash{c.Hash}
	var walk func(h plumbing.Hash) error
	walk = func(h plumbing.Hash) error {
		if seen[h] {
			return nil
		}
		seen[h] = true
		hashes = append(hashes, h)
		t, err := object.GetTree(s, h)
		if err != nil {
			return fmt.Errorf("reading tree %s: %w", h, err)
		}
		for _, e := range t.Entries {
			switch e.Mode {
			case filemode.Dir:
				if err := walk(e.Hash); err != nil {
					return err
				}
			case filemode.Submodule:
				// A gitlink names a commit of another repository.
			default:
				if !seen[e.Hash] {
					seen[e.Hash] = true
					hashes = append(hashes, e.Hash)
				}
			}
		}
		return nil
	}
	return hashes, walk(c.TreeHash)
}

// prepareDir creates dir, or checks that it is an empty directory.
func prepareDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating work dir: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("reading work dir: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("work dir %s is not empty", dir)
	}
	return nil
}

// emptyDir removes what a failed fetch left in dir.
func emptyDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// cacheKey turns a validated clone URL into a relative cache path,
// host/owner/name.git, readable and distinct per repository: when making a
// part safe changed it, a hash of the original URL keeps keys apart.
func cacheKey(cloneURL string) string {
	u, err := url.Parse(cloneURL)
	if err != nil {
		// Validate has already parsed it; keep a stable, safe key anyway.
		return "invalid/" + shortHash(cloneURL) + ".git"
	}
	host := strings.ToLower(u.Host)
	path := strings.TrimSuffix(strings.Trim(u.Path, "/"), ".git")
	changed := false
	var parts []string
	for _, p := range append([]string{host}, strings.Split(path, "/")...) {
		safe := sanitize(p)
		if safe != p {
			changed = true
		}
		if safe != "" {
			parts = append(parts, safe)
		}
	}
	key := filepath.Join(parts...)
	if changed {
		key += "-" + shortHash(host+u.EscapedPath())
	}
	return key + ".git"
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok || (i == 0 && c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}
