// Package forge talks to GitHub's REST API for byop: commit statuses, the one
// sticky preview comment per pull request, replies, reactions, permission
// checks and pull request lookups. It works against api.github.com and GitHub
// Enterprise Server.
//
// byop authenticates with a personal access token (New, PAT) or as a GitHub
// App (NewApp, NewWithAuth), whose installation token for each repository is
// fetched with the App's JWT and refreshed before it expires.
//
// Tokens travel only in the Authorization header of requests to the
// configured API host; they never appear in a URL, a log line or an error.
// Server errors and rate limits are retried a bounded number of times with
// bounded waits (see Retry).
package forge

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/byop-dev/byop/config"
)

// Client is a GitHub REST API client for one API host, with a personal
// access token or a GitHub App's installation tokens.
type Client struct {
	gh    *github.Client
	log   *slog.Logger
	login string
}

// Option configures a Client.
type Option func(*options)

type options struct {
	httpClient *http.Client
	log        *slog.Logger
	userAgent  string
	retry      Retry
	login      string
}

// WithHTTPClient sets the HTTP client whose transport, timeout and redirect
// policy are used. The client itself is not modified.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.httpClient = c } }

// WithLogger sets the logger. Requests are logged at debug level, retries at
// warn level; the Authorization header is always redacted.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithUserAgent sets the User-Agent header sent with every request.
func WithUserAgent(ua string) Option { return func(o *options) { o.userAgent = ua } }

// WithRetry sets how server errors and rate limits are retried. Zero fields
// take their defaults (DefaultAttempts, DefaultBackoff, DefaultMaxWait).
func WithRetry(r Retry) Option { return func(o *options) { o.retry = r } }

// WithLogin tells the client which login its token acts as (e.g.
// "byop[bot]"). When set, UpsertComment only adopts marked comments written
// by that login, so a comment someone else wrote with byop's marker is never
// taken over.
func WithLogin(login string) Option { return func(o *options) { o.login = login } }

// DefaultUserAgent is sent when WithUserAgent is not given.
const DefaultUserAgent = "byop"

// New returns a client for the API at baseURL, e.g. "https://api.github.com/"
// or a GitHub Enterprise Server URL; a GHES host without "/api/v3/" gets it
// appended, as go-github's WithEnterpriseURLs does. The token is sent only in
// the Authorization header. A baseURL carrying credentials is refused.
func New(baseURL string, token config.Secret, opts ...Option) (*Client, error) {
	if token.IsZero() {
		if _, err := parseBaseURL(baseURL); err != nil {
			return nil, err
		}
		return nil, errors.New("creating GitHub client: no token given")
	}
	return NewWithAuth(baseURL, PAT(token), opts...)
}

// NewWithAuth is New with credentials chosen per repository: each request
// for a repository (a path under repos/{owner}/{repo}/) carries the token
// auth gives for that repository, such as a GitHub App installation's token
// from an *App made for the same baseURL.
func NewWithAuth(baseURL string, auth Auth, opts ...Option) (*Client, error) {
	base, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if auth == nil {
		return nil, errors.New("creating GitHub client: no credentials given")
	}
	if p, ok := auth.(patAuth); ok && p.token.IsZero() {
		return nil, errors.New("creating GitHub client: no token given")
	}
	o := newOptions(opts)
	hc := o.client()
	// Retries wrap authentication so each attempt is authenticated afresh;
	// logging sits innermost so it sees (and redacts) the header actually sent.
	at := &authTransport{
		next:   &logTransport{next: hc.Transport, log: o.log},
		scheme: base.Scheme,
		host:   base.Host,
		auth:   auth,
	}
	hc.Transport = &retryTransport{next: at, policy: o.retry, log: o.log}

	gh, err := github.NewClient(hc).WithEnterpriseURLs(base.String(), base.String())
	if err != nil {
		return nil, fmt.Errorf("creating GitHub client: %w", err)
	}
	gh.UserAgent = o.userAgent
	at.prefix = gh.BaseURL.Path // with "/api/v3/" when go-github added it
	return &Client{gh: gh, log: o.log, login: o.login}, nil
}

func newOptions(opts []Option) options {
	o := options{userAgent: DefaultUserAgent}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	o.retry = o.retry.withDefaults()
	return o
}

// client returns a copy of the configured HTTP client whose Transport is
// the one to send requests with (never nil).
func (o options) client() *http.Client {
	hc := &http.Client{}
	if o.httpClient != nil {
		copied := *o.httpClient
		hc = &copied
	}
	if hc.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = 30 * time.Second
		hc.Transport = t
	}
	return hc
}

// parseBaseURL checks that raw is an absolute http(s) URL without
// credentials. Its errors never repeat the URL, which might hold a secret.
func parseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // url.Error repeats the whole URL
		}
		return nil, fmt.Errorf("parsing GitHub API base URL: %w", err)
	}
	if u.User != nil {
		return nil, errors.New("GitHub API base URL must not carry credentials: give the token separately")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("GitHub API base URL: scheme %q is not http or https", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("GitHub API base URL has no host")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("GitHub API base URL must not have a query or fragment")
	}
	return u, nil
}
