package delivery_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/internal/delivery"
	"github.com/byop-dev/byop/webhook"
)

// A real delivery GitHub sent, for a repository byop is told to build.
const opened = "../../../shared/testdata/github-webhooks/octokit/pull_request/opened.payload.json"

// recordingQueue records what byop's receiver queues.
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

// receiver is byop's own webhook receiver with secret, building every
// repository.
func receiver(t *testing.T, secret string) (*httptest.Server, *recordingQueue) {
	t.Helper()
	q := &recordingQueue{}
	h, err := webhook.New(config.Secret(secret), q, webhook.Options{Allow: func(string) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, q
}

func TestByopQueuesWhatIsSignedWithItsSecret(t *testing.T) {
	body, err := os.ReadFile(opened)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, signedWith string
		queued           bool
		errHas           string
	}{
		{"its secret", "byop's secret", true, ""},
		{"another secret", "another secret", false, "401"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, q := receiver(t, "byop's secret")
			w := delivery.Webhook{Event: "pull_request", ID: "test-1", Body: body, Signature: delivery.Sign([]byte(tc.signedWith), body)}
			err := delivery.Deliver(context.Background(), http.DefaultClient, srv.URL, w)
			if tc.queued && (err != nil || len(q.tasks) != 1) {
				t.Fatalf("Deliver = %v with %d tasks queued, want one queued", err, len(q.tasks))
			}
			if !tc.queued && (err == nil || !strings.Contains(err.Error(), tc.errHas) || len(q.tasks) != 0) {
				t.Errorf("Deliver = %v with %d tasks queued, want an error with %s and nothing queued", err, len(q.tasks), tc.errHas)
			}
		})
	}
}

func TestDeliverFailsUnlessByopQueued(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   int
		answer string
	}{
		{"ignored", http.StatusOK, "ignored: not a pull request"},
		{"already queued", http.StatusAccepted, "already queued"},
		{"server error", http.StatusInternalServerError, "queue down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.code)
				w.Write([]byte(tc.answer))
			}))
			defer srv.Close()
			err := delivery.Deliver(context.Background(), http.DefaultClient, srv.URL, delivery.Webhook{Event: "pull_request", ID: "d-1"})
			if err == nil || !strings.Contains(err.Error(), tc.answer) {
				t.Errorf("Deliver = %v, want an error quoting byop's answer %q", err, tc.answer)
			}
		})
	}
}

func TestNewRequestCarriesTheDeliveryHeaders(t *testing.T) {
	w := delivery.Webhook{Event: "issue_comment", ID: "abc", Body: []byte(`{"a":1}`), Signature: delivery.Sign([]byte("s"), []byte(`{"a":1}`))}
	req, err := delivery.NewRequest(context.Background(), "http://127.0.0.1:1/webhooks/github", w)
	if err != nil {
		t.Fatal(err)
	}
	for h, want := range map[string]string{
		"X-GitHub-Event":      "issue_comment",
		"X-GitHub-Delivery":   "abc",
		"X-Hub-Signature-256": w.Signature,
		"Content-Type":        "application/json",
	} {
		if got := req.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if req.Method != http.MethodPost || !strings.HasPrefix(w.Signature, "sha256=") || len(w.Signature) != len("sha256=")+64 {
		t.Errorf("%s with signature %q, want a POST signed sha256=<64 hex>", req.Method, w.Signature)
	}
}
