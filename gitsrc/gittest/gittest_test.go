package gittest_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/byop-dev/byop/gitsrc/gittest"
	"github.com/byop-dev/byop/internal/gitrepo"
)

// git runs the real git client with no user configuration.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := gitrepo.Run(context.Background(), dir, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCommitsAreServedToAGitClient(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.CreateRepo(t, "octo/hello")
	first := repo.Commit(t, "main", map[string]string{"a.txt": "one", "dir/b.txt": "bee"}, "first")
	second := repo.Commit(t, "main", map[string]string{"a.txt": "two", "dir/b.txt": gittest.Delete, "empty": ""}, "second")
	repo.SetRef(t, "refs/pull/7/head", first)

	dir := filepath.Join(t.TempDir(), "clone")
	git(t, "", "clone", "--quiet", repo.CloneURL(), dir)

	if got := git(t, dir, "rev-parse", "HEAD"); got != second {
		t.Errorf("clone HEAD = %s, want the branch tip %s", got, second)
	}
	if got := git(t, dir, "rev-parse", "HEAD^"); got != first {
		t.Errorf("second commit's parent = %s, want %s", got, first)
	}
	if got := git(t, dir, "show", "HEAD:a.txt"); got != "two" {
		t.Errorf("a.txt = %q, want %q", got, "two")
	}
	if _, err := os.Stat(filepath.Join(dir, "dir", "b.txt")); !os.IsNotExist(err) {
		t.Errorf("dir/b.txt still exists after Delete (stat error %v)", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "empty")); err != nil || len(b) != 0 {
		t.Errorf("empty = %q, %v; want an empty file", b, err)
	}
	if got := git(t, dir, "ls-remote", "origin", "refs/pull/7/head"); !strings.HasPrefix(got, first) {
		t.Errorf("ls-remote refs/pull/7/head = %q, want %s", got, first)
	}
	if got := git(t, dir, "log", "-1", "--format=%s"); got != "second" {
		t.Errorf("commit message = %q, want %q", got, "second")
	}
}

func TestCommitOnANewBranchStartsFromNothing(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.CreateRepo(t, "octo/hello")
	repo.Commit(t, "main", map[string]string{"a.txt": "one"}, "first")
	other := repo.Commit(t, "other", map[string]string{"b.txt": "bee"}, "root")

	dir := t.TempDir()
	git(t, dir, "init", "--quiet")
	git(t, dir, "fetch", "--quiet", repo.CloneURL(), "refs/heads/other")
	if got := git(t, dir, "rev-list", "--count", other); got != "1" {
		t.Errorf("commits reachable from the new branch = %s, want 1", got)
	}
	if got := git(t, dir, "ls-tree", "--name-only", other); got != "b.txt" {
		t.Errorf("files in the new branch = %q, want only b.txt", got)
	}
}

func TestTokenIsRequiredAndPasswordNotRecorded(t *testing.T) {
	const token = "s3cret-token-value"
	srv := gittest.NewServer(t, gittest.WithToken(token))
	repo := srv.CreateRepo(t, "octo/private")
	repo.Commit(t, "main", map[string]string{"a": "a"}, "c")

	resp, err := http.Get(repo.CloneURL() + "/info/refs?service=git-upload-pack")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no auth: status %d, want 401", resp.StatusCode)
	}

	req, _ := http.NewRequest(http.MethodGet, repo.CloneURL()+"/info/refs?service=git-upload-pack", nil)
	req.SetBasicAuth("x-access-token", token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("right token: status %d, want 200", resp.StatusCode)
	}

	reqs := srv.Requests()
	if len(reqs) != 2 {
		t.Fatalf("recorded %d requests, want 2: %+v", len(reqs), reqs)
	}
	if reqs[0].AuthSent || reqs[0].Status != http.StatusUnauthorized {
		t.Errorf("first request recorded as %+v, want no auth and 401", reqs[0])
	}
	if !reqs[1].AuthSent || reqs[1].User != "x-access-token" || reqs[1].Path != "/octo/private.git/info/refs" {
		t.Errorf("second request recorded as %+v, want user x-access-token on /octo/private.git/info/refs", reqs[1])
	}
	for _, r := range reqs {
		if strings.Contains(r.User+r.Path+r.Query, token) {
			t.Errorf("recorded request %+v holds the token", r)
		}
	}
}
