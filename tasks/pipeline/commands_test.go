package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/buildkit"
	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/previews"
	"github.com/byop-dev/byop/tasks"
)

func statusesOn(h *harness, sha, context string) []forge.Status {
	h.github.mu.Lock()
	defer h.github.mu.Unlock()
	var out []forge.Status
	for _, s := range h.github.statuses {
		if s.SHA == sha && s.Context == context {
			out = append(out, s)
		}
	}
	return out
}

func forkPayload(sha, author string) tasks.DeployPayload {
	p := payload(sha)
	p.HeadRepo, p.Author = "mallory/Web", author
	return p
}

func TestTrust(t *testing.T) {
	tests := []struct {
		name   string
		pl     func() tasks.DeployPayload
		perm   string
		builds bool
	}{
		{"a branch of the repository itself builds", func() tasks.DeployPayload { return payload(shaA) }, "", true},
		{"a fork by a writer builds", func() tasks.DeployPayload { return forkPayload(shaA, "wendy") }, "write", true},
		{"a fork by a maintainer builds", func() tasks.DeployPayload { return forkPayload(shaA, "wendy") }, "maintain", true},
		{"a fork by a reader waits", func() tasks.DeployPayload { return forkPayload(shaA, "mallory") }, "read", false},
		{"a deleted fork waits", func() tasks.DeployPayload { p := forkPayload(shaA, "x"); p.HeadRepo = ""; return p }, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			pl := tt.pl()
			h.github.perms[pl.Author] = tt.perm
			if err := h.p.deploy(context.Background(), "d", pl, deployOptions{}); err != nil {
				t.Fatal(err)
			}
			if built := len(h.builder.specs) == 1; built != tt.builds {
				t.Fatalf("built = %v, want %v", built, tt.builds)
			}
			if !tt.builds {
				st := statusesOn(h, shaA, ContextBuild)
				if len(st) != 1 || st[0].State != forge.StatePending || !strings.Contains(st[0].Description, "/ok-to-test") {
					t.Errorf("statuses %+v, want pending waiting for /ok-to-test", st)
				}
				if !strings.Contains(h.github.comments[1], "waiting for `/ok-to-test`") {
					t.Errorf("comment %q", h.github.comments[1])
				}
			}
		})
	}
}

func TestOKToTestBindsToTheHead(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	key := previews.Key{Owner: "Acme", Repo: "Web", PR: 7}
	h.store.Approve(ctx, key, shaA, "wendy")
	h.p.deploy(ctx, "a", forkPayload(shaA, "mallory"), deployOptions{})
	h.p.deploy(ctx, "b", forkPayload(shaB, "mallory"), deployOptions{})
	if len(h.builder.specs) != 1 || h.builder.specs[0].Labels["org.opencontainers.image.revision"] != shaA {
		t.Fatalf("built %d, want only the approved head", len(h.builder.specs))
	}
	// With the once-per-PR setting, the approval carries over.
	h.p.Settings.TrustOncePerPR = true
	h.p.deploy(ctx, "c", forkPayload(shaB, "mallory"), deployOptions{})
	if len(h.builder.specs) != 2 {
		t.Errorf("built %d, want the new head built under once-per-PR trust", len(h.builder.specs))
	}
}

func TestOlderWorkIsSuperseded(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	older, newer := payload(shaA), payload(shaB)
	if err := h.p.deploy(ctx, "new", newer, deployOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := h.p.deploy(ctx, "old", older, deployOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(h.builder.specs) != 1 {
		t.Errorf("built %d times, want only the newer head", len(h.builder.specs))
	}
	for _, c := range []string{ContextBuild, ContextPreview} {
		st := statusesOn(h, shaA, c)
		if len(st) != 1 || st[0].State != forge.StateError || st[0].Description != "Superseded by bbbbbbb" {
			t.Errorf("%s on the older head: %+v", c, st)
		}
	}
}

// blockingBuilder holds builds until ctx ends, to be cancelled.
type blockingBuilder struct{ started chan string }

func (b *blockingBuilder) Build(ctx context.Context, s buildkit.Spec) (buildkit.Result, error) {
	b.started <- s.Labels["org.opencontainers.image.revision"]
	<-ctx.Done()
	return buildkit.Result{}, ctx.Err()
}

func TestNewerPushCancelsTheBuildInFlight(t *testing.T) {
	h := newHarness(t)
	bb := &blockingBuilder{started: make(chan string, 1)}
	h.p.Builder = bb
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() { errc <- h.p.deploy(ctx, "a", payload(shaA), deployOptions{}) }()
	<-bb.started
	h.p.Builder = h.builder // the newer one builds normally
	if err := h.p.deploy(ctx, "b", payload(shaB), deployOptions{}); err != nil {
		t.Fatal(err)
	}
	err := <-errc
	if !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("cancelled deploy returned %v, want SkipRetry", err)
	}
	st := statusesOn(h, shaA, ContextBuild)
	if last := st[len(st)-1]; last.State != forge.StateError || last.Description != "Superseded by bbbbbbb" {
		t.Errorf("older head's build status %+v", last)
	}
	b, _ := h.store.Build(ctx, 1)
	if b.State != previews.Cancelled {
		t.Errorf("older build %+v, want cancelled", b)
	}
	if got := h.router.routes["pr-7.web.acme.preview.example"]; got == "" {
		t.Error("the newer head is not routed")
	}
}

func commandTask(t *testing.T, cmd, user string) *asynq.Task {
	t.Helper()
	task, err := tasks.NewPreviewCommandTask(tasks.CommandPayload{Owner: "Acme", Repo: "Web", PR: 7, CommentID: 55, User: user, Command: cmd,
		CloneURL: "https://git.example/Acme/Web.git", Seq: seq.Add(1)}, "comment-"+cmd+user, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name      string
		cmd, user string
		prState   string
		reactions string
		reply     string
		builds    int // builds after the initial deploy
		deploys   int
	}{
		{"help from anyone", "help", "stranger", "open", "eyes rocket", "/redeploy", 0, 0},
		{"redeploy by a writer reuses the image", "redeploy", "wendy", "open", "eyes rocket", "", 0, 1},
		{"rebuild by a writer builds without cache", "rebuild", "wendy", "open", "eyes rocket", "", 1, 1},
		{"a reader is refused", "redeploy", "reed", "open", "eyes confused", "needs write permission", 0, 0},
		{"a closed PR is refused", "redeploy", "wendy", "closed", "eyes confused", "is closed", 0, 0},
		{"destroy removes the preview", "destroy", "wendy", "open", "eyes rocket", "", 0, 0},
		{"ok-to-test trusts and builds the head", "ok-to-test", "wendy", "open", "eyes rocket", "", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			h.github.perms = map[string]string{"wendy": "write", "reed": "read"}
			h.github.pr = forge.PullRequest{Number: 7, State: tt.prState, HeadSHA: shaA, HeadRepo: "Acme/Web", Author: "alice"}
			if tt.cmd == "ok-to-test" {
				h.github.pr.HeadRepo, h.github.pr.Author = "mallory/Web", "mallory"
			} else if err := h.p.HandleDeploy(ctx, deployTask(t, shaA)); err != nil {
				t.Fatal(err)
			}
			builds, deploys := len(h.builder.specs), len(h.runner.deployed)
			h.p.HandleCommand(ctx, commandTask(t, tt.cmd, tt.user))

			if got := strings.Join(h.github.reactions, " "); got != tt.reactions {
				t.Errorf("reactions %q, want %q", got, tt.reactions)
			}
			if tt.reply == "" && len(h.github.replies) != 0 || tt.reply != "" && (len(h.github.replies) != 1 || !strings.Contains(h.github.replies[0], tt.reply)) {
				t.Errorf("replies %q, want one containing %q", h.github.replies, tt.reply)
			}
			if n := len(h.builder.specs) - builds; n != tt.builds {
				t.Errorf("%d builds, want %d", n, tt.builds)
			}
			if n := len(h.runner.deployed) - deploys; n != tt.deploys {
				t.Errorf("%d deploys, want %d", n, tt.deploys)
			}
			if tt.cmd == "rebuild" && !h.builder.specs[len(h.builder.specs)-1].NoCache {
				t.Error("rebuild used the cache")
			}
			if tt.cmd == "destroy" {
				if len(h.runner.torn) != 1 || len(h.router.routes) != 0 || !strings.Contains(h.github.comments[1], "Destroyed") {
					t.Errorf("destroy: torn %v routes %v comment %q", h.runner.torn, h.router.routes, h.github.comments[1])
				}
			}
		})
	}
}

func TestCommandWithoutGitHubDoesNothing(t *testing.T) {
	h := newHarness(t)
	h.p.Reporter = nil
	if err := h.p.HandleCommand(context.Background(), commandTask(t, "destroy", "wendy")); err != nil {
		t.Fatal(err)
	}
	if len(h.runner.torn) != 0 {
		t.Error("a command ran without a way to check who gave it")
	}
}

func TestPushBuildsWithoutPreview(t *testing.T) {
	h := newHarness(t)
	task, _ := tasks.NewImageBuildTask(tasks.BuildPayload{Owner: "Acme", Repo: "Web", SHA: shaA, Ref: "refs/heads/main", CloneURL: "https://git.example/Acme/Web.git"}, "push-1", time.Minute)
	if err := h.p.HandleBuild(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if len(h.builder.specs) != 1 || h.builder.specs[0].Image != "reg:5000/byop/acme/web:"+shaA {
		t.Errorf("builds %+v", h.builder.specs)
	}
	if len(h.runner.deployed) != 0 || len(h.github.comments) != 0 || len(statusesOn(h, shaA, ContextPreview)) != 0 {
		t.Error("a push made a preview")
	}
	if st := statusesOn(h, shaA, ContextBuild); len(st) != 2 || st[1].State != forge.StateSuccess {
		t.Errorf("build statuses %+v", st)
	}
}

func TestInstallSync(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	add, _ := tasks.NewInstallSyncTask(tasks.InstallPayload{Added: []string{"Acme/Web", "Acme/Api"}}, "i1")
	rm, _ := tasks.NewInstallSyncTask(tasks.InstallPayload{Removed: []string{"acme/api"}}, "i2")
	h.p.HandleInstallSync(ctx, add)
	h.p.HandleInstallSync(ctx, rm)
	for repo, want := range map[string]bool{"acme/web": true, "Acme/Api": false, "other/x": false} {
		if got, _ := h.store.Installed(ctx, repo); got != want {
			t.Errorf("Installed(%s) = %v, want %v", repo, got, want)
		}
	}
}

func TestLimiterBoundsBuilds(t *testing.T) {
	var l limiter
	ctx := context.Background()
	r1, _ := l.acquire(ctx, "a/x", 2, 1)
	// The same repository waits; another repository has room.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := l.acquire(short, "a/x", 2, 1); err == nil {
		t.Error("a second build of a/x started past the per-repository bound")
	}
	r2, err := l.acquire(ctx, "b/y", 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Both global slots are taken now.
	short2, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if _, err := l.acquire(short2, "c/z", 2, 1); err == nil {
		t.Error("a third build started past the global bound")
	}
	r1()
	r3, err := l.acquire(ctx, "a/x", 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	r2()
	r3()

}
