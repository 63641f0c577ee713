package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/byop-dev/byop/previews"
)

// byopProc is a running `byop serve`, started the way an operator starts
// it: the binary, BYOP_* settings in its environment.
type byopProc struct {
	cmd     *exec.Cmd
	api     string // host:port of the webhook receiver and pages
	router  string // host:port of the preview router
	secret  []byte
	logPath string
	redis   asynq.RedisClientOpt
	http    *http.Client
	exited  chan struct{}
	err     error
}

// byopSettings are what a measure changes of byop's configuration.
type byopSettings struct {
	dir         string // data dir and log
	redisDB     int
	concurrency int
	env         []string // more BYOP_* settings
}

// startByop starts byop serve and waits until it listens and /healthz
// answers. Its Redis database is flushed first; before (if not nil) runs
// after the flush and before byop starts.
func (b *bench) startByop(ctx context.Context, s byopSettings, before func(asynq.RedisClientOpt) error) (*byopProc, error) {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("starting byop: %w", err)
	}
	ropt := asynq.RedisClientOpt{Addr: b.o.redis, DB: s.redisDB}
	if err := flushRedis(ctx, ropt); err != nil {
		return nil, err
	}
	if before != nil {
		if err := before(ropt); err != nil {
			return nil, err
		}
	}
	if s.concurrency == 0 {
		s.concurrency = 4
	}
	p := &byopProc{
		secret:  []byte(rand.Text()),
		logPath: filepath.Join(s.dir, "byop.log"),
		redis:   ropt,
		http:    localClient(),
		exited:  make(chan struct{}),
	}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, fmt.Errorf("starting byop: %w", err)
	}
	ready := &readyWriter{want: "byop serving", found: make(chan string, 1)}
	cmd := exec.Command(b.o.byop, "serve")
	cmd.Env = append(withoutBYOP(os.Environ()),
		"BYOP_WEBHOOK_SECRET="+string(p.secret),
		"BYOP_LISTEN=127.0.0.1:0",
		"BYOP_ROUTER_ADDR=127.0.0.1:0",
		"BYOP_DATA_DIR="+filepath.Join(s.dir, "data"),
		"BYOP_REPOSITORIES="+benchOwner+"/*",
		"BYOP_REDIS_ADDR="+b.o.redis,
		"BYOP_REDIS_DB="+strconv.Itoa(s.redisDB),
		"BYOP_BUILDKIT_ADDR="+b.o.buildkit,
		"BYOP_REGISTRY_PREFIX="+b.registryPrefix(),
		"BYOP_CONCURRENCY="+strconv.Itoa(s.concurrency),
		"BYOP_DEPLOY_TIMEOUT=1m",
		"BYOP_LOG_LEVEL=info",
	)
	cmd.Env = append(cmd.Env, s.env...)
	cmd.Stdout = logFile
	cmd.Stderr = io.MultiWriter(logFile, ready)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", b.o.byop, err)
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	select {
	case line := <-ready.found:
		p.api, p.router = field(line, "api"), field(line, "router")
	case <-p.exited:
		return nil, fmt.Errorf("byop exited at start: %v; the end of its log:\n%s", p.err, tail(p.logPath, 20))
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, fmt.Errorf("byop did not listen within 30s (log: %s)", p.logPath)
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
	if p.api == "" || p.router == "" {
		p.stop()
		return nil, fmt.Errorf("cannot read byop's addresses from its log (%s)", p.logPath)
	}
	err = poll(ctx, 10*time.Millisecond, 30*time.Second, "byop's /healthz", func() (bool, error) {
		code, _, err := p.get(ctx, "http://"+p.api+"/healthz", "")
		return err == nil && code == http.StatusOK, nil
	})
	if err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// stop sends byop SIGTERM and waits until it exits; byop gives running
// tasks 30 seconds, so after 45 it is killed.
func (p *byopProc) stop() error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(45 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && !ee.Exited() {
		return fmt.Errorf("byop: %w", p.err) // killed
	}
	return p.err
}

// rss is byop's resident set size in bytes, from /proc.
func (p *byopProc) rss() (int64, error) { return procRSS(p.cmd.Process.Pid) }

func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the RSS of %d: %w", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// sign returns the X-Hub-Signature-256 of body.
func sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// deliver POSTs a signed delivery and returns byop's answer once it has
// read the whole response.
func (p *byopProc) deliver(ctx context.Context, event string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.api+"/webhooks/github", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", "bench-"+rand.Text())
	req.Header.Set("X-Hub-Signature-256", sign(p.secret, body))
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("delivering %s: %w", event, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// mustQueue delivers and fails unless byop queued the delivery.
func (p *byopProc) mustQueue(ctx context.Context, event string, body []byte) error {
	code, answer, err := p.deliver(ctx, event, body)
	if err != nil {
		return err
	}
	if code != http.StatusAccepted || !strings.HasPrefix(answer, "queued") {
		return fmt.Errorf("delivering %s: byop answered %d %q, want it queued", event, code, strings.TrimSpace(answer))
	}
	return nil
}

// get fetches url; host, if not "", is sent as the Host header (a preview
// host, served by the router).
func (p *byopProc) get(ctx context.Context, url, host string) (int, string, error) {
	return httpGet(ctx, p.http, url, host)
}

func httpGet(ctx context.Context, c *http.Client, url, host string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// previewHost is the host byop's router serves a pull request's preview on.
func previewHost(r *gitRepo, pr int) string {
	return previews.Key{Owner: r.owner, Repo: r.name, PR: pr}.Host("localhost")
}

// waitServes polls the preview of pr through byop's router until it
// answers 200 with body want, every 5 ms, and returns when it did.
func (p *byopProc) waitServes(ctx context.Context, r *gitRepo, pr int, want string, limit time.Duration) (time.Time, error) {
	host := previewHost(r, pr)
	var at time.Time
	err := p.poll(ctx, pollEvery, limit, "waiting for "+host+" to serve "+strconv.Quote(want), func() (bool, error) {
		code, body, err := p.get(ctx, "http://"+p.router+"/", host)
		if err == nil && code == http.StatusOK && body == want {
			at = time.Now()
			return true, nil
		}
		return false, nil
	})
	return at, err
}

// pollEvery is how often the bench asks whether new content is served,
// for byop and its comparison alike.
const pollEvery = 5 * time.Millisecond

// waitIdle waits until byop's queues hold no task waiting, running or due
// for retry: every delivery so far has been handled.
func (p *byopProc) waitIdle(ctx context.Context, limit time.Duration) error {
	in := asynq.NewInspector(p.redis)
	defer in.Close()
	return p.poll(ctx, 20*time.Millisecond, limit, "waiting for byop's queue to drain", func() (bool, error) {
		queues, err := in.Queues() // those that ever had a task
		if err != nil {
			return false, fmt.Errorf("listing queues: %w", err)
		}
		for _, q := range queues {
			info, err := in.GetQueueInfo(q)
			if err != nil {
				return false, fmt.Errorf("reading queue %s: %w", q, err)
			}
			if info.Pending+info.Active+info.Scheduled+info.Retry+info.Aggregating > 0 {
				return false, nil
			}
		}
		return true, nil
	})
}

// buildStates reads the states of byop's builds from its index page.
func (p *byopProc) buildStates(ctx context.Context) (map[previews.State]int, error) {
	code, page, err := p.get(ctx, "http://"+p.api+"/", "")
	if err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("reading byop's index page: %d %v", code, err)
	}
	_, builds, _ := strings.Cut(page, "<h2>Builds</h2>")
	out := map[previews.State]int{}
	for _, m := range stateCell.FindAllStringSubmatch(builds, -1) {
		out[previews.State(m[1])]++
	}
	return out, nil
}

var stateCell = regexp.MustCompile(`<td class="state ([a-z]+)">`)

// poll calls check every interval until it is done or fails, byop exits,
// ctx ends or limit passes.
func (p *byopProc) poll(ctx context.Context, every, limit time.Duration, what string, check func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		if done, err := check(); done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: gave up after %s (byop's log: %s)", what, limit, p.logPath)
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s: byop exited (%v); the end of its log:\n%s", what, p.err, tail(p.logPath, 20))
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(every):
		}
	}
}

// poll without a byop: calls check every interval until done, failed, ctx
// ends or limit passes.
func poll(ctx context.Context, every, limit time.Duration, what string, check func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		if done, err := check(); done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: gave up after %s", what, limit)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(every):
		}
	}
}

// localClient is the bench's HTTP client for byop's pages, its router and
// the previews: no proxy from the environment, no connection reuse, so that
// every request is a browser's first.
func localClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			DialContext:       (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
	}
}

func flushRedis(ctx context.Context, opt asynq.RedisClientOpt) error {
	c := redis.NewClient(&redis.Options{Addr: opt.Addr, DB: opt.DB})
	defer c.Close()
	if err := c.FlushDB(ctx).Err(); err != nil {
		return fmt.Errorf("flushing redis db %d at %s: %w", opt.DB, opt.Addr, err)
	}
	return nil
}

// readyWriter watches byop's log for the line that says where it listens.
type readyWriter struct {
	want  string
	found chan string
	mu    sync.Mutex
	buf   []byte
	done  bool
}

func (w *readyWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if strings.Contains(line, w.want) {
			w.done = true
			w.buf = nil
			w.found <- line
			break
		}
	}
	return len(b), nil
}

// field reads key=value from a slog text line.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

func withoutBYOP(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "BYOP_") {
			out = append(out, kv)
		}
	}
	return out
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logLines returns byop's log from offset on, and the new offset.
func (p *byopProc) logLines(offset int64) ([]string, int64) {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil, offset
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		offset += int64(len(sc.Bytes())) + 1
	}
	return lines, offset
}

// event rewrites a real pull_request delivery to the bench's repository,
// pull request number and head commit.
func (b *bench) event(action string, r *gitRepo, pr int, sha, branch string) ([]byte, error) {
	raw, ok := b.payloads[action]
	if !ok {
		return nil, fmt.Errorf("no %s payload", action)
	}
	var p map[string]any
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("reading the %s payload: %w", action, err)
	}
	p["number"] = pr
	pull := p["pull_request"].(map[string]any)
	pull["number"] = pr
	head := pull["head"].(map[string]any)
	head["sha"] = sha
	head["ref"] = branch
	// The head is a branch of the repository itself, not a fork's: byop
	// builds it without asking for a maintainer's approval.
	for _, repo := range []any{p["repository"], head["repo"], pull["base"].(map[string]any)["repo"]} {
		repo, ok := repo.(map[string]any)
		if !ok {
			continue
		}
		repo["name"] = r.name
		repo["full_name"] = r.fullName()
		repo["owner"].(map[string]any)["login"] = r.owner
		repo["clone_url"] = r.cloneURL
		repo["html_url"] = r.cloneURL
	}
	// Indented as GitHub sends it: the body keeps its real size.
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p); err != nil {
		return nil, fmt.Errorf("writing the %s payload: %w", action, err)
	}
	return out.Bytes(), nil
}
