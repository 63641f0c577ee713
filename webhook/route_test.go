package webhook

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/byop-dev/byop/tasks"
)

// edited loads a real delivery and changes it before signing.
func edited(t *testing.T, file string, edit func(map[string]any)) []byte {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(load(t, file), &p); err != nil {
		t.Fatal(err)
	}
	edit(p)
	b, _ := json.Marshal(p)
	return b
}

func setBody(body string) func(map[string]any) {
	return func(p map[string]any) { p["comment"].(map[string]any)["body"] = body }
}

func TestCommentsPushesAndInstallations(t *testing.T) {
	tests := []struct {
		name  string
		event string
		body  []byte
		typ   string // "" when nothing is queued
		check func(t *testing.T, payload []byte)
	}{
		{"/redeploy on a PR queues the command", "issue_comment", edited(t, "prow/lgtm_comment.json", setBody("Please\n/redeploy")), tasks.TypePreviewCommand,
			func(t *testing.T, b []byte) {
				var p tasks.CommandPayload
				json.Unmarshal(b, &p)
				if p.Command != "redeploy" || p.PR != 947 || p.User != "spxtr" || p.CommentID == 0 || p.Owner != "kubernetes" || p.Seq == 0 {
					t.Errorf("payload %+v", p)
				}
			}},
		{"/byop with an unknown word asks for help", "issue_comment", edited(t, "prow/lgtm_comment.json", setBody("/byop frob")), tasks.TypePreviewCommand,
			func(t *testing.T, b []byte) {
				var p tasks.CommandPayload
				json.Unmarshal(b, &p)
				if p.Command != "help" || p.Unknown != "frob" {
					t.Errorf("payload %+v", p)
				}
			}},
		{"another bot's /lgtm is ignored", "issue_comment", load(t, "prow/lgtm_comment.json"), "", nil},
		{"a comment on an issue is ignored", "issue_comment", edited(t, "octokit/issue_comment/created.payload.json", setBody("/redeploy")), "", nil},
		{"an edited comment is ignored", "issue_comment", edited(t, "prow/lgtm_comment.json", func(p map[string]any) { p["action"] = "edited"; setBody("/destroy")(p) }), "", nil},
		{"a bot's own comment is ignored", "issue_comment", edited(t, "prow/lgtm_comment.json", func(p map[string]any) {
			setBody("/redeploy")(p)
			p["comment"].(map[string]any)["user"].(map[string]any)["type"] = "Bot"
		}), "", nil},
		{"byop's login is ignored", "issue_comment", edited(t, "prow/lgtm_comment.json", func(p map[string]any) {
			setBody("/redeploy")(p)
			p["comment"].(map[string]any)["user"].(map[string]any)["login"] = "byop-bot"
		}), "", nil},
		{"push to the default branch builds it", "push", load(t, "octokit/push/with-new-branch.payload.json"), tasks.TypeImageBuild,
			func(t *testing.T, b []byte) {
				var p tasks.BuildPayload
				json.Unmarshal(b, &p)
				if p.Ref != "refs/heads/master" || !strings.HasPrefix(p.SHA, "6113728f") || p.Owner != "Codertocat" {
					t.Errorf("payload %+v", p)
				}
			}},
		{"push whose owner has only a name", "push", load(t, "prow/push.json"), tasks.TypeImageBuild,
			func(t *testing.T, b []byte) {
				var p tasks.BuildPayload
				json.Unmarshal(b, &p)
				if p.Owner != "kubernetes" {
					t.Errorf("payload %+v", p)
				}
			}},
		{"a tag deletion is ignored", "push", load(t, "octokit/push/payload.json"), "", nil},
		{"push to another branch is ignored", "push", edited(t, "octokit/push/with-new-branch.payload.json", func(p map[string]any) { p["ref"] = "refs/heads/feature" }), "", nil},
		{"a tag push is ignored", "push", edited(t, "octokit/push/with-new-branch.payload.json", func(p map[string]any) { p["ref"] = "refs/tags/v1" }), "", nil},
		{"an App installed on repositories records them", "installation", load(t, "octokit/installation/created.payload.json"), tasks.TypeInstallSync,
			func(t *testing.T, b []byte) {
				var p tasks.InstallPayload
				json.Unmarshal(b, &p)
				if len(p.Added) != 1 || p.Added[0] != "Codertocat/Hello-World" {
					t.Errorf("payload %+v", p)
				}
			}},
		{"repositories added", "installation_repositories", load(t, "octokit/installation_repositories/added.payload.json"), tasks.TypeInstallSync, nil},
		{"repositories removed", "installation_repositories", load(t, "octokit/installation_repositories/removed.payload.json"), tasks.TypeInstallSync,
			func(t *testing.T, b []byte) {
				var p tasks.InstallPayload
				json.Unmarshal(b, &p)
				if len(p.Removed) != 1 || p.Removed[0] != "octocat/Hello-World" || len(p.Added) != 0 {
					t.Errorf("payload %+v", p)
				}
			}},
		{"uninstalled removes them", "installation", load(t, "octokit/installation/deleted.payload.json"), tasks.TypeInstallSync, nil},
		{"draft PR gets no preview", "pull_request", edited(t, "octokit/pull_request/opened.payload.json", func(p map[string]any) { p["pull_request"].(map[string]any)["draft"] = true }), "", nil},
		{"converted to draft needs nothing", "pull_request", load(t, "octokit/pull_request/converted_to_draft.payload.json"), "", nil},
		{"ready for review builds", "pull_request", load(t, "octokit/pull_request/ready_for_review.payload.json"), tasks.TypePreviewDeploy, nil},
		{"fork PR carries the head repository and author", "pull_request", load(t, "prow/reopened_pr.json"), tasks.TypePreviewDeploy,
			func(t *testing.T, b []byte) {
				var p tasks.DeployPayload
				json.Unmarshal(b, &p)
				if p.HeadRepo != "spxtr/test-infra" || p.Author == "" || p.Seq == 0 {
					t.Errorf("payload %+v", p)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &fakeQueue{}
			h := newHandler(t, q)
			h.opts.BotLogin = "byop-bot"
			rec := signed(tt.event, tt.body).send(h)
			if rec.Code != 202 {
				t.Fatalf("got %d %s", rec.Code, rec.Body)
			}
			got := q.queued()
			if tt.typ == "" {
				if len(got) != 0 {
					t.Fatalf("queued %s, want nothing", got[0].Type())
				}
				return
			}
			if len(got) != 1 || got[0].Type() != tt.typ {
				t.Fatalf("queued %v, want one %s", got, tt.typ)
			}
			if tt.check != nil {
				tt.check(t, got[0].Payload())
			}
		})
	}
}

func TestDraftsAllowedBySetting(t *testing.T) {
	q := &fakeQueue{}
	h := newHandler(t, q)
	h.opts.AllowDrafts = true
	body := edited(t, "octokit/pull_request/opened.payload.json", func(p map[string]any) { p["pull_request"].(map[string]any)["draft"] = true })
	if rec := signed("pull_request", body).send(h); rec.Code != 202 || len(q.queued()) != 1 {
		t.Errorf("got %d and %d tasks, want the draft built", rec.Code, len(q.queued()))
	}
}
