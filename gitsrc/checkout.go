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

	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage"
)

// checkout makes dir a repository holding s.SHA's commit and tree (copied
// from src as one pack), with HEAD detached at it and its files checked out,
// and verifies HEAD.
func checkout(src storage.Storer, s Spec, dir string) error {
	want := plumbing.NewHash(s.SHA)
	commit, err := object.GetCommit(src, want)
	if err != nil {
		return fmt.Errorf("reading fetched commit %s: %w", s.SHA, err)
	}
	hashes, err := commitObjects(src, commit)
	if err != nil {
		return fmt.Errorf("listing the objects of %s: %w", s.SHA, err)
	}

	repo, err := git.PlainInit(dir, false)
	if err != nil {
		return fmt.Errorf("creating repository in %s: %w", dir, err)
	}
	if err := copyObjects(src, repo.Storer, hashes); err != nil {
		return fmt.Errorf("copying %s into %s: %w", s.SHA, dir, err)
	}
	if commit.NumParents() > 0 {
		if err := repo.Storer.SetShallow([]plumbing.Hash{want}); err != nil {
			return fmt.Errorf("marking %s shallow: %w", s.SHA, err)
		}
	}
	if _, err := repo.CreateRemote(&gitconfig.RemoteConfig{Name: git.DefaultRemoteName, URLs: []string{s.CloneURL}}); err != nil {
		return fmt.Errorf("recording remote in %s: %w", dir, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return fmt.Errorf("opening work tree %s: %w", dir, err)
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: want, Force: true}); err != nil {
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

// copyObjects writes the objects into dst as a single pack, undeltified:
// compressing deltas again would cost more than the bytes it saves on a
// local disk.
func copyObjects(src storer.EncodedObjectStorer, dst storage.Storer, hashes []plumbing.Hash) (err error) {
	pfw, ok := dst.(storer.PackfileWriter)
	if !ok {
		return errors.New("destination storage cannot take a pack")
	}
	w, err := pfw.PackfileWriter()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}()
	_, err = packfile.NewEncoder(w, src, false).Encode(hashes, 0)
	return err
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
