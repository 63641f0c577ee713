package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/internal/gitrepo"
	"github.com/byop-dev/byop/tasks"
	"github.com/byop-dev/byop/webhook"
)

// recordingQueue records the tasks byop's receiver queues.
type recordingQueue struct {
	mu    sync.Mutex
	tasks []*asynq.Task
}

func (q *recordingQueue) EnqueueContext(_ context.Context, t *asynq.Task, _ ...asynq.Option) (*asynq.TaskInfo, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.tasks = append(q.tasks, t)
	return &asynq.TaskInfo{Type: t.Type(), Queue: "default"}, nil
}

func TestByopQueuesTheDemoDeliveries(t *testing.T) {
	const sha = "0d1abc7c0e03b4896a8ff86800c1d9b40d06faa7"
	ev := event{sha: sha, cloneURL: "http://127.0.0.1:1234/demo/sample-app"}
	for _, tc := range []struct {
		action string
		typ    string
		want   []string // payload fields the task must carry
	}{
		// The head comes from the repository itself: byop trusts it
		// without a maintainer's /ok-to-test.
		{"opened", tasks.TypePreviewDeploy, []string{`"sha":"` + sha + `"`, `"head_repo":"demo/sample-app"`}},
		{"closed", tasks.TypePreviewTeardown, []string{`"pr":1`}},
	} {
		t.Run(tc.action, func(t *testing.T) {
			secret := config.Secret("demo-test-secret")
			q := &recordingQueue{}
			receiver, err := webhook.New(secret, q, webhook.Options{Allow: config.Config{Repositories: []string{"demo/*"}}.Allows})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(receiver)
			defer srv.Close()
			b := &byop{api: srv.URL, secret: secret, http: localhostClient()}

			if err := b.deliver(context.Background(), ev.payload(tc.action)); err != nil {
				t.Fatal(err)
			}
			if len(q.tasks) != 1 || q.tasks[0].Type() != tc.typ {
				t.Fatalf("queued %v, want one %s", q.tasks, tc.typ)
			}
			p := string(q.tasks[0].Payload())
			for _, want := range append(tc.want, `"repo":"sample-app"`) {
				if !strings.Contains(p, want) {
					t.Errorf("payload %s lacks %s", p, want)
				}
			}
		})
	}
}

func TestDeployPayloadPointsAtTheLocalGitServer(t *testing.T) {
	var p struct {
		Number      int `json:"number"`
		PullRequest struct {
			Head struct {
				SHA, Ref string
				Repo     struct {
					FullName string `json:"full_name"`
				} `json:"repo"`
			} `json:"head"`
		} `json:"pull_request"`
		Repository struct {
			FullName string `json:"full_name"`
			CloneURL string `json:"clone_url"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(event{sha: "abc", cloneURL: "http://127.0.0.1:9/demo/sample-app"}.payload("opened"), &p); err != nil {
		t.Fatal(err)
	}
	if p.Number != 1 || p.PullRequest.Head.SHA != "abc" || p.PullRequest.Head.Ref != branch || p.PullRequest.Head.Repo.FullName != "demo/sample-app" ||
		p.Repository.FullName != "demo/sample-app" || p.Repository.CloneURL != "http://127.0.0.1:9/demo/sample-app" {
		t.Errorf("payload %+v", p)
	}
}

func TestLocalhostClientReachesPreviewHostsOnLoopback(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Host))
	}))
	defer srv.Close()
	port := portOf(srv.Listener.Addr().String())
	b := &byop{http: localhostClient()}
	code, body, err := b.get(context.Background(), "http://pr-1.sample-app.demo.localhost:"+port+"/")
	if err != nil || code != http.StatusOK || body != "pr-1.sample-app.demo.localhost:"+port {
		t.Errorf("GET = %d %q %v, want 200 with the preview host", code, body, err)
	}
}

func TestSampleRepoIsServedWithThePullRequestRef(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	sha, err := sampleRepo(ctx, root, "127.0.0.1:5000/byop/busybox:1.35.0")
	if err != nil {
		t.Fatal(err)
	}
	again, err := sampleRepo(ctx, t.TempDir(), "127.0.0.1:5000/byop/busybox:1.35.0")
	if err != nil || again != sha {
		t.Errorf("a second sample repo has commit %s (%v), want the same %s", again, err, sha)
	}
	g, err := serveGit(root)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	refs, err := gitrepo.Run(ctx, "", nil, "ls-remote", g.CloneURL(owner+"/"+repo))
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"refs/heads/" + branch, "refs/pull/1/head"} {
		if !strings.Contains(refs, sha+"\t"+ref) {
			t.Errorf("ls-remote lacks %s at %s:\n%s", ref, sha, refs)
		}
	}
}
