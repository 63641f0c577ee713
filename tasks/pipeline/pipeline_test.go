package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/buildkit"
	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/deployers"
	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/gitsrc"
	"github.com/byop-dev/byop/previews"
	"github.com/byop-dev/byop/registry"
	"github.com/byop-dev/byop/tasks"
)

const (
	shaA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	shaB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// Fakes that record calls. Each may be told to fail.

type fakeSource struct {
	err   error
	specs []gitsrc.Spec
}

func (f *fakeSource) Fetch(ctx context.Context, s gitsrc.Spec, dir string) error {
	f.specs = append(f.specs, s)
	if f.err != nil {
		return f.err
	}
	return os.MkdirAll(dir, 0o755)
}

type fakeBuilder struct {
	err   error
	specs []buildkit.Spec
}

func (f *fakeBuilder) Build(ctx context.Context, s buildkit.Spec) (buildkit.Result, error) {
	f.specs = append(f.specs, s)
	if s.Log != nil {
		s.Log("#1 building " + s.Image)
	}
	if f.err != nil {
		return buildkit.Result{}, f.err
	}
	return buildkit.Result{Digest: "sha256:" + strings.Repeat("d", 64)}, nil
}

type fakeImages struct{ ports []int }

func (f *fakeImages) Verify(ctx context.Context, ref, digest, revision string) (registry.Image, error) {
	repo, _, _ := strings.Cut(ref, ":"+revision)
	return registry.Image{Ref: repo + "@" + digest, Digest: digest, Labels: map[string]string{registry.RevisionLabel: revision}, Ports: f.ports}, nil
}

type fakeRunner struct {
	mu       sync.Mutex
	err      error
	deployed []deployers.Spec
	retired  []string
	torn     []string
}

func (f *fakeRunner) Deploy(ctx context.Context, s deployers.Spec) (deployers.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deployed = append(f.deployed, s)
	if f.err != nil {
		return deployers.Endpoint{}, f.err
	}
	u, _ := url.Parse("http://127.0.0.1:4" + fmt.Sprint(len(f.deployed)) + "00")
	return deployers.Endpoint{URL: u}, nil
}

func (f *fakeRunner) Retire(ctx context.Context, project, keep string) error {
	f.retired = append(f.retired, project+"@"+keep[:7])
	return nil
}

func (f *fakeRunner) Teardown(ctx context.Context, project string) error {
	f.torn = append(f.torn, project)
	return nil
}

func (f *fakeRunner) List(ctx context.Context) ([]deployers.Running, error) { return nil, nil }

type fakeRouter struct{ routes map[string]string }

func (f *fakeRouter) Set(host string, u *url.URL) { f.routes[host] = u.String() }
func (f *fakeRouter) Remove(host string)          { delete(f.routes, host) }

type fakeGitHub struct {
	mu        sync.Mutex
	statuses  []forge.Status
	comments  map[int64]string
	upserts   int
	perms     map[string]string // user -> permission
	pr        forge.PullRequest
	reactions []string
	replies   []string
}

func (f *fakeGitHub) Permission(ctx context.Context, owner, repo, user string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.perms[user]; ok {
		return p, nil
	}
	return "none", nil
}

func (f *fakeGitHub) React(ctx context.Context, owner, repo string, id int64, content string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reactions = append(f.reactions, content)
	return nil
}

func (f *fakeGitHub) Reply(ctx context.Context, owner, repo string, pr int, body string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replies = append(f.replies, body)
	return int64(100 + len(f.replies)), nil
}

func (f *fakeGitHub) PullRequest(ctx context.Context, owner, repo string, n int) (forge.PullRequest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pr, nil
}

type fakeTokens struct{}

func (fakeTokens) Token(ctx context.Context, owner, repo string) (config.Secret, error) {
	return "tok", nil
}

func (f *fakeGitHub) SetStatus(ctx context.Context, owner, repo string, s forge.Status) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses = append(f.statuses, s)
	return nil
}

func (f *fakeGitHub) UpsertComment(ctx context.Context, owner, repo string, pr int, id int64, body string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.upserts++
	if id == 0 {
		id = int64(len(f.comments) + 1)
	}
	f.comments[id] = body
	return id, nil
}

func (f *fakeGitHub) last(context string) forge.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.statuses) - 1; i >= 0; i-- {
		if f.statuses[i].Context == context {
			return f.statuses[i]
		}
	}
	return forge.Status{}
}

type harness struct {
	p       *Pipeline
	source  *fakeSource
	builder *fakeBuilder
	runner  *fakeRunner
	router  *fakeRouter
	github  *fakeGitHub
	store   *previews.Store
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	store, err := previews.Open(context.Background(), filepath.Join(dir, "byop.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := &harness{source: &fakeSource{}, builder: &fakeBuilder{}, runner: &fakeRunner{}, router: &fakeRouter{routes: map[string]string{}}, github: &fakeGitHub{comments: map[int64]string{}, perms: map[string]string{}}, store: store}
	h.p = &Pipeline{
		Source: h.source, Builder: h.builder, Images: &fakeImages{ports: []int{8080, 9000}}, Runner: h.runner,
		Router: h.router, Store: store, Reporter: h.github, Tokens: fakeTokens{}, Log: slog.New(slog.DiscardHandler),
		Settings: Settings{PublicURL: "https://byop.example/", RegistryPrefix: "reg:5000/byop", PreviewDomain: "preview.example", RouterPort: 80, WorkDir: dir},
	}
	return h
}

// seq orders the test's deliveries: each payload is newer than the last.
var seq atomic.Int64

// payload is a pull request pushed to the repository itself (trusted).
func payload(sha string) tasks.DeployPayload {
	return tasks.DeployPayload{Owner: "Acme", Repo: "Web", PR: 7, SHA: sha, Ref: "refs/pull/7/head",
		CloneURL: "https://git.example/Acme/Web.git", SourceURL: "https://git.example/Acme/Web",
		HeadRepo: "Acme/Web", Author: "alice", Seq: seq.Add(1)}
}

func deployTask(t *testing.T, sha string) *asynq.Task {
	t.Helper()
	task, err := tasks.NewPreviewDeployTask(payload(sha), "delivery-"+sha[:4], time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func TestDeployRunsThePipelineInOrder(t *testing.T) {
	h := newHarness(t)
	if err := h.p.HandleDeploy(context.Background(), deployTask(t, shaA)); err != nil {
		t.Fatal(err)
	}
	if got := h.source.specs; len(got) != 1 || got[0].SHA != shaA || got[0].Ref != "refs/pull/7/head" || got[0].Token != "tok" {
		t.Errorf("fetch %+v", got)
	}
	b := h.builder.specs[0]
	if b.Image != "reg:5000/byop/acme/web:"+shaA || b.Labels[registry.RevisionLabel] != shaA || b.Labels["org.opencontainers.image.source"] != "https://git.example/Acme/Web" {
		t.Errorf("build spec %+v: want the commit-pinned tag and labels", b)
	}
	d := h.runner.deployed[0]
	if d.Image != "reg:5000/byop/acme/web@sha256:"+strings.Repeat("d", 64) || d.Port != 8080 || d.Project != "byop-acme-web-pr-7" || d.Revision != shaA {
		t.Errorf("deploy spec %+v: want the image by digest on the first exposed port", d)
	}
	if h.router.routes["pr-7.web.acme.preview.example"] != "http://127.0.0.1:4100" {
		t.Errorf("routes %v", h.router.routes)
	}
	if fmt.Sprint(h.runner.retired) != "[byop-acme-web-pr-7@aaaaaaa]" {
		t.Errorf("retired %v, want the old revisions of the project retired after the switch", h.runner.retired)
	}
	for _, ctx := range []string{ContextBuild, ContextPreview} {
		st := h.github.last(ctx)
		if st.State != forge.StateSuccess || st.SHA != shaA || st.TargetURL != "https://byop.example/builds/1" {
			t.Errorf("%s = %+v", ctx, st)
		}
	}
	if len(h.github.comments) != 1 || !strings.Contains(h.github.comments[1], "http://pr-7.web.acme.preview.example/") {
		t.Errorf("comments %v", h.github.comments)
	}
	b1, _ := h.store.Build(context.Background(), 1)
	if b1.State != previews.Running || b1.Digest == "" {
		t.Errorf("build %+v", b1)
	}
	lines, _ := h.store.Log(context.Background(), 1, 0)
	if len(lines) == 0 || !strings.Contains(lines[0].Line, "fetching") {
		t.Errorf("log %+v", lines)
	}
}

func TestFailuresAreReportedAndThePreviousPreviewStays(t *testing.T) {
	tests := []struct {
		name       string
		breakIt    func(h *harness)
		context    string
		state      forge.State
		desc       string
		retryable  bool
		reachedRun bool
	}{
		{"a broken Dockerfile fails the build", func(h *harness) {
			h.builder.err = &buildkit.BuildError{Step: "[2/2] RUN make", Reason: "exit code: 2"}
		}, ContextBuild, forge.StateFailure, "exit code: 2", false, false},
		{"no Dockerfile", func(h *harness) {
			h.builder.err = fmt.Errorf("%w at Dockerfile in the repository", buildkit.ErrNoDockerfile)
		}, ContextBuild, forge.StateFailure, "No Dockerfile", false, false},
		{"buildkitd down is byop's error and retried", func(h *harness) {
			h.builder.err = errors.New("connection refused")
		}, ContextBuild, forge.StateError, "could not run", true, false},
		{"a commit the host does not have", func(h *harness) {
			h.source.err = fmt.Errorf("fetching: %w", gitsrc.ErrCommitNotFound)
		}, ContextBuild, forge.StateFailure, "not found", false, false},
		{"a preview host with an unknown SSH key fails the preview", func(h *harness) {
			h.runner.err = fmt.Errorf("dialing vps1: %w", deployers.ErrHostKey)
		}, ContextPreview, forge.StateFailure, "SSH host key", false, true},
		{"a full pool is byop's error, retried", func(h *harness) {
			h.runner.err = deployers.ErrPoolFull
		}, ContextPreview, forge.StateError, "No preview host has room", true, true},
		{"an app that never answers fails the preview", func(h *harness) {
			h.runner.err = fmt.Errorf("%w on port 8080 within 1m", deployers.ErrNoAnswer)
		}, ContextPreview, forge.StateFailure, "did not start", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			if err := h.p.HandleDeploy(ctx, deployTask(t, shaA)); err != nil {
				t.Fatal(err)
			}
			tt.breakIt(h)
			err := h.p.HandleDeploy(ctx, deployTask(t, shaB))
			if err == nil {
				t.Fatal("a failed deploy returned nil")
			}
			if skip := errors.Is(err, asynq.SkipRetry); skip == tt.retryable {
				t.Errorf("SkipRetry = %v, want retryable %v (err %v)", skip, tt.retryable, err)
			}
			var st forge.Status
			for _, s := range h.github.statuses {
				if s.SHA == shaB && s.Context == tt.context {
					st = s
				}
			}
			if st.State != tt.state || !strings.Contains(st.Description, tt.desc) || !strings.HasSuffix(st.TargetURL, "/builds/2") {
				t.Errorf("%s on B = %+v, want %s mentioning %q with the log link", tt.context, st, tt.state, tt.desc)
			}
			if prev := h.github.last(ContextPreview); prev.SHA == shaB && !strings.Contains(prev.Description, "aaaaaaa still serving") {
				t.Errorf("preview status %+v, want it to say A still serves", prev)
			}
			if h.router.routes["pr-7.web.acme.preview.example"] != "http://127.0.0.1:4100" {
				t.Errorf("route changed to %v; the previous preview must stay", h.router.routes)
			}
			pv, _, _ := h.store.Preview(ctx, previews.Key{Owner: "Acme", Repo: "Web", PR: 7})
			if pv.SHA != shaA || pv.State != previews.Running || !strings.Contains(h.github.comments[1], "still live") {
				t.Errorf("preview %+v, comment %q", pv, h.github.comments[1])
			}
			b, _ := h.store.Build(ctx, 2)
			if b.State != previews.Failed || b.Reason == "" {
				t.Errorf("build B %+v, want failed with a reason", b)
			}
		})
	}
}

func TestDeployWithoutGitHubStillRecordsReports(t *testing.T) {
	h := newHarness(t)
	h.p.Reporter = nil
	if err := h.p.HandleDeploy(context.Background(), deployTask(t, shaA)); err != nil {
		t.Fatal(err)
	}
	reps, _ := h.store.Reports(context.Background(), "Acme", "Web", shaA)
	var got []string
	for _, r := range reps {
		got = append(got, r.Context+"="+r.State)
	}
	if strings.Join(got, " ") != "byop/build=pending byop/preview=pending byop/build=success byop/preview=pending byop/preview=success" {
		t.Errorf("recorded %v", got)
	}
	pv, _, _ := h.store.Preview(context.Background(), previews.Key{Owner: "Acme", Repo: "Web", PR: 7})
	if !strings.Contains(pv.Comment, "Live") {
		t.Errorf("comment kept for byop's pages: %q", pv.Comment)
	}
}

func TestTeardownRemovesEverythingAndSaysSo(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.p.HandleDeploy(ctx, deployTask(t, shaA))
	task, _ := tasks.NewPreviewTeardownTask(tasks.TeardownPayload{Owner: "Acme", Repo: "Web", PR: 7}, "close-1")
	for range 2 { // twice: teardown is idempotent
		if err := h.p.HandleTeardown(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.router.routes) != 0 || fmt.Sprint(h.runner.torn) != "[byop-acme-web-pr-7 byop-acme-web-pr-7]" {
		t.Errorf("routes %v, torn down %v", h.router.routes, h.runner.torn)
	}
	if len(h.github.comments) != 1 || !strings.Contains(h.github.comments[1], "Closed") {
		t.Errorf("comments %v, want the one comment saying closed", h.github.comments)
	}
	pv, _, _ := h.store.Preview(ctx, previews.Key{Owner: "Acme", Repo: "Web", PR: 7})
	if pv.State != previews.Closed {
		t.Errorf("preview state %s", pv.State)
	}
}

func TestBadPayloadsAreNotRetried(t *testing.T) {
	h := newHarness(t)
	for _, task := range []*asynq.Task{
		asynq.NewTask(tasks.TypePreviewDeploy, []byte("{not json")),
		asynq.NewTask(tasks.TypePreviewDeploy, []byte(`{"owner":"a","repo":"b","pr":1,"sha":"short","clone_url":"x"}`)),
		asynq.NewTask(tasks.TypePreviewTeardown, []byte(`{"owner":"a"}`)),
	} {
		var err error
		if task.Type() == tasks.TypePreviewDeploy {
			err = h.p.HandleDeploy(context.Background(), task)
		} else {
			err = h.p.HandleTeardown(context.Background(), task)
		}
		if !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("%s %s: err = %v, want SkipRetry", task.Type(), task.Payload(), err)
		}
	}
}

func TestKeyedLockSerialisesOneKey(t *testing.T) {
	var l keyedLock
	ctx := context.Background()
	unlock, _ := l.lock(ctx, "a")
	// Another key is free.
	unlockB, err := l.lock(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	unlockB()
	// The same key waits, and gives up with its context.
	short, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.lock(short, "a"); !errors.Is(err, context.Canceled) {
		t.Errorf("second lock of a held key: %v, want it to wait until cancelled", err)
	}
	got := make(chan struct{})
	go func() { u, _ := l.lock(ctx, "a"); close(got); u() }()
	select {
	case <-got:
		t.Fatal("lock taken while held")
	default:
	}
	unlock()
	<-got
}
