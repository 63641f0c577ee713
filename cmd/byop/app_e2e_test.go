package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/forge/forgetest"
)

// As a GitHub App, byop reports and clones with the repository's
// installation token: never the App's JWT, never a personal token.
func TestGitHubAppAuth(t *testing.T) {
	const appID, installation = 4242, 77
	s := startStack(t, func(c *config.Config, gh *forgetest.Server) {
		key, pub := forgetest.GenerateAppKey(t)
		keyFile := filepath.Join(t.TempDir(), "app.pem")
		if err := os.WriteFile(keyFile, key, 0o600); err != nil {
			t.Fatal(err)
		}
		gh.EnableApp(appID, pub, installation)
		gh.SetInstallation("Codertocat", "Hello-World", installation)
		c.GitHubToken = ""
		c.GitHubAppID, c.GitHubAppKeyFile = appID, keyFile
	})
	f := newPR(t, s)
	sha := f.push(t, "built by an App\n")
	s.deliver("pull_request", "octokit/pull_request/opened.payload.json", pullRequest(f.repo, f.pr, sha))
	if st := s.waitStatus(sha, "byop/preview", forge.StateSuccess, forge.StateFailure, forge.StateError); st.State != forge.StateSuccess {
		t.Fatalf("preview status %+v", st)
	}
	if code, body, _ := s.get(f.url); code != 200 || body != "built by an App\n" {
		t.Errorf("GET = %d %q", code, body)
	}
	tokens := s.github.InstallationTokens()
	if len(tokens) == 0 {
		t.Fatal("no installation token was issued")
	}
	var used []string
	for _, tok := range tokens {
		used = append(used, tok.Used...)
	}
	if !strings.Contains(strings.Join(used, " "), "statuses/"+sha) {
		t.Errorf("installation tokens were used for %v, want the statuses", used)
	}
	reqs := s.git.Requests()
	if len(reqs) == 0 || !reqs[len(reqs)-1].AuthSent || reqs[len(reqs)-1].Status != 200 {
		t.Errorf("git requests %+v, want the clone authenticated with an installation token", reqs)
	}
	if c := s.github.Comments("Codertocat", "Hello-World", f.pr); len(c) != 1 || c[0].Author != forgetest.AppSlug+"[bot]" {
		t.Errorf("comments %+v, want one by the App's bot", c)
	}
	if errs := s.github.Errors(); len(errs) > 0 {
		t.Errorf("requests the fake GitHub rejected: %v", errs)
	}
}
