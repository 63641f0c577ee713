package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/byop-dev/byop/internal/byopproc"
	"github.com/byop-dev/byop/internal/delivery"
	"github.com/byop-dev/byop/previews"
)

// byopProc is a running `byop serve`, started the way an operator starts
// it: the binary, BYOP_* settings in its environment.
type byopProc struct {
	*byopproc.Proc
	secret []byte
	redis  asynq.RedisClientOpt
	http   *http.Client
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
	secret := []byte(rand.Text())
	proc, err := byopproc.Start(ctx, byopproc.Options{
		Binary: b.o.byop,
		Log:    filepath.Join(s.dir, "byop.log"),
		Env: append([]string{
			"BYOP_WEBHOOK_SECRET=" + string(secret),
			"BYOP_LISTEN=127.0.0.1:0",
			"BYOP_ROUTER_ADDR=127.0.0.1:0",
			"BYOP_DATA_DIR=" + filepath.Join(s.dir, "data"),
			"BYOP_REPOSITORIES=" + benchOwner + "/*",
			"BYOP_REDIS_ADDR=" + b.o.redis,
			"BYOP_REDIS_DB=" + strconv.Itoa(s.redisDB),
			"BYOP_BUILDKIT_ADDR=" + b.o.buildkit,
			"BYOP_REGISTRY_PREFIX=" + b.registryPrefix(),
			"BYOP_CONCURRENCY=" + strconv.Itoa(s.concurrency),
			"BYOP_DEPLOY_TIMEOUT=1m",
			"BYOP_LOG_LEVEL=info",
		}, s.env...),
	})
	if err != nil {
		return nil, err
	}
	return &byopProc{Proc: proc, secret: secret, redis: ropt, http: localClient()}, nil
}

// rss is byop's resident set size in bytes, from /proc.
func (p *byopProc) rss() (int64, error) { return procRSS(p.Pid()) }

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

// mustQueue delivers and fails unless byop queued the delivery.
func (p *byopProc) mustQueue(ctx context.Context, event string, body []byte) error {
	return delivery.Deliver(ctx, p.http, "http://"+p.API()+"/webhooks/github", delivery.Webhook{
		Event:     event,
		ID:        "bench-" + rand.Text(),
		Body:      body,
		Signature: delivery.Sign(p.secret, body),
	})
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
	err := p.Poll(ctx, pollEvery, limit, "waiting for "+host+" to serve "+strconv.Quote(want), func() (bool, error) {
		code, body, err := p.get(ctx, "http://"+p.Router()+"/", host)
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
	return p.Poll(ctx, 20*time.Millisecond, limit, "waiting for byop's queue to drain", func() (bool, error) {
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
	code, page, err := p.get(ctx, "http://"+p.API()+"/", "")
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

// field reads key=value from a slog text line.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// logLines returns byop's log from offset on, and the new offset.
func (p *byopProc) logLines(offset int64) ([]string, int64) {
	f, err := os.Open(p.LogPath())
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
