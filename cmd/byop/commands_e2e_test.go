package main

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/gitsrc/gittest"
	"github.com/byop-dev/byop/internal/testenv"
)

// prFixture is one pull request of the sample app on a running stack.
type prFixture struct {
	s    *stack
	repo *gittest.Repo
	pr   int
	url  string
}

func newPR(t *testing.T, s *stack) *prFixture {
	t.Helper()
	repo := s.git.CreateRepo(t, "Codertocat/Hello-World")
	repo.Commit(t, "main", map[string]string{"README.md": "hello\n"}, "initial")
	n, _ := rand.Int(rand.Reader, big.NewInt(90000))
	f := &prFixture{s: s, repo: repo, pr: int(n.Int64()) + 10000}
	f.url = fmt.Sprintf("http://pr-%d.hello-world.codertocat.localhost:%d/", f.pr, portOf(s.router))
	s.removeContainersAtEnd(t, f.pr)
	return f
}

// push commits content to the pull request's branch and points its ref there.
func (f *prFixture) push(t *testing.T, content string) string {
	t.Helper()
	sha := f.repo.Commit(t, "feature", map[string]string{
		"Dockerfile": fmt.Sprintf(dockerfile, testenv.BaseImage(t)),
		"index.html": content,
	}, content)
	f.repo.SetRef(t, fmt.Sprintf("refs/pull/%d/head", f.pr), sha)
	return sha
}

// comment posts a comment on the fake GitHub and delivers its webhook.
func (f *prFixture) comment(t *testing.T, user, body string) int64 {
	t.Helper()
	id := f.s.github.AddComment("Codertocat", "Hello-World", f.pr, user, body)
	resp := f.s.deliver("issue_comment", "prow/lgtm_comment.json", func(p map[string]any) {
		p["repository"] = map[string]any{
			"name": "Hello-World", "full_name": "Codertocat/Hello-World",
			"owner":     map[string]any{"login": "Codertocat"},
			"clone_url": f.repo.CloneURL(), "html_url": "https://github.com/Codertocat/Hello-World",
		}
		p["issue"].(map[string]any)["number"] = f.pr
		c := p["comment"].(map[string]any)
		c["id"], c["body"] = id, body
		c["user"].(map[string]any)["login"] = user
	})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("comment delivery: %d", resp.StatusCode)
	}
	return id
}

func (f *prFixture) reactions(id int64) []string {
	return f.s.github.Reactions("Codertocat", "Hello-World", id)
}

func TestSlashCommandsTrustAndConcurrency(t *testing.T) {
	s := startStack(t)

	t.Run("a collaborator's /redeploy redeploys: eyes then rocket", func(t *testing.T) {
		f := newPR(t, s)
		sha := f.push(t, "redeploy me\n")
		s.github.SetPullRequest("Codertocat", "Hello-World", forge.PullRequest{Number: f.pr, State: "open", HeadSHA: sha, HeadRepo: "Codertocat/Hello-World", Author: "Codertocat"})
		s.github.SetPermission("Codertocat", "Hello-World", "wendy", "write")
		s.deliver("pull_request", "octokit/pull_request/opened.payload.json", pullRequest(f.repo, f.pr, sha))
		s.waitStatus(sha, "byop/preview", forge.StateSuccess)
		before := len(s.statuses(sha, "byop/preview"))

		id := f.comment(t, "wendy", "Let's see it again.\n/redeploy")
		s.github.WaitFor(t, "rocket on /redeploy", func() bool { return slices.Contains(f.reactions(id), "rocket") })
		if got := f.reactions(id); !slices.Equal(got, []string{"eyes", "rocket"}) {
			t.Errorf("reactions %v, want eyes then rocket", got)
		}
		st := s.statuses(sha, "byop/preview")
		if len(st) <= before || st[len(st)-1].State != forge.StateSuccess {
			t.Errorf("preview statuses after /redeploy: %+v, want a new success", st[before:])
		}
		if code, body, _ := s.get(f.url); code != 200 || body != "redeploy me\n" {
			t.Errorf("GET after /redeploy = %d %q", code, body)
		}
	})

	t.Run("a reader's /redeploy is refused and nothing runs", func(t *testing.T) {
		f := newPR(t, s)
		sha := f.push(t, "not for readers\n")
		s.github.SetPullRequest("Codertocat", "Hello-World", forge.PullRequest{Number: f.pr, State: "open", HeadSHA: sha, HeadRepo: "Codertocat/Hello-World", Author: "Codertocat"})
		s.github.SetPermission("Codertocat", "Hello-World", "reed", "read")
		id := f.comment(t, "reed", "/redeploy")
		s.github.WaitFor(t, "confused on a reader's /redeploy", func() bool { return slices.Contains(f.reactions(id), "confused") })
		comments := s.github.Comments("Codertocat", "Hello-World", f.pr)
		var replies []string
		for _, c := range comments {
			if c.ID != id {
				replies = append(replies, c.Body)
			}
		}
		if len(replies) != 1 || !strings.Contains(replies[0], "needs write permission") {
			t.Errorf("replies %q, want one saying why", replies)
		}
		if st := s.github.Statuses("Codertocat", "Hello-World", sha); len(st) != 0 {
			t.Errorf("statuses %+v: a refused command ran", st)
		}
	})

	t.Run("a fork's pull request waits for /ok-to-test", func(t *testing.T) {
		f := newPR(t, s)
		sha := f.push(t, "from a fork\n")
		s.github.SetPermission("Codertocat", "Hello-World", "mallory", "read")
		s.github.SetPermission("Codertocat", "Hello-World", "wendy", "write")
		s.github.SetPullRequest("Codertocat", "Hello-World", forge.PullRequest{Number: f.pr, State: "open", HeadSHA: sha, HeadRepo: "mallory/Hello-World", Author: "mallory"})
		s.deliver("pull_request", "prow/reopened_pr.json", func(p map[string]any) {
			p["repository"] = map[string]any{"name": "Hello-World", "full_name": "Codertocat/Hello-World", "owner": map[string]any{"login": "Codertocat"}, "clone_url": f.repo.CloneURL()}
			pr := p["pull_request"].(map[string]any)
			p["number"], pr["number"] = f.pr, f.pr
			pr["head"].(map[string]any)["sha"] = sha
			pr["head"].(map[string]any)["repo"].(map[string]any)["full_name"] = "mallory/Hello-World"
			pr["user"].(map[string]any)["login"] = "mallory"
		})
		waiting := s.waitStatus(sha, "byop/build", forge.StatePending)
		if !strings.Contains(waiting.Description, "/ok-to-test") {
			t.Fatalf("status %+v, want waiting for /ok-to-test", waiting)
		}
		if code, _, _ := s.get(f.url); code != http.StatusNotFound {
			t.Errorf("an untrusted head is served: %d", code)
		}
		id := f.comment(t, "wendy", "/ok-to-test")
		s.waitStatus(sha, "byop/preview", forge.StateSuccess, forge.StateFailure, forge.StateError)
		if code, body, _ := s.get(f.url); code != 200 || body != "from a fork\n" {
			t.Errorf("after /ok-to-test GET = %d %q", code, body)
		}
		s.github.WaitFor(t, "rocket on /ok-to-test", func() bool { return slices.Contains(f.reactions(id), "rocket") })
	})

	t.Run("two quick pushes: the newer serves, the older is superseded", func(t *testing.T) {
		f := newPR(t, s)
		older := f.push(t, "older\n")
		newer := f.push(t, "newer\n")
		s.deliver("pull_request", "octokit/pull_request/opened.payload.json", pullRequest(f.repo, f.pr, older))
		s.deliver("pull_request", "octokit/pull_request/synchronize.payload.json", pullRequest(f.repo, f.pr, newer))
		s.waitStatus(newer, "byop/preview", forge.StateSuccess)
		last := s.waitStatus(older, "byop/preview", forge.StateError, forge.StateSuccess)
		if last.State != forge.StateError || last.Description != "Superseded by "+newer[:7] {
			t.Errorf("older head's preview status %+v, want error superseded by %s", last, newer[:7])
		}
		if code, body, _ := s.get(f.url); code != 200 || body != "newer\n" {
			t.Errorf("GET = %d %q, want the newer head", code, body)
		}
		if c := s.github.Comments("Codertocat", "Hello-World", f.pr); len(c) != 1 {
			t.Errorf("%d comments, want 1", len(c))
		}
		out := dockerPS(t, "label=com.docker.compose.project="+fmt.Sprintf("byop-codertocat-hello-world-pr-%d", f.pr))
		if n := len(strings.Fields(out)); n != 1 {
			t.Errorf("%d containers for the PR, want 1: %s", n, out)
		}
	})

	t.Run("the same delivery sent twice runs once", func(t *testing.T) {
		f := newPR(t, s)
		sha := f.push(t, "once\n")
		edit := pullRequest(f.repo, f.pr, sha)
		first := s.deliverAs("pull_request", "octokit/pull_request/opened.payload.json", "same-delivery-"+rand.Text(), edit)
		second := s.deliverAs("pull_request", "octokit/pull_request/opened.payload.json", first.delivery, edit)
		if first.code != 202 || second.code != 202 || !strings.Contains(second.body, "already queued") {
			t.Fatalf("first %+v, second %+v", first, second)
		}
		s.waitStatus(sha, "byop/preview", forge.StateSuccess)
		var successes int
		for _, st := range s.statuses(sha, "byop/build") {
			if st.State == forge.StateSuccess {
				successes++
			}
		}
		if successes != 1 {
			t.Errorf("%d successful builds, want 1", successes)
		}
	})
}
