package githttp_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/byop-dev/byop/internal/githttp"
	"github.com/byop-dev/byop/internal/gitrepo"
)

// start serves a fresh root with one repository octo/hello: a commit on
// main, refs/pull/7/head at a second commit, and a third commit that no ref
// points at. It returns the server and the three shas.
func start(t *testing.T, o githttp.Options) (*githttp.Server, []string) {
	t.Helper()
	ctx := context.Background()
	s, err := githttp.Start(filepath.Join(t.TempDir(), "git"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	r, err := s.CreateRepo(ctx, "octo/hello", "main")
	if err != nil {
		t.Fatal(err)
	}
	shas, err := r.Import(ctx, []gitrepo.Commit{
		{Ref: "refs/heads/main", Message: "main", Files: map[string][]byte{"a": []byte("main")}},
		{Ref: "refs/pull/7/head", Parent: ":1", Message: "pr", Files: map[string][]byte{"a": []byte("pr")}},
		{Ref: "refs/heads/gone", Parent: ":1", Message: "unreferenced", Files: map[string][]byte{"a": []byte("gone")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteRef(ctx, "refs/heads/gone"); err != nil {
		t.Fatal(err)
	}
	return s, shas
}

// fetch fetches rev from url into a new repository and returns the content
// of file a at FETCH_HEAD. It speaks protocol v0, where upload-pack checks
// wants against uploadpack.allowAnySHA1InWant (as go-git, byop's client,
// does; v2 serves any object).
func fetch(t *testing.T, url, rev string) (string, error) {
	t.Helper()
	ctx := context.Background()
	r, err := gitrepo.InitBare(ctx, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Git(ctx, nil, "-c", "protocol.version=0", "fetch", "--quiet", url, rev); err != nil {
		return "", err
	}
	return r.Git(ctx, nil, "show", "FETCH_HEAD:a")
}

func TestAGitClientFetchesBranchesAndPullRequestRefs(t *testing.T) {
	s, shas := start(t, githttp.Options{})
	url := s.CloneURL("octo/hello")
	if url != s.URL()+"/octo/hello.git" {
		t.Errorf("CloneURL = %s, want the repository under %s", url, s.URL())
	}
	refs, err := gitrepo.Run(context.Background(), "", nil, "ls-remote", url)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{shas[0] + "\trefs/heads/main", shas[1] + "\trefs/pull/7/head"} {
		if !strings.Contains(refs, want) {
			t.Errorf("ls-remote lacks %q:\n%s", want, refs)
		}
	}
	if strings.Contains(refs, shas[2]) {
		t.Errorf("ls-remote shows the unreferenced commit:\n%s", refs)
	}
	if got, err := fetch(t, url, "refs/pull/7/head"); err != nil || got != "pr" {
		t.Errorf("fetching refs/pull/7/head: a = %q, %v; want pr", got, err)
	}
}

func TestCommitsNoRefPointsAtAreServedOnlyWhenAllowed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		allow bool
	}{{"allowed", true}, {"refused", false}} {
		t.Run(tc.name, func(t *testing.T) {
			s, shas := start(t, githttp.Options{AnySHA1InWant: tc.allow})
			got, err := fetch(t, s.CloneURL("octo/hello"), shas[2])
			if tc.allow && (err != nil || got != "gone") {
				t.Errorf("fetching the unreferenced commit: a = %q, %v; want gone", got, err)
			}
			if !tc.allow && err == nil {
				t.Error("the unreferenced commit was served")
			}
		})
	}
}

func TestCreateRepoRefusesNamesOutsideOwnerSlashName(t *testing.T) {
	root := t.TempDir()
	for _, name := range []string{"hello", "octo/hello/more", "../hello", "octo/..", "octo/he llo", ""} {
		if _, err := githttp.CreateRepo(context.Background(), root, name, ""); err == nil {
			t.Errorf("CreateRepo(%q) made a repository", name)
		}
	}
}

func TestCloseStopsServing(t *testing.T) {
	s, _ := start(t, githttp.Options{})
	s.Close()
	resp, err := http.Get(s.CloneURL("octo/hello") + "/info/refs?service=git-upload-pack")
	if err == nil {
		resp.Body.Close()
		t.Errorf("after Close: %s, want no answer", resp.Status)
	}
}
