package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/internal/byopproc"
	"github.com/byop-dev/byop/internal/delivery"
	"github.com/byop-dev/byop/previews"
)

// byop is a running `byop serve`, a child of the demo.
type byop struct {
	api    string // where the demo reaches byop: http://127.0.0.1:8080
	pages  string // where people do: http://localhost:8080
	secret config.Secret
	http   *http.Client
	proc   *byopproc.Proc
}

// startByop starts `byop serve` with a fresh webhook secret, its data under
// dir and its log in logPath, and waits until it answers. It has no GitHub
// token: byop reports on its own pages only.
func startByop(ctx context.Context, o options, dir, logPath string) (*byop, error) {
	b := &byop{secret: config.Secret(rand.Text()), http: localhostClient()}
	proc, err := byopproc.Start(ctx, byopproc.Options{
		Binary: o.byop,
		Log:    logPath,
		Env: []string{
			"BYOP_WEBHOOK_SECRET=" + b.secret.Reveal(),
			"BYOP_LISTEN=" + o.listen,
			"BYOP_ROUTER_ADDR=" + o.router,
			"BYOP_DATA_DIR=" + filepath.Join(dir, "byop"),
			"BYOP_REPOSITORIES=" + owner + "/*",
			"BYOP_REDIS_ADDR=" + o.redis,
			"BYOP_REDIS_DB=" + strconv.Itoa(o.redisDB),
			"BYOP_BUILDKIT_ADDR=" + o.buildkit,
			"BYOP_REGISTRY_PREFIX=" + o.registry + "/byop",
		},
	})
	if err != nil {
		return nil, err
	}
	b.proc = proc
	b.api = "http://" + proc.API()
	b.pages = "http://localhost:" + portOf(proc.API())
	return b, nil
}

// stop sends byop SIGTERM and waits until it has exited.
func (b *byop) stop() error { return b.proc.Stop() }

// waitPreview waits until url serves the sample app, printing the build's
// progress. A build that fails ends the wait with byop's reason and log.
func (b *byop) waitPreview(ctx context.Context, url string, limit time.Duration, stdout io.Writer) error {
	last := ""
	return b.proc.Poll(ctx, time.Second, limit, "waiting for the preview "+url, func() (bool, error) {
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
	return b.proc.Poll(ctx, 500*time.Millisecond, time.Minute, "waiting for the preview to close", func() (bool, error) {
		_, page, err := b.get(ctx, b.api+"/")
		return err == nil && row.MatchString(page), nil
	})
}

// deliver POSTs a pull_request webhook to byop, signed as GitHub signs them.
func (b *byop) deliver(ctx context.Context, body []byte) error {
	return delivery.Deliver(ctx, b.http, b.api+"/webhooks/github", delivery.Webhook{
		Event:     "pull_request",
		ID:        "demo-" + rand.Text(),
		Body:      body,
		Signature: delivery.Sign([]byte(b.secret.Reveal()), body),
	})
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
	repository := &github.Repository{
		Name:     github.String(repo),
		FullName: github.String(owner + "/" + repo),
		Owner:    &github.User{Login: github.String(owner)},
		CloneURL: github.String(e.cloneURL),
		HTMLURL:  github.String(e.cloneURL),
	}
	ev := github.PullRequestEvent{
		Action: github.String(action),
		Number: github.Int(pr),
		PullRequest: &github.PullRequest{
			Number: github.Int(pr),
			State:  github.String(state),
			Title:  github.String("Add a page"),
			User:   &github.User{Login: github.String(owner)},
			// The head is a branch of the repository itself, not a
			// fork's: byop builds it without a maintainer's /ok-to-test.
			Head: &github.PullRequestBranch{SHA: github.String(e.sha), Ref: github.String(branch), Repo: repository},
			Base: &github.PullRequestBranch{Ref: github.String("main"), Repo: repository},
		},
		Repo:   repository,
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
