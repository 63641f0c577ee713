package forge_test

import (
	"context"
	"strings"
	"testing"

	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/forge/forgetest"
)

func TestPullRequest(t *testing.T) {
	tests := []struct {
		name string
		pr   forge.PullRequest
	}{
		{
			name: "a branch of the same repository",
			pr:   forge.PullRequest{Number: 7, State: "open", HeadSHA: sha, HeadRef: "feature", HeadRepo: "acme/app", BaseRepo: "acme/app", Author: "alice"},
		},
		{
			name: "a fork's branch",
			pr:   forge.PullRequest{Number: 8, State: "open", HeadSHA: sha, HeadRef: "main", HeadRepo: "mallory/app", BaseRepo: "acme/app", Author: "mallory"},
		},
		{
			name: "a closed draft whose fork was deleted",
			pr:   forge.PullRequest{Number: 9, State: "closed", Draft: true, HeadSHA: sha, HeadRef: "wip", BaseRepo: "acme/app", Author: "bob"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := forgetest.NewServer(t)
			s.SetPullRequest("acme", "app", tt.pr)
			c, _ := newClient(t, s)
			got, err := c.PullRequest(context.Background(), "acme", "app", tt.pr.Number)
			if err != nil {
				t.Fatalf("PullRequest: %v", err)
			}
			if got != tt.pr {
				t.Errorf("PullRequest = %+v, want %+v", got, tt.pr)
			}
			noErrors(t, s)
		})
	}
}

func TestPullRequestNotFound(t *testing.T) {
	s := forgetest.NewServer(t)
	s.SetPullRequest("acme", "app", forge.PullRequest{Number: 1, HeadSHA: sha, HeadRef: "x", HeadRepo: "acme/app", Author: "alice"})
	c, _ := newClient(t, s)
	for _, where := range []struct{ repo string }{{"app"}, {"other"}} {
		_, err := c.PullRequest(context.Background(), "acme", where.repo, 99)
		if !forge.IsNotFound(err) {
			t.Errorf("acme/%s#99: err = %v, want a not-found error", where.repo, err)
		}
		if want := "getting pull request acme/" + where.repo + "#99: "; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("err = %v, want prefix %q", err, want)
		}
	}
	if forge.IsNotFound(nil) {
		t.Error("IsNotFound(nil) is true")
	}
	noErrors(t, s) // a 404 for a missing pull request is an answer, not a rejected request
}

func TestPullRequestWithAppAuth(t *testing.T) {
	s := forgetest.NewServer(t)
	a := newAppClient(t, s)
	want := forge.PullRequest{Number: 4, State: "open", HeadSHA: sha, HeadRef: "f", HeadRepo: "ext/app", BaseRepo: "acme/app", Author: "eve"}
	s.SetPullRequest("acme", "app", want)
	got, err := a.c.PullRequest(context.Background(), "acme", "app", 4)
	if err != nil || got != want {
		t.Errorf("PullRequest = %+v, %v; want %+v", got, err, want)
	}
	if toks := s.InstallationTokens(); len(toks) != 1 || len(toks[0].Used) != 1 || toks[0].Used[0] != "GET /repos/acme/app/pulls/4" {
		t.Errorf("tokens = %+v, want one used for the pull request", toks)
	}
	noErrors(t, s)
}
