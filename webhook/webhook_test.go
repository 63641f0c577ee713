package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/tasks"
)

// testdata is the shared folder of real GitHub deliveries.
const testdata = "../../shared/testdata/github-webhooks"

const secret = "0123456789abcdef"

// fakeQueue records the tasks it is given; err, if set, is returned instead.
type fakeQueue struct {
	mu    sync.Mutex
	tasks []*asynq.Task
	opts  [][]asynq.Option
	err   error
}

func (q *fakeQueue) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return nil, q.err
	}
	q.tasks = append(q.tasks, t)
	return &asynq.TaskInfo{Type: t.Type(), Queue: "q"}, nil
}

func (q *fakeQueue) queued() []*asynq.Task {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]*asynq.Task(nil), q.tasks...)
}

func sign(body []byte, key string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func load(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newHandler(t testing.TB, q enqueuer) *Handler {
	t.Helper()
	h, err := New("0123456789abcdef", q, Options{
		Allow: func(repo string) bool { return repo == "Codertocat/Hello-World" || repo == "kubernetes/test-infra" },
		Log:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

type delivery struct {
	method, event, id, sig, ctype string
	body                          []byte
}

func signed(event string, body []byte) delivery {
	return delivery{method: "POST", event: event, id: "d-" + event, sig: sign(body, secret), ctype: "application/json", body: body}
}

func (d delivery) send(h http.Handler) *httptest.ResponseRecorder {
	req := httptest.NewRequest(d.method, "/webhooks/github", bytes.NewReader(d.body))
	if d.event != "" {
		req.Header.Set("X-GitHub-Event", d.event)
	}
	if d.id != "" {
		req.Header.Set("X-GitHub-Delivery", d.id)
	}
	if d.sig != "" {
		req.Header.Set("X-Hub-Signature-256", d.sig)
	}
	req.Header.Set("Content-Type", d.ctype)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestRefusesEmptySecret(t *testing.T) {
	if _, err := New("", &fakeQueue{}, Options{}); err == nil {
		t.Fatal("New accepted an empty secret")
	}
}

func TestBadInputIsAnsweredAndNothingQueued(t *testing.T) {
	opened := load(t, "octokit/pull_request/opened.payload.json")
	tests := []struct {
		name string
		d    delivery
		code int
		want string
	}{
		{"wrong method", func() delivery { d := signed("pull_request", opened); d.method = "GET"; return d }(), 405, "POST"},
		{"no event header", func() delivery { d := signed("pull_request", opened); d.event = ""; return d }(), 400, "X-GitHub-Event"},
		{"no delivery header", func() delivery { d := signed("pull_request", opened); d.id = ""; return d }(), 400, "X-GitHub-Delivery"},
		{"no signature", func() delivery { d := signed("pull_request", opened); d.sig = ""; return d }(), 401, "missing"},
		{"signature with another secret", func() delivery { d := signed("pull_request", opened); d.sig = sign(opened, "other"); return d }(), 401, "bad signature"},
		{"body changed after signing", func() delivery {
			d := signed("pull_request", opened)
			d.body = bytes.Replace(opened, []byte(`"opened"`), []byte(`"closed"`), 1)
			return d
		}(), 401, "bad signature"},
		{"sha1 signature only", func() delivery { d := signed("pull_request", opened); d.sig = "sha1=deadbeef"; return d }(), 401, "bad signature"},
		{"malformed JSON", signed("pull_request", []byte(`{"action": "opened", "number": `)), 400, "cannot parse"},
		{"unsupported content type", func() delivery { d := signed("pull_request", opened); d.ctype = "text/plain"; return d }(), 400, "Content-Type"},
		{"body over 25 MB", signed("pull_request", bytes.Repeat([]byte(" "), MaxBody+1)), 413, "larger"},
		{"go-github cannot parse the timestamp", signed("check_run", load(t, "octokit/check_run/rerequested.payload.json")), 400, "cannot parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &fakeQueue{}
			rec := tt.d.send(newHandler(t, q))
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tt.code, tt.want)
			}
			if n := len(q.queued()); n != 0 {
				t.Errorf("%d tasks queued, want none", n)
			}
		})
	}
}

func TestGitHubSignatureVector(t *testing.T) {
	// GitHub's documented vector: the signature is accepted (not 401); the
	// body is not JSON, so the delivery is then refused as unparsable.
	h, _ := New("It's a Secret to Everybody", &fakeQueue{}, Options{})
	d := delivery{method: "POST", event: "push", id: "x", ctype: "application/json", body: []byte("Hello, World!"),
		sig: "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"}
	if rec := d.send(h); rec.Code != 400 {
		t.Errorf("got %d %s, want 400 after a valid signature", rec.Code, rec.Body)
	}
}

func TestPullRequestDeliveriesQueueTasks(t *testing.T) {
	tests := []struct {
		name, file    string
		typ, queue    string
		wantPR        int
		wantSHA, repo string
	}{
		{"opened builds a preview", "octokit/pull_request/opened.payload.json", tasks.TypePreviewDeploy, tasks.QueueDefault, 2, "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "Hello-World"},
		{"synchronize builds the new head", "octokit/pull_request/synchronize.payload.json", tasks.TypePreviewDeploy, tasks.QueueDefault, 2, "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "Hello-World"},
		{"reopened of a fork builds from the base repository", "prow/reopened_pr.json", tasks.TypePreviewDeploy, tasks.QueueDefault, 947, "cc40e85eea54003aee18a6c9496eaae5c4b20780", "test-infra"},
		{"closed tears down", "octokit/pull_request/closed.payload.json", tasks.TypePreviewTeardown, tasks.QueueTeardown, 2, "", "Hello-World"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &fakeQueue{}
			rec := signed("pull_request", load(t, tt.file)).send(newHandler(t, q))
			if rec.Code != http.StatusAccepted {
				t.Fatalf("got %d %s, want 202", rec.Code, rec.Body)
			}
			got := q.queued()
			if len(got) != 1 || got[0].Type() != tt.typ {
				t.Fatalf("queued %v, want one %s", got, tt.typ)
			}
			var p struct {
				Owner, Repo, SHA, Ref string
				PR                    int
				CloneURL              string `json:"clone_url"`
			}
			json.Unmarshal(got[0].Payload(), &p)
			if p.PR != tt.wantPR || p.SHA != tt.wantSHA || p.Repo != tt.repo {
				t.Errorf("payload %+v, want PR %d sha %q repo %q", p, tt.wantPR, tt.wantSHA, tt.repo)
			}
			if tt.typ == tasks.TypePreviewDeploy {
				if p.Ref != "refs/pull/"+strconv.Itoa(tt.wantPR)+"/head" || !strings.HasSuffix(p.CloneURL, "/"+tt.repo+".git") {
					t.Errorf("payload %+v: want the base repository's clone URL and pull ref", p)
				}
			}
		})
	}
}

func TestIgnoredDeliveries(t *testing.T) {
	tests := []struct {
		name, event, file string
		code              int
	}{
		{"ping answers", "ping", "octokit/ping/payload.json", 200},
		{"repository not configured", "pull_request", "atlantis/githubPullRequestOpenedEvent.json", 202},
		{"labeled needs nothing", "pull_request", "octokit/pull_request/labeled.payload.json", 202},
		{"an event byop does not know", "made_up_event", "octokit/ping/payload.json", 202},
		{"star needs nothing", "star", "octokit/star/created.payload.json", 202},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := &fakeQueue{}
			rec := signed(tt.event, load(t, tt.file)).send(newHandler(t, q))
			if rec.Code != tt.code {
				t.Errorf("got %d %s, want %d", rec.Code, rec.Body, tt.code)
			}
			if n := len(q.queued()); n != 0 {
				t.Errorf("%d tasks queued, want none", n)
			}
		})
	}
}

func TestFormEncodedDelivery(t *testing.T) {
	q := &fakeQueue{}
	body := []byte("payload=" + url.QueryEscape(string(load(t, "octokit/pull_request/opened.payload.json"))))
	d := signed("pull_request", body)
	d.ctype = "application/x-www-form-urlencoded"
	if rec := d.send(newHandler(t, q)); rec.Code != 202 || len(q.queued()) != 1 {
		t.Errorf("got %d, %d tasks; want 202 and one task", rec.Code, len(q.queued()))
	}
}

func TestQueueTroubles(t *testing.T) {
	opened := load(t, "octokit/pull_request/opened.payload.json")
	tests := []struct {
		name string
		err  error
		code int
		want string
	}{
		{"Redis down is 503 so GitHub can redeliver", errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"), 503, "redeliver"},
		{"a redelivery already queued is accepted once", asynq.ErrTaskIDConflict, 202, "already queued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := signed("pull_request", opened).send(newHandler(t, &fakeQueue{err: tt.err}))
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body, tt.code, tt.want)
			}
		})
	}
}

// Every real delivery gets a sane answer: never a crash, never a 5xx.
func TestEveryRealDeliveryIsAnswered(t *testing.T) {
	h := newHandler(t, &fakeQueue{})
	n := 0
	err := filepath.WalkDir(testdata, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		rel, _ := filepath.Rel(testdata, path)
		event := eventOf(rel, load(t, rel))
		rec := signed(event, load(t, rel)).send(h)
		if rec.Code >= 500 || rec.Code < 200 {
			t.Errorf("%s (%s): %d %s", rel, event, rec.Code, rec.Body)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 100 {
		t.Errorf("sent only %d deliveries; is the testdata there?", n)
	}
}

// eventOf is the X-GitHub-Event of a testdata file: octokit's folder name;
// for the Atlantis and Prow files, read from their content.
func eventOf(rel string, body []byte) string {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	if parts[0] == "octokit" {
		return parts[1]
	}
	var probe struct {
		Comment     any `json:"comment"`
		PullRequest any `json:"pull_request"`
		Ref         any `json:"ref"`
	}
	json.Unmarshal(body, &probe)
	switch {
	case probe.Comment != nil:
		return "issue_comment"
	case probe.PullRequest != nil:
		return "pull_request"
	default:
		return "push"
	}
}
