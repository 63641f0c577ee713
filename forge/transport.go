package forge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// authTransport adds the token for the request's repository to requests for
// the API host, and only to those: a redirect elsewhere never carries it.
type authTransport struct {
	next         http.RoundTripper
	scheme, host string
	prefix       string // the API's path, e.g. "/" or "/api/v3/"
	auth         Auth
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if !strings.EqualFold(r.URL.Scheme, t.scheme) || !strings.EqualFold(r.URL.Host, t.host) {
		r.Header.Del("Authorization")
		return t.next.RoundTrip(r)
	}
	owner, repo := repoOf(r.URL.Path, t.prefix)
	tok, err := t.auth.Token(r.Context(), owner, repo)
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper closes the body, even on errors
		}
		return nil, err
	}
	r.Header.Set("Authorization", "Bearer "+tok.Reveal())
	resp, err := t.next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		if rv, ok := t.auth.(refusable); ok {
			rv.refused(r.Context(), owner, repo)
		}
	}
	return resp, err
}

// refusable is an Auth that wants to know when GitHub refused a token it
// gave, so as to get another next time.
type refusable interface {
	refused(ctx context.Context, owner, repo string)
}

// repoOf returns the owner and name of the repository that path, under the
// API's prefix, is about: "", "" when it is not under repos/{owner}/{repo}/.
func repoOf(path, prefix string) (owner, repo string) {
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok {
		return "", ""
	}
	seg := strings.SplitN(rest, "/", 4)
	if len(seg) < 3 || seg[0] != "repos" || seg[1] == "" || seg[2] == "" {
		return "", ""
	}
	return seg[1], seg[2]
}

// userAgentTransport sets the User-Agent on requests that have none (those
// ghinstallation makes to fetch installation tokens).
type userAgentTransport struct {
	next http.RoundTripper
	ua   string
}

func (t *userAgentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("User-Agent") != "" {
		return t.next.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set("User-Agent", t.ua)
	return t.next.RoundTrip(r)
}

// logTransport logs each request at debug level with credentials redacted.
type logTransport struct {
	next http.RoundTripper
	log  *slog.Logger
}

func (t *logTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if !t.log.Enabled(ctx, slog.LevelDebug) {
		return t.next.RoundTrip(req)
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	attrs := []slog.Attr{
		slog.String("method", req.Method),
		slog.String("url", req.URL.Redacted()),
		slog.Any("request_headers", redactHeader(req.Header)),
		slog.Duration("elapsed", time.Since(start)),
	}
	if err != nil {
		attrs = append(attrs, slog.Any("error", err))
	} else {
		attrs = append(attrs, slog.Int("status", resp.StatusCode), slog.Any("response_headers", redactHeader(resp.Header)))
	}
	t.log.LogAttrs(ctx, slog.LevelDebug, "GitHub API request", attrs...)
	return resp, err
}

// redactHeader returns a copy of h with credentials replaced.
func redactHeader(h http.Header) http.Header {
	out := h.Clone()
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie"} {
		if _, ok := out[k]; ok {
			out[k] = []string{"[redacted]"}
		}
	}
	return out
}

// Retry bounds how server errors (5xx) and rate limits (403/429 with
// Retry-After, or with X-RateLimit-Remaining: 0 and X-RateLimit-Reset) are
// retried. A rate limit that asks for a wait longer than MaxWait, or longer
// than the context has left, is not waited for: the call fails at once with
// a *RetryError, since GitHub may ban integrations that keep asking early.
type Retry struct {
	// Attempts is the number of tries, including the first. 1 disables retrying.
	Attempts int
	// Backoff is the wait before retrying a server error; it doubles on each retry.
	Backoff time.Duration
	// MaxWait caps every wait.
	MaxWait time.Duration
	// Sleep waits for d or until ctx is done. Nil means a real timer.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Defaults for zero fields of Retry.
const (
	DefaultAttempts = 4
	DefaultBackoff  = time.Second
	DefaultMaxWait  = time.Minute
)

func (r Retry) withDefaults() Retry {
	if r.Attempts < 1 {
		r.Attempts = DefaultAttempts
	}
	if r.Backoff <= 0 {
		r.Backoff = DefaultBackoff
	}
	if r.MaxWait <= 0 {
		r.MaxWait = DefaultMaxWait
	}
	if r.Sleep == nil {
		r.Sleep = sleep
	}
	return r
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RetryError reports a request that GitHub kept refusing with a retryable
// answer, or asked to be retried later than byop is willing to wait.
type RetryError struct {
	Attempts    int           // requests sent
	StatusCode  int           // the last answer's status
	Message     string        // GitHub's message in the last answer, if any
	RateLimited bool          // the last answer was a rate limit
	Wait        time.Duration // when non-zero: the wait GitHub asked for, which was not done
	waitLimit   string        // what Wait exceeded
}

func (e *RetryError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "GitHub answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Wait > 0 {
		fmt.Fprintf(&b, " asking to wait %s, longer than %s (after %d attempts)", e.Wait, e.waitLimit, e.Attempts)
	} else {
		fmt.Fprintf(&b, " on each of %d attempts, giving up", e.Attempts)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %q", e.Message)
	}
	return b.String()
}

// retryTransport retries server errors and rate limits within a Retry policy.
type retryTransport struct {
	next   http.RoundTripper
	policy Retry
	log    *slog.Logger
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 1; ; attempt++ {
		r := req
		if attempt > 1 {
			r = req.Clone(ctx)
			if req.GetBody != nil {
				body, err := req.GetBody()
				if err != nil {
					return nil, fmt.Errorf("rewinding request body for retry: %w", err)
				}
				r.Body = body
			}
		}
		resp, err := t.next.RoundTrip(r)
		if err != nil {
			return nil, err
		}
		wait, rateLimited, retryable := t.classify(resp, attempt)
		if !retryable {
			return resp, nil
		}
		rerr := &RetryError{
			Attempts:    attempt,
			StatusCode:  resp.StatusCode,
			Message:     drainMessage(resp),
			RateLimited: rateLimited,
		}
		switch {
		case wait > t.policy.MaxWait:
			rerr.Wait, rerr.waitLimit = wait, "the "+t.policy.MaxWait.String()+" allowed"
			return nil, rerr
		case deadlineBefore(ctx, wait):
			rerr.Wait, rerr.waitLimit = wait, "the time left before the deadline"
			return nil, rerr
		case attempt >= t.policy.Attempts || !replayable:
			return nil, rerr
		}
		t.log.LogAttrs(ctx, slog.LevelWarn, "retrying GitHub API request",
			slog.String("method", req.Method),
			slog.String("url", req.URL.Redacted()),
			slog.Int("status", resp.StatusCode),
			slog.Bool("rate_limited", rateLimited),
			slog.Int("attempt", attempt),
			slog.Duration("wait", wait))
		if err := t.policy.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// classify says whether resp is worth retrying and after how long. Rate
// limits report the wait GitHub asked for, unclamped; server errors use the
// policy's backoff, clamped to MaxWait.
func (t *retryTransport) classify(resp *http.Response, attempt int) (wait time.Duration, rateLimited, retryable bool) {
	backoff := t.policy.Backoff << (attempt - 1)
	if backoff > t.policy.MaxWait || backoff <= 0 {
		backoff = t.policy.MaxWait
	}
	code := resp.StatusCode
	switch {
	case code == http.StatusTooManyRequests || code == http.StatusForbidden:
		if d, ok := retryAfter(resp.Header); ok {
			return d, true, true
		}
		if resp.Header.Get("X-RateLimit-Remaining") == "0" {
			if reset, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
				d := time.Until(time.Unix(reset, 0)).Round(time.Second)
				if d < time.Second {
					d = time.Second // the clocks disagree; a short pause is enough
				}
				return d, true, true
			}
		}
		if code == http.StatusTooManyRequests {
			return backoff, true, true
		}
		return 0, false, false // a plain 403 is a permission problem
	case code >= 500 && code != http.StatusNotImplemented:
		if d, ok := retryAfter(resp.Header); ok && d <= t.policy.MaxWait {
			return d, false, true
		}
		return backoff, false, true
	}
	return 0, false, false
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(h http.Header) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		d := time.Until(at)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

func deadlineBefore(ctx context.Context, wait time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return ok && time.Now().Add(wait).After(deadline)
}

// drainMessage reads GitHub's error message from resp's body and closes it.
func drainMessage(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	const max = 200
	if r := []rune(m.Message); len(r) > max {
		return string(r[:max]) + "…"
	}
	return m.Message
}
