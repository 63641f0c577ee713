package forge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/forge/forgetest"
)

const sha = "0123456789abcdef0123456789abcdef01234567"

// sleeps records the waits the retry policy asked for, without waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d = append(s.d, d)
	return ctx.Err()
}

func (s *sleeps) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

// newClient returns a client for the fake with fast retries, recording waits.
func newClient(t *testing.T, s *forgetest.Server, opts ...forge.Option) (*forge.Client, *sleeps) {
	t.Helper()
	sl := &sleeps{}
	all := append([]forge.Option{forge.WithRetry(forge.Retry{
		Attempts: 3, Backoff: time.Millisecond, MaxWait: 10 * time.Second, Sleep: sl.sleep,
	})}, opts...)
	c, err := forge.New(s.URL(), config.Secret(s.Token()), all...)
	if err != nil {
		t.Fatalf("forge.New: %v", err)
	}
	return c, sl
}

func noErrors(t *testing.T, s *forgetest.Server) {
	t.Helper()
	if errs := s.Errors(); len(errs) > 0 {
		t.Errorf("fake GitHub rejected requests:\n%s", strings.Join(errs, "\n"))
	}
}

func TestSetStatus(t *testing.T) {
	long := strings.Repeat("a", 200)
	wide := strings.Repeat("é🚀", 100) // 200 runes, multi-byte
	tests := []struct {
		name     string
		in       forge.Status
		wantDesc string
	}{
		{
			name:     "records every field as sent",
			in:       forge.Status{SHA: sha, Context: "byop/build", State: forge.StatePending, Description: "Building", TargetURL: "https://byop.example/logs/1"},
			wantDesc: "Building",
		},
		{
			name:     "cuts a long description to 140 characters with an ellipsis",
			in:       forge.Status{SHA: sha, Context: "byop/build", State: forge.StateFailure, Description: long},
			wantDesc: strings.Repeat("a", 139) + "…",
		},
		{
			name:     "cuts multi-byte descriptions on rune boundaries",
			in:       forge.Status{SHA: sha, Context: "byop/deploy", State: forge.StateError, Description: wide},
			wantDesc: string([]rune(wide)[:139]) + "…",
		},
		{
			name:     "leaves a description of exactly 140 characters alone",
			in:       forge.Status{SHA: sha, Context: "byop/deploy", State: forge.StateSuccess, Description: strings.Repeat("é", 140)},
			wantDesc: strings.Repeat("é", 140),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := forgetest.NewServer(t)
			c, _ := newClient(t, s)
			if err := c.SetStatus(context.Background(), "acme", "app", tt.in); err != nil {
				t.Fatalf("SetStatus: %v", err)
			}
			got := s.Statuses("acme", "app", sha)
			if len(got) != 1 {
				t.Fatalf("statuses = %+v, want one", got)
			}
			want := tt.in
			want.Description = tt.wantDesc
			if got[0] != want {
				t.Errorf("status = %+v, want %+v", got[0], want)
			}
			if !utf8.ValidString(got[0].Description) {
				t.Errorf("description %q is not valid UTF-8", got[0].Description)
			}
			noErrors(t, s)
		})
	}
}

func TestSetStatusKeepsOrder(t *testing.T) {
	s := forgetest.NewServer(t)
	c, _ := newClient(t, s)
	ctx := context.Background()
	for _, st := range []forge.State{forge.StatePending, forge.StateSuccess} {
		if err := c.SetStatus(ctx, "acme", "app", forge.Status{SHA: sha, Context: "byop/build", State: st}); err != nil {
			t.Fatalf("SetStatus %s: %v", st, err)
		}
	}
	got := s.Statuses("acme", "app", sha)
	if len(got) != 2 || got[0].State != forge.StatePending || got[1].State != forge.StateSuccess {
		t.Errorf("statuses = %+v, want pending then success", got)
	}
}

func TestSetStatusRefusesBadInputWithoutSending(t *testing.T) {
	tests := []struct {
		name string
		in   forge.Status
		want string
	}{
		{"unknown state", forge.Status{SHA: sha, Context: "byop/build", State: "done"}, `invalid state "done"`},
		{"no context", forge.Status{SHA: sha, State: forge.StatePending}, "no status context"},
		{"no sha", forge.Status{Context: "byop/build", State: forge.StatePending}, "no commit sha"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := forgetest.NewServer(t)
			c, _ := newClient(t, s)
			err := c.SetStatus(context.Background(), "acme", "app", tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if reqs := s.Requests(); len(reqs) != 0 {
				t.Errorf("sent %q, want nothing", reqs)
			}
		})
	}
}

func TestSetStatusErrorSaysWhatWasDone(t *testing.T) {
	s := forgetest.NewServer(t)
	c, _ := newClient(t, s)
	// A sha GitHub would refuse: the fake answers 422.
	err := c.SetStatus(context.Background(), "acme", "app", forge.Status{SHA: "abcdef0123456789zz", Context: "byop/build", State: forge.StatePending})
	if err == nil {
		t.Fatal("SetStatus succeeded for a sha GitHub refuses")
	}
	if want := "setting status byop/build on abcdef012345: "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %q, want prefix %q", err, want)
	}
	if !strings.Contains(err.Error(), "422") {
		t.Errorf("err = %q, want GitHub's 422 in it", err)
	}
}

func TestUpsertComment(t *testing.T) {
	ctx := context.Background()
	const pr = 7

	t.Run("creates once then edits the same comment", func(t *testing.T) {
		s := forgetest.NewServer(t)
		c, _ := newClient(t, s)
		id, err := c.UpsertComment(ctx, "acme", "app", pr, 0, "building")
		if err != nil {
			t.Fatalf("first UpsertComment: %v", err)
		}
		id2, err := c.UpsertComment(ctx, "acme", "app", pr, id, "deployed")
		if err != nil {
			t.Fatalf("second UpsertComment: %v", err)
		}
		if id2 != id {
			t.Errorf("second call returned %d, want the same comment %d", id2, id)
		}
		got := s.Comments("acme", "app", pr)
		if len(got) != 1 {
			t.Fatalf("comments = %+v, want exactly one", got)
		}
		if want := forge.Marker + "\ndeployed"; got[0].Body != want || got[0].Edits != 1 || got[0].Author != s.Login() {
			t.Errorf("comment = %+v, want body %q, 1 edit, by %s", got[0], want, s.Login())
		}
		noErrors(t, s)
	})

	t.Run("finds its marked comment when the ID is not known", func(t *testing.T) {
		s := forgetest.NewServer(t)
		c, _ := newClient(t, s)
		id, err := c.UpsertComment(ctx, "acme", "app", pr, 0, "building")
		if err != nil {
			t.Fatal(err)
		}
		restarted, _ := newClient(t, s) // a new process knows no ID
		id2, err := restarted.UpsertComment(ctx, "acme", "app", pr, 0, "deployed")
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Comments("acme", "app", pr); id2 != id || len(got) != 1 || got[0].Edits != 1 {
			t.Errorf("returned %d (first %d), comments %+v: want the first comment edited once", id2, id, got)
		}
		noErrors(t, s)
	})

	t.Run("leaves other people's comments alone", func(t *testing.T) {
		s := forgetest.NewServer(t)
		c, _ := newClient(t, s, forge.WithLogin(s.Login()))
		plain := s.AddComment("acme", "app", pr, "alice", "looks good")
		quoted := s.AddComment("acme", "app", pr, "bob", "> "+forge.Marker+"\n> old preview")
		planted := s.AddComment("acme", "app", pr, "mallory", forge.Marker+"\nnot byop's")
		id, err := c.UpsertComment(ctx, "acme", "app", pr, 0, "building")
		if err != nil {
			t.Fatal(err)
		}
		if id == plain || id == quoted || id == planted {
			t.Fatalf("UpsertComment adopted someone else's comment %d", id)
		}
		got := s.Comments("acme", "app", pr)
		if len(got) != 4 {
			t.Fatalf("comments = %+v, want the three seeded plus byop's", got)
		}
		for _, cm := range got[:3] {
			if cm.Edits != 0 {
				t.Errorf("comment %+v was edited", cm)
			}
		}
		noErrors(t, s)
	})

	t.Run("skips a marked comment it may not edit", func(t *testing.T) {
		s := forgetest.NewServer(t)
		c, _ := newClient(t, s) // no WithLogin: must learn from GitHub's 403
		s.AddComment("acme", "app", pr, "mallory", forge.Marker+"\nnot byop's")
		id, err := c.UpsertComment(ctx, "acme", "app", pr, 0, "building")
		if err != nil {
			t.Fatalf("UpsertComment: %v", err)
		}
		got := s.Comments("acme", "app", pr)
		if len(got) != 2 || got[1].ID != id || got[0].Edits != 0 {
			t.Errorf("comments = %+v, want mallory's untouched and a new one %d", got, id)
		}
	})

	t.Run("falls back when the known comment was deleted", func(t *testing.T) {
		s := forgetest.NewServer(t)
		c, _ := newClient(t, s)
		old, err := c.UpsertComment(ctx, "acme", "app", pr, 0, "building")
		if err != nil {
			t.Fatal(err)
		}
		s.DeleteComment("acme", "app", old)
		id, err := c.UpsertComment(ctx, "acme", "app", pr, old, "deployed")
		if err != nil {
			t.Fatalf("UpsertComment after delete: %v", err)
		}
		got := s.Comments("acme", "app", pr)
		if id == old || len(got) != 1 || got[0].ID != id || got[0].Body != forge.Marker+"\ndeployed" {
			t.Errorf("returned %d (old %d), comments %+v: want one new comment", id, old, got)
		}
		noErrors(t, s)
	})

	t.Run("falls back to another marked comment when the known one was deleted", func(t *testing.T) {
		s := forgetest.NewServer(t)
		c, _ := newClient(t, s)
		survivor := s.AddComment("acme", "app", pr, s.Login(), forge.Marker+"\nold")
		gone := s.AddComment("acme", "app", pr, s.Login(), forge.Marker+"\nolder")
		s.DeleteComment("acme", "app", gone)
		id, err := c.UpsertComment(ctx, "acme", "app", pr, gone, "deployed")
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Comments("acme", "app", pr); id != survivor || len(got) != 1 || got[0].Edits != 1 {
			t.Errorf("returned %d, comments %+v: want %d edited", id, got, survivor)
		}
		noErrors(t, s)
	})

	t.Run("finds the marked comment on page 2", func(t *testing.T) {
		s := forgetest.NewServer(t)
		c, _ := newClient(t, s)
		for i := range 130 {
			s.AddComment("acme", "app", pr, "alice", "chatter "+strconv.Itoa(i))
		}
		want := s.AddComment("acme", "app", pr, s.Login(), forge.Marker+"\nold")
		id, err := c.UpsertComment(ctx, "acme", "app", pr, 0, "deployed")
		if err != nil {
			t.Fatal(err)
		}
		got := s.Comments("acme", "app", pr)
		if id != want || len(got) != 131 || got[130].Edits != 1 {
			t.Errorf("returned %d, want %d edited and no new comment (have %d comments)", id, want, len(got))
		}
		var sawPage2 bool
		for _, r := range s.Requests() {
			sawPage2 = sawPage2 || (strings.HasPrefix(r, "GET ") && strings.Contains(r, "page=2"))
		}
		if !sawPage2 {
			t.Errorf("requests %q never asked for page 2", s.Requests())
		}
		noErrors(t, s)
	})

	t.Run("keeps a body that already starts with the marker", func(t *testing.T) {
		s := forgetest.NewServer(t)
		c, _ := newClient(t, s)
		if _, err := c.UpsertComment(ctx, "acme", "app", pr, 0, forge.Marker+"\nready"); err != nil {
			t.Fatal(err)
		}
		if got := s.Comments("acme", "app", pr); len(got) != 1 || strings.Count(got[0].Body, forge.Marker) != 1 {
			t.Errorf("comments = %+v, want one with a single marker", got)
		}
	})
}

func TestReplyReactPermission(t *testing.T) {
	ctx := context.Background()
	s := forgetest.NewServer(t)
	c, _ := newClient(t, s)

	cmd := s.AddComment("acme", "app", 3, "alice", "/byop redeploy")
	if err := c.React(ctx, "acme", "app", cmd, "eyes"); err != nil {
		t.Fatalf("React: %v", err)
	}
	if err := c.React(ctx, "acme", "app", cmd, "rocket"); err != nil {
		t.Fatalf("React: %v", err)
	}
	if got := s.Reactions("acme", "app", cmd); strings.Join(got, ",") != "eyes,rocket" {
		t.Errorf("reactions = %q, want eyes then rocket", got)
	}

	id, err := c.Reply(ctx, "acme", "app", 3, "Only collaborators with write access can redeploy.")
	if err != nil {
		t.Fatalf("Reply: %v", err)
	}
	got := s.Comments("acme", "app", 3)
	if len(got) != 2 || got[1].ID != id || strings.Contains(got[1].Body, forge.Marker) || got[1].Author != s.Login() {
		t.Errorf("comments = %+v, want a plain reply %d by %s", got, id, s.Login())
	}

	s.SetPermission("acme", "app", "alice", "write")
	for user, want := range map[string]string{"alice": "write", "mallory": "none"} {
		perm, err := c.Permission(ctx, "acme", "app", user)
		if err != nil || perm != want {
			t.Errorf("Permission(%s) = %q, %v; want %q", user, perm, err, want)
		}
	}
	noErrors(t, s)

	err = c.React(ctx, "acme", "app", cmd, "thumbsup")
	if err == nil || !strings.Contains(err.Error(), `reacting "thumbsup" to comment`) {
		t.Errorf("React with an invalid reaction: err = %v", err)
	}
}

func TestRetries(t *testing.T) {
	st := forge.Status{SHA: sha, Context: "byop/build", State: forge.StateSuccess, Description: "Deployed"}
	in := func(d time.Duration) string { return strconv.FormatInt(time.Now().Add(d).Unix(), 10) }
	tests := []struct {
		name      string
		failures  int
		status    int
		headers   map[string]string
		wantSent  int
		wantWaits func([]time.Duration) bool
		wantErr   string // empty: success
	}{
		{
			name: "retries a 502 then succeeds", failures: 1, status: http.StatusBadGateway,
			wantSent: 2, wantWaits: waits(time.Millisecond),
		},
		{
			name: "doubles the backoff between server errors", failures: 2, status: http.StatusServiceUnavailable,
			wantSent: 3, wantWaits: waits(time.Millisecond, 2*time.Millisecond),
		},
		{
			name: "waits as long as a 429's Retry-After", failures: 1, status: http.StatusTooManyRequests,
			headers:  map[string]string{"Retry-After": "3"},
			wantSent: 2, wantWaits: waits(3 * time.Second),
		},
		{
			name: "waits for a secondary rate limit's 403 Retry-After", failures: 1, status: http.StatusForbidden,
			headers:  map[string]string{"Retry-After": "2"},
			wantSent: 2, wantWaits: waits(2 * time.Second),
		},
		{
			name: "waits until X-RateLimit-Reset when none remain", failures: 1, status: http.StatusForbidden,
			headers:  map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": in(5 * time.Second)},
			wantSent: 2,
			wantWaits: func(d []time.Duration) bool {
				return len(d) == 1 && d[0] >= 3*time.Second && d[0] <= 6*time.Second
			},
		},
		{
			name: "does not retry a plain 403", failures: 1, status: http.StatusForbidden,
			wantSent: 1, wantWaits: waits(), wantErr: "403",
		},
		{
			name: "gives up after the attempts allowed", failures: 10, status: http.StatusBadGateway,
			wantSent: 3, wantWaits: waits(time.Millisecond, 2*time.Millisecond),
			wantErr: "GitHub answered 502 Bad Gateway on each of 3 attempts, giving up",
		},
		{
			name: "does not wait longer than allowed for a rate limit", failures: 1, status: http.StatusTooManyRequests,
			headers:  map[string]string{"Retry-After": "3600"},
			wantSent: 1, wantWaits: waits(),
			wantErr: "GitHub answered 429 Too Many Requests asking to wait 1h0m0s, longer than the 10s allowed",
		},
		{
			name: "does not wait past the reset when it is too far", failures: 1, status: http.StatusForbidden,
			headers:  map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": in(30 * time.Minute)},
			wantSent: 1, wantWaits: waits(), wantErr: "403 Forbidden asking to wait",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := forgetest.NewServer(t)
			c, sl := newClient(t, s)
			s.FailNext(tt.failures, tt.status, tt.headers)
			err := c.SetStatus(context.Background(), "acme", "app", st)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("SetStatus: %v", err)
				}
				if got := s.Statuses("acme", "app", sha); len(got) != 1 || got[0] != st {
					t.Errorf("statuses = %+v, want exactly %+v (the body replayed intact)", got, st)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "setting status byop/build on 0123456789ab: ") {
					t.Errorf("err = %q does not say what was being done", err)
				}
				if strings.Contains(err.Error(), s.Token()) {
					t.Errorf("err = %q contains the token", err)
				}
			}
			if got := s.Requests(); len(got) != tt.wantSent {
				t.Errorf("sent %d requests %q, want %d", len(got), got, tt.wantSent)
			}
			if got := sl.got(); !tt.wantWaits(got) {
				t.Errorf("waited %v", got)
			}
			noErrors(t, s)
		})
	}
}

func waits(want ...time.Duration) func([]time.Duration) bool {
	return func(got []time.Duration) bool { return fmt.Sprint(got) == fmt.Sprint(want) }
}

func TestRetryErrorIsInspectable(t *testing.T) {
	s := forgetest.NewServer(t)
	c, _ := newClient(t, s)
	s.FailNext(1, http.StatusTooManyRequests, map[string]string{"Retry-After": "120"})
	_, err := c.Reply(context.Background(), "acme", "app", 1, "hi")
	var rerr *forge.RetryError
	if !errors.As(err, &rerr) {
		t.Fatalf("err = %v, want a *forge.RetryError inside", err)
	}
	if !rerr.RateLimited || rerr.Wait != 2*time.Minute || rerr.StatusCode != 429 || rerr.Attempts != 1 {
		t.Errorf("RetryError = %+v", rerr)
	}
	if got := s.Comments("acme", "app", 1); len(got) != 0 {
		t.Errorf("comments = %+v, want none", got)
	}
}

func TestRetryGivesUpBeforeTheDeadline(t *testing.T) {
	s := forgetest.NewServer(t)
	// The real sleep: a wait past the context's deadline must not be started.
	c, err := forge.New(s.URL(), config.Secret(s.Token()), forge.WithRetry(forge.Retry{MaxWait: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	s.FailNext(1, http.StatusTooManyRequests, map[string]string{"Retry-After": "30"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err = c.SetStatus(ctx, "acme", "app", forge.Status{SHA: sha, Context: "byop/build", State: forge.StatePending})
	if err == nil || !strings.Contains(err.Error(), "longer than the time left before the deadline") {
		t.Fatalf("err = %v, want a give-up before the deadline", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("took %s, want an immediate answer", took)
	}
}

func TestRetryHonoursCancellation(t *testing.T) {
	s := forgetest.NewServer(t)
	c, err := forge.New(s.URL(), config.Secret(s.Token()), forge.WithRetry(forge.Retry{Backoff: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	s.FailNext(5, http.StatusBadGateway, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Cancel once the first attempt has been answered and the long backoff begun.
		for end := time.Now().Add(10 * time.Second); len(s.Requests()) == 0 && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	err = c.SetStatus(ctx, "acme", "app", forge.Status{SHA: sha, Context: "byop/build", State: forge.StatePending})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got := s.Requests(); len(got) != 1 {
		t.Errorf("sent %q, want one attempt", got)
	}
}

func TestTokenStaysSecret(t *testing.T) {
	s := forgetest.NewServer(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()

	c, _ := newClient(t, s, forge.WithLogger(log))
	if err := c.SetStatus(ctx, "acme", "app", forge.Status{SHA: sha, Context: "byop/build", State: forge.StatePending}); err != nil {
		t.Fatal(err)
	}
	s.FailNext(3, http.StatusBadGateway, nil) // every attempt newClient allows
	_, errRetry := c.Reply(ctx, "acme", "app", 1, "hi")

	wrong := "ghp_wrongtokenwrongtokenwrong"
	bad, err := forge.New(s.URL(), config.Secret(wrong), forge.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	_, errAuth := bad.Permission(ctx, "acme", "app", "alice")

	for _, err := range []error{errRetry, errAuth} {
		if err == nil {
			t.Fatal("want an error")
		}
		for _, tok := range []string{s.Token(), wrong} {
			if strings.Contains(err.Error(), tok) {
				t.Errorf("error %q contains a token", err)
			}
		}
	}
	if !strings.Contains(errAuth.Error(), "401") {
		t.Errorf("errAuth = %q, want GitHub's 401", errAuth)
	}
	out := logs.String()
	if !strings.Contains(out, "Authorization:[[redacted]]") || !strings.Contains(out, "retrying GitHub API request") {
		t.Errorf("debug log lacks the redacted request or the retry:\n%s", out)
	}
	for _, tok := range []string{s.Token(), wrong} {
		if strings.Contains(out, tok) {
			t.Errorf("log contains a token:\n%s", out)
		}
	}
}

func TestNewRefusesBadBaseURLs(t *testing.T) {
	tests := []struct {
		name, url, want string
	}{
		{"credentials in the URL", "https://x-access-token:ghp_secret123@api.github.com/", "must not carry credentials"},
		{"user name in the URL", "https://byop@ghe.example.com/", "must not carry credentials"},
		{"not http", "ftp://ghe.example.com/", `scheme "ftp"`},
		{"no host", "https:///api/v3/", "no host"},
		{"unparseable with a secret in it", "https://u:ghp_secret123@[::1", "parsing GitHub API base URL"},
		{"a query", "https://ghe.example.com/?token=ghp_secret123", "query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := forge.New(tt.url, "tok")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "ghp_secret123") {
				t.Errorf("err = %q repeats the secret", err)
			}
		})
	}
	if _, err := forge.New("https://api.github.com/", ""); err == nil {
		t.Error("New accepted an empty token")
	}
}

// roundTripper answers every request with a canned response and records it.
type roundTripper struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (rt *roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.reqs = append(rt.reqs, r)
	rt.mu.Unlock()
	return &http.Response{
		StatusCode: http.StatusCreated,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(`{"id":1,"state":"pending"}`)),
		Request:    r,
	}, nil
}

func TestBaseURLs(t *testing.T) {
	tests := []struct{ base, want string }{
		{"https://api.github.com/", "https://api.github.com/repos/acme/app/statuses/" + sha},
		{"https://api.github.com", "https://api.github.com/repos/acme/app/statuses/" + sha},
		{"https://ghe.example.com/", "https://ghe.example.com/api/v3/repos/acme/app/statuses/" + sha},
		{"https://ghe.example.com/api/v3/", "https://ghe.example.com/api/v3/repos/acme/app/statuses/" + sha},
	}
	for _, tt := range tests {
		t.Run(tt.base, func(t *testing.T) {
			rt := &roundTripper{}
			c, err := forge.New(tt.base, "tok123", forge.WithHTTPClient(&http.Client{Transport: rt}), forge.WithUserAgent("byop-test/1"))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.SetStatus(context.Background(), "acme", "app", forge.Status{SHA: sha, Context: "byop/build", State: forge.StatePending}); err != nil {
				t.Fatal(err)
			}
			if len(rt.reqs) != 1 {
				t.Fatalf("sent %d requests, want 1", len(rt.reqs))
			}
			r := rt.reqs[0]
			if r.URL.String() != tt.want {
				t.Errorf("URL = %s, want %s", r.URL, tt.want)
			}
			if got := r.Header.Get("Authorization"); got != "Bearer tok123" {
				t.Errorf("Authorization = %q", got)
			}
			if got := r.Header.Get("User-Agent"); got != "byop-test/1" {
				t.Errorf("User-Agent = %q", got)
			}
		})
	}
}

func TestTokenNotSentAcrossRedirects(t *testing.T) {
	var mu sync.Mutex
	var elsewhereAuth []string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		elsewhereAuth = append(elsewhereAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"permission":"admin"}`)
	}))
	defer elsewhere.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusFound)
	}))
	defer api.Close()

	c, err := forge.New(api.URL, "tok123")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Permission(context.Background(), "acme", "app", "alice"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(elsewhereAuth) != 1 || elsewhereAuth[0] != "" {
		t.Errorf("the other host saw Authorization %q, want it absent", elsewhereAuth)
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"eleven char", 10, "eleven ch…"},
		{"ééééé", 3, "éé…"},
		{"anything", 0, ""},
	}
	for _, tt := range tests {
		if got := forge.Truncate(tt.in, tt.max); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}
