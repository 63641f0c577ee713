package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/previews"
)

// byop is a running `byop serve`, a child of the demo.
type byop struct {
	api     string // where the demo reaches byop: http://127.0.0.1:8080
	pages   string // where people do: http://localhost:8080
	logPath string
	secret  config.Secret
	http    *http.Client
	cancel  context.CancelFunc // stops byop
	exited  chan struct{}      // closed once byop has exited, with err set
	err     error
}

// startByop starts `byop serve` with a fresh webhook secret, its data under
// dir and its log in dir/byop.log. It has no GitHub token: byop reports on
// its own pages only.
func startByop(o options, dir string) (*byop, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("starting byop: %w", err)
	}
	host, port, err := net.SplitHostPort(o.listen)
	if err != nil {
		return nil, fmt.Errorf("-listen %q: %w", o.listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	b := &byop{
		api:     "http://" + net.JoinHostPort(host, port),
		pages:   "http://localhost:" + port,
		logPath: filepath.Join(dir, "byop.log"),
		secret:  config.Secret(rand.Text()),
		http:    localhostClient(),
		exited:  make(chan struct{}),
	}
	logFile, err := os.Create(b.logPath)
	if err != nil {
		return nil, fmt.Errorf("starting byop: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, o.byop, "serve")
	cmd.Env = append(withoutBYOP(os.Environ()),
		"BYOP_WEBHOOK_SECRET="+b.secret.Reveal(),
		"BYOP_LISTEN="+o.listen,
		"BYOP_ROUTER_ADDR="+o.router,
		"BYOP_DATA_DIR="+filepath.Join(dir, "byop"),
		"BYOP_REPOSITORIES="+owner+"/*",
		"BYOP_REDIS_ADDR="+o.redis,
		"BYOP_REDIS_DB="+strconv.Itoa(o.redisDB),
		"BYOP_BUILDKIT_ADDR="+o.buildkit,
		"BYOP_REGISTRY_PREFIX="+o.registry+"/byop",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// byop gets its own process group, so that Ctrl-C in the terminal
	// reaches only the demo, which closes the pull request before it stops
	// byop with SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 45 * time.Second // byop gives running tasks 30s to finish
	if err := cmd.Start(); err != nil {
		cancel()
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", o.byop, err)
	}
	b.cancel = cancel
	go func() {
		b.err = cmd.Wait()
		logFile.Close()
		close(b.exited)
	}()
	return b, nil
}

// withoutBYOP drops the caller's own BYOP_* settings (a GitHub token, say)
// from environ: the demo's byop runs with the demo's settings only.
func withoutBYOP(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "BYOP_") {
			out = append(out, kv)
		}
	}
	return out
}

// stop sends byop SIGTERM and waits until it has exited.
func (b *byop) stop() error {
	b.cancel()
	<-b.exited
	// Wait reports a clean exit after SIGTERM as the cancelled context.
	if b.err != nil && !errors.Is(b.err, context.Canceled) {
		return fmt.Errorf("byop exited: %w (log: %s)", b.err, b.logPath)
	}
	return nil
}

func (b *byop) waitHealthy(ctx context.Context, limit time.Duration) error {
	return b.poll(ctx, 200*time.Millisecond, limit, "waiting for byop's /healthz", func() (bool, error) {
		code, _, err := b.get(ctx, b.api+"/healthz")
		return err == nil && code == http.StatusOK, nil
	})
}

// waitPreview waits until url serves the sample app, printing the build's
// progress. A build that fails ends the wait with byop's reason and log.
func (b *byop) waitPreview(ctx context.Context, url string, limit time.Duration, stdout io.Writer) error {
	last := ""
	return b.poll(ctx, time.Second, limit, "waiting for the preview "+url, func() (bool, error) {
		if code, body, err := b.get(ctx, url); err == nil && code == http.StatusOK && strings.Contains(body, "Hello from a byop preview") {
			return true, nil
		}
		_, page, err := b.get(ctx, b.api+"/builds/1")
		if err != nil {
			return false, nil
		}
		m := buildState.FindStringSubmatch(page)
		if m == nil {
			return false, nil
		}
		state, reason, _ := strings.Cut(html.UnescapeString(m[1]), ": ")
		if state != last {
			fmt.Fprintf(stdout, "demo: build 1: %s\n", state)
			last = state
		}
		if state == string(previews.Failed) || state == string(previews.Cancelled) {
			_, log, _ := b.get(ctx, b.api+"/builds/1/log")
			return false, fmt.Errorf("build 1 %s: %s\nthe end of its log (%s/builds/1/log):\n%s", state, reason, b.pages, lastLines(log, 20))
		}
		return false, nil
	})
}

// buildState finds "state: reason" on a build page.
var buildState = regexp.MustCompile(`<p class="state [^"]*">([^<]*)</p>`)

// teardown delivers the pull request's closing and waits until byop's
// pages show its preview closed.
func (b *byop) teardown(ctx context.Context, key previews.Key, closed []byte) error {
	if err := b.deliver(ctx, closed); err != nil {
		return err
	}
	row := regexp.MustCompile(`<td>` + regexp.QuoteMeta(html.EscapeString(key.String())) + `</td><td class="state ` + string(previews.Closed) + `">`)
	return b.poll(ctx, 500*time.Millisecond, time.Minute, "waiting for the preview to close", func() (bool, error) {
		_, page, err := b.get(ctx, b.api+"/")
		return err == nil && row.MatchString(page), nil
	})
}

// deliver POSTs a pull_request webhook to byop, signed as GitHub signs them.
func (b *byop) deliver(ctx context.Context, body []byte) error {
	mac := hmac.New(sha256.New, []byte(b.secret.Reveal()))
	mac.Write(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.api+"/webhooks/github", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("delivering the webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "pull_request")
	req.Header.Set("X-GitHub-Delivery", "demo-"+rand.Text())
	req.Header.Set(github.SHA256SignatureHeader, "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := b.http.Do(req)
	if err != nil {
		return fmt.Errorf("delivering the webhook: %w", err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusAccepted || !bytes.HasPrefix(answer, []byte("queued")) {
		return fmt.Errorf("delivering the webhook: byop answered %s %q, want it queued", resp.Status, bytes.TrimSpace(answer))
	}
	return nil
}

// poll calls check every interval until it is done or fails, byop exits,
// ctx ends or limit passes.
func (b *byop) poll(ctx context.Context, every, limit time.Duration, what string, check func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		if done, err := check(); done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: gave up after %s (byop's log: %s)", what, limit, b.logPath)
		}
		select {
		case <-b.exited:
			log, _ := os.ReadFile(b.logPath)
			return fmt.Errorf("%s: byop exited (%v); the end of its log:\n%s", what, b.err, lastLines(string(log), 20))
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, context.Cause(ctx))
		case <-time.After(every):
		}
	}
}

func (b *byop) get(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), err
}

// localhostClient dials loopback for localhost and every *.localhost host,
// as browsers do: Go's resolver may not map pr-1.sample-app.demo.localhost.
func localhostClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if host, port, err := net.SplitHostPort(addr); err == nil && (host == "localhost" || strings.HasSuffix(host, ".localhost")) {
					addr = net.JoinHostPort("127.0.0.1", port)
				}
				return d.DialContext(ctx, network, addr)
			},
		},
	}
}

// event is the sample pull request as GitHub describes it in a
// pull_request delivery.
type event struct{ sha, cloneURL string }

func (e event) payload(action string) []byte {
	state := "open"
	if action == "closed" {
		state = "closed"
	}
	ev := github.PullRequestEvent{
		Action: github.String(action),
		Number: github.Int(pr),
		PullRequest: &github.PullRequest{
			Number: github.Int(pr),
			State:  github.String(state),
			Title:  github.String("Add a page"),
			Head:   &github.PullRequestBranch{SHA: github.String(e.sha), Ref: github.String(branch)},
			Base:   &github.PullRequestBranch{Ref: github.String("main")},
		},
		Repo: &github.Repository{
			Name:     github.String(repo),
			FullName: github.String(owner + "/" + repo),
			Owner:    &github.User{Login: github.String(owner)},
			CloneURL: github.String(e.cloneURL),
			HTMLURL:  github.String(e.cloneURL),
		},
		Sender: &github.User{Login: github.String(owner)},
	}
	body, _ := json.Marshal(ev) // structs of strings and numbers: cannot fail
	return body
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
