package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/forge/forgetest"
	"github.com/byop-dev/byop/gitsrc/gittest"
	"github.com/byop-dev/byop/internal/testenv"
	"github.com/byop-dev/byop/previews"
)

const webhooks = "../../../shared/testdata/github-webhooks"

// stack is a byop started by serve, the same wiring as the binary, with
// GitHub's REST API and the git host played by local servers.
type stack struct {
	t      *testing.T
	cfg    config.Config
	api    string // byop's webhook and pages address
	router string // byop's preview router address
	github *forgetest.Server
	git    *gittest.Server
	logs   *syncBuffer
}

// startStack starts byop on the real services. changes may adjust its
// settings and the fake GitHub before it starts.
func startStack(t *testing.T, changes ...func(*config.Config, *forgetest.Server)) *stack {
	t.Helper()
	redisAddr := testenv.Redis(t)
	bk := testenv.BuildKit(t)
	reg := testenv.Registry(t)
	testenv.Docker(t)

	gh := forgetest.NewServer(t)

	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.PublicURL = "" // byop derives it from the port it gets
	cfg.RouterAddr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.RedisAddr = redisAddr
	cfg.RedisDB = 5
	cfg.BuildKitAddr = bk
	cfg.RegistryPrefix = reg + "/e2e-" + strings.ToLower(rand.Text()[:8])
	cfg.WebhookSecret = config.Secret("e2e-" + rand.Text())
	cfg.GitHubToken = config.Secret(gh.Token())
	cfg.GitHubAPIURL = gh.URL() + "/"
	cfg.Repositories = []string{"Codertocat/*"}
	cfg.DeployTimeout = time.Minute
	cfg.LogLevel = "debug"
	for _, change := range changes {
		change(&cfg, gh)
	}
	// The git host wants what GitHub would: the token, or as a GitHub App,
	// an installation token the App was issued.
	gitAuth := gittest.WithToken(gh.Token())
	if cfg.GitHubAppID != 0 {
		gitAuth = gittest.WithPassword(func(pass string) bool {
			for _, tok := range gh.InstallationTokens() {
				if tok.Token == pass && time.Now().Before(tok.ExpiresAt) {
					return true
				}
			}
			return false
		})
	}
	git := gittest.NewServer(t, gitAuth)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	flushRedisDB(t, redisAddr, cfg.RedisDB)

	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), func(a addrs) { ready <- a })
	}()
	s := &stack{t: t, cfg: cfg, github: gh, git: git, logs: logs}
	select {
	case a := <-ready:
		s.api, s.router = a.API, a.Router
	case err := <-done:
		t.Fatalf("byop did not start: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatal("byop did not start in 30s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("byop's log:\n%s", logs)
		}
		if strings.Contains(logs.String(), gh.Token()) {
			t.Error("the GitHub token appears in byop's log")
		}
	})
	return s
}

// flushRedisDB empties the test's own Redis database, so that tasks left
// by an earlier run do not reach this one.
func flushRedisDB(t *testing.T, addr string, db int) {
	t.Helper()
	out, err := exec.Command("redis-cli", "-h", strings.Split(addr, ":")[0], "-p", strings.Split(addr, ":")[1], "-n", fmt.Sprint(db), "FLUSHDB").CombinedOutput()
	if err != nil {
		t.Fatalf("flushing redis db %d: %v %s", db, err, out)
	}
}

// deliver sends a real GitHub delivery, signed, with its fields rewritten.
func (s *stack) deliver(event, file string, edit func(map[string]any)) *http.Response {
	s.t.Helper()
	a := s.deliverAs(event, file, "e2e-"+rand.Text(), edit)
	return &http.Response{StatusCode: a.code}
}

// answer is byop's answer to a delivery.
type answer struct {
	code           int
	body, delivery string
}

// deliverAs is deliver with a chosen delivery ID.
func (s *stack) deliverAs(event, file, delivery string, edit func(map[string]any)) answer {
	s.t.Helper()
	raw, err := os.ReadFile(filepath.Join(webhooks, file))
	if err != nil {
		s.t.Fatal(err)
	}
	var payload map[string]any
	if err := json.Unmarshal(raw, &payload); err != nil {
		s.t.Fatal(err)
	}
	edit(payload)
	body, _ := json.Marshal(payload)
	mac := hmac.New(sha256.New, []byte(s.cfg.WebhookSecret.Reveal()))
	mac.Write(body)
	req, _ := http.NewRequest("POST", "http://"+s.api+"/webhooks/github", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", delivery)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, body: string(b), delivery: delivery}
}

// removeContainersAtEnd removes what a failed test left of pr's preview.
func (s *stack) removeContainersAtEnd(t *testing.T, pr int) {
	project := previews.Key{Owner: "Codertocat", Repo: "Hello-World", PR: pr}.Project()
	t.Cleanup(func() {
		ids := strings.Fields(dockerPS(t, "label=com.docker.compose.project="+project))
		if len(ids) > 0 {
			exec.Command("docker", append([]string{"rm", "-f", "-v"}, ids...)...).Run()
		}
		exec.Command("docker", "network", "rm", project+"_default").Run()
	})
}

// dockerPS lists the IDs of containers matching a filter.
func dockerPS(t *testing.T, filter string) string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", filter).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	return string(out)
}

// pullRequest rewrites a pull_request delivery to point at repo, pr and sha.
func pullRequest(repo *gittest.Repo, pr int, sha string) func(map[string]any) {
	return func(p map[string]any) {
		p["number"] = pr
		pull := p["pull_request"].(map[string]any)
		pull["number"] = pr
		pull["head"].(map[string]any)["sha"] = sha
		p["repository"].(map[string]any)["clone_url"] = repo.CloneURL()
	}
}

// get fetches a preview URL the way a browser on this machine would:
// *.localhost is loopback, here byop's router.
func (s *stack) get(url string) (int, string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, s.router)
	}, DisableKeepAlives: true}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func (s *stack) statuses(sha, context string) []forge.Status {
	var out []forge.Status
	for _, st := range s.github.Statuses("Codertocat", "Hello-World", sha) {
		if st.Context == context {
			out = append(out, st)
		}
	}
	return out
}

func (s *stack) waitStatus(sha, context string, want ...forge.State) forge.Status {
	s.t.Helper()
	var last forge.Status
	s.github.WaitFor(s.t, context+" "+fmt.Sprint(want)+" on "+sha[:7], func() bool {
		st := s.statuses(sha, context)
		if len(st) == 0 {
			return false
		}
		last = st[len(st)-1]
		return slices.Contains(want, last.State)
	})
	return last
}

const dockerfile = `FROM %s
COPY index.html /www/index.html
EXPOSE 8080
CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
`

func TestPullRequestBecomesLivePreview(t *testing.T) {
	s := startStack(t)
	base := testenv.BaseImage(t)
	repo := s.git.CreateRepo(t, "Codertocat/Hello-World")
	repo.Commit(t, "main", map[string]string{"README.md": "hello\n"}, "initial")
	n, _ := rand.Int(rand.Reader, big.NewInt(90000))
	pr := int(n.Int64()) + 10000 // a fresh PR number: no clash with earlier runs
	key := previews.Key{Owner: "Codertocat", Repo: "Hello-World", PR: pr}
	s.removeContainersAtEnd(t, pr)

	// 1. opened: build, push, deploy, report.
	sha1 := repo.Commit(t, "feature", map[string]string{"Dockerfile": fmt.Sprintf(dockerfile, base), "index.html": "version one\n"}, "one")
	repo.SetRef(t, fmt.Sprintf("refs/pull/%d/head", pr), sha1)
	if resp := s.deliver("pull_request", "octokit/pull_request/opened.payload.json", pullRequest(repo, pr, sha1)); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("opened: %d, want 202", resp.StatusCode)
	}
	build := s.waitStatus(sha1, "byop/build", forge.StateSuccess, forge.StateFailure, forge.StateError)
	if build.State != forge.StateSuccess {
		t.Fatalf("build of %s: %+v", sha1[:7], build)
	}
	preview := s.waitStatus(sha1, "byop/preview", forge.StateSuccess, forge.StateFailure, forge.StateError)
	if preview.State != forge.StateSuccess {
		t.Fatalf("preview of %s: %+v", sha1[:7], preview)
	}
	for _, ctx := range []string{"byop/build", "byop/preview"} {
		st := s.statuses(sha1, ctx)
		if st[0].State != forge.StatePending {
			t.Errorf("%s began %s, want pending first", ctx, st[0].State)
		}
		if !strings.HasPrefix(st[len(st)-1].TargetURL, "http://localhost:"+fmt.Sprint(portOf(s.api))+"/builds/") {
			t.Errorf("%s target_url %q, want byop's build page", ctx, st[len(st)-1].TargetURL)
		}
	}
	comments := s.github.Comments("Codertocat", "Hello-World", pr)
	if len(comments) != 1 {
		t.Fatalf("%d comments, want 1", len(comments))
	}
	url := key.URL("localhost", portOf(s.router))
	if !strings.Contains(comments[0].Body, url) || !strings.Contains(comments[0].Body, sha1) {
		t.Errorf("comment lacks the URL %s or the sha:\n%s", url, comments[0].Body)
	}
	if code, body, err := s.get(url); err != nil || code != 200 || body != "version one\n" {
		t.Fatalf("GET %s = %d %q %v, want version one", url, code, body, err)
	}
	logPage := getBody(t, build.TargetURL)
	if !strings.Contains(logPage, "COPY index.html") || !strings.Contains(logPage, "running") {
		t.Errorf("build page lacks the build log or state:\n%s", logPage)
	}
	if reqs := s.git.Requests(); len(reqs) == 0 || !reqs[len(reqs)-1].AuthSent || reqs[len(reqs)-1].Status != 200 {
		t.Errorf("git host requests %+v: want the token sent as basic auth", reqs)
	}

	// 2. synchronize: the new commit replaces the old without downtime.
	watch := s.watch(url)
	sha2 := repo.Commit(t, "feature", map[string]string{"index.html": "version two\n"}, "two")
	repo.SetRef(t, fmt.Sprintf("refs/pull/%d/head", pr), sha2)
	s.deliver("pull_request", "octokit/pull_request/synchronize.payload.json", pullRequest(repo, pr, sha2))
	if st := s.waitStatus(sha2, "byop/preview", forge.StateSuccess, forge.StateFailure, forge.StateError); st.State != forge.StateSuccess {
		t.Fatalf("preview of %s: %+v", sha2[:7], st)
	}
	if code, body, _ := s.get(url); code != 200 || body != "version two\n" {
		t.Fatalf("after synchronize GET = %d %q, want version two", code, body)
	}
	if bad := watch(); len(bad) > 0 {
		t.Errorf("the preview did not answer during the switch: %v", bad)
	}
	comments = s.github.Comments("Codertocat", "Hello-World", pr)
	if len(comments) != 1 || comments[0].Edits == 0 || !strings.Contains(comments[0].Body, sha2) {
		t.Errorf("comments after synchronize: %+v, want the one comment edited to %s", comments, sha2[:7])
	}

	// 3. a broken build: failure with a log link; the preview keeps serving.
	sha3 := repo.Commit(t, "feature", map[string]string{"Dockerfile": fmt.Sprintf("FROM %s\nRUN echo broken on purpose && exit 3\n", base)}, "three")
	repo.SetRef(t, fmt.Sprintf("refs/pull/%d/head", pr), sha3)
	s.deliver("pull_request", "octokit/pull_request/synchronize.payload.json", pullRequest(repo, pr, sha3))
	failed := s.waitStatus(sha3, "byop/build", forge.StateSuccess, forge.StateFailure, forge.StateError)
	if failed.State != forge.StateFailure || !strings.Contains(failed.Description, "exit code: 3") || !strings.Contains(failed.TargetURL, "/builds/") {
		t.Errorf("broken build status %+v, want failure naming exit code 3 with a log link", failed)
	}
	if !strings.Contains(getBody(t, failed.TargetURL), "broken on purpose") {
		t.Error("the failed build's log page lacks the step's output")
	}
	s.waitStatus(sha3, "byop/preview", forge.StateFailure)
	if code, body, _ := s.get(url); code != 200 || body != "version two\n" {
		t.Errorf("after a failed build GET = %d %q, want version two still serving", code, body)
	}
	if c := s.github.Comments("Codertocat", "Hello-World", pr); len(c) != 1 || !strings.Contains(c[0].Body, "still live") {
		t.Errorf("comment after failure: %+v", c)
	}

	// 4. closed: everything byop made for the PR goes away.
	s.deliver("pull_request", "octokit/pull_request/closed.payload.json", pullRequest(repo, pr, sha3))
	s.github.WaitFor(t, "closed comment", func() bool {
		c := s.github.Comments("Codertocat", "Hello-World", pr)
		return len(c) == 1 && strings.Contains(c[0].Body, "Closed")
	})
	for _, kind := range []string{"ps", "network", "volume"} {
		args := []string{kind, "ls", "-q", "--filter", "label=com.docker.compose.project=" + key.Project()}
		if kind == "ps" {
			args = []string{"ps", "-aq", "--filter", "label=com.docker.compose.project=" + key.Project()}
		}
		out, err := exec.Command("docker", args...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("docker %v after close: %q %v, want nothing left", args, out, err)
		}
	}
	if code, _, _ := s.get(url); code != http.StatusNotFound {
		t.Errorf("after close GET = %d, want 404", code)
	}
	if errs := s.github.Errors(); len(errs) > 0 {
		t.Errorf("GitHub API calls the fake rejected: %v", errs)
	}
}

// watch polls url until stopped and returns every answer that was not a 200
// with one of the app's versions.
func (s *stack) watch(url string) (stop func() []string) {
	var mu sync.Mutex
	var bad []string
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			default:
			}
			code, body, err := s.get(url)
			if err != nil || code != 200 || !strings.HasPrefix(body, "version ") {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%d %q %v", code, body, err))
				mu.Unlock()
			}
			time.Sleep(10 * time.Millisecond) // a steady trickle of visitors, not a condition to poll
		}
	}()
	return func() []string {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		return bad
	}
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
