// Package gittest runs a local smart-HTTP git host for tests: the real
// `git http-backend` behind an httptest server, over a temporary root of bare
// repositories. It needs only the git binary.
package gittest

import (
	"context"
	"crypto/subtle"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/byop-dev/byop/internal/githttp"
	"github.com/byop-dev/byop/internal/gitrepo"
)

// Delete, as the content of a file passed to Repo.Commit, removes that file.
const Delete = "\x00gittest:delete\x00"

// Option configures a Server.
type Option func(*Server)

// WithToken makes the server require HTTP basic auth whose password is
// token (any user name); other requests get 401.
func WithToken(token string) Option {
	return WithPassword(func(pass string) bool {
		return subtle.ConstantTimeCompare([]byte(pass), []byte(token)) == 1
	})
}

// WithPassword makes the server require HTTP basic auth whose password
// valid accepts, for tokens that change (a GitHub App's installation
// tokens); other requests get 401.
func WithPassword(valid func(password string) bool) Option {
	return func(s *Server) { s.valid = valid }
}

// WithoutAnySHA1InWant makes the server refuse to serve commits that no ref
// points at, as a host with uploadpack.allowAnySHA1InWant unset does.
func WithoutAnySHA1InWant() Option {
	return func(s *Server) { s.anySHA1 = false }
}

// Request is one request the server received.
type Request struct {
	Method string
	Path   string // URL path, e.g. /owner/name.git/info/refs
	Query  string // raw query, e.g. service=git-upload-pack
	// AuthSent reports whether basic auth was sent; User is its user name.
	// The password is never recorded.
	AuthSent bool
	User     string
	Status   int
	// ResponseBytes counts the body bytes written back (for git-upload-pack,
	// the pack and its framing).
	ResponseBytes int64
}

// Server is a smart-HTTP git host.
type Server struct {
	root    string
	valid   func(password string) bool // nil: no auth required
	anySHA1 bool
	srv     *httptest.Server

	mu       sync.Mutex
	requests []Request
}

// NewServer starts a server over a fresh temporary root; it is closed when
// the test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{root: t.TempDir(), anySHA1: true}
	for _, o := range opts {
		o(s)
	}
	backend, err := githttp.Handler(s.root, githttp.Options{AnySHA1InWant: s.anySHA1})
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	s.srv = httptest.NewServer(s.handler(backend))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *Server) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, AuthSent: ok, User: user}
		cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			rec.Status, rec.ResponseBytes = cw.status, cw.n
			s.mu.Lock()
			s.requests = append(s.requests, rec)
			s.mu.Unlock()
		}()
		if s.valid != nil && (!ok || !s.valid(pass)) {
			cw.Header().Set("WWW-Authenticate", `Basic realm="gittest"`)
			http.Error(cw, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(cw, r)
	})
}

type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// URL is the server's base URL, e.g. http://127.0.0.1:port.
func (s *Server) URL() string { return s.srv.URL }

// Requests returns the requests received so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// CreateRepo creates an empty bare repository "owner/name", served at
// /owner/name.git.
func (s *Server) CreateRepo(t testing.TB, fullName string) *Repo {
	t.Helper()
	repo, err := githttp.CreateRepo(context.Background(), s.root, fullName, "")
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	return &Repo{s: s, fullName: fullName, repo: repo}
}

// Repo is a bare repository on a Server.
type Repo struct {
	s        *Server
	fullName string
	repo     gitrepo.Repo

	mu      sync.Mutex
	commits int
}

// CloneURL is the repository's HTTP URL, e.g. http://127.0.0.1:port/o/r.git.
func (r *Repo) CloneURL() string { return r.s.URL() + "/" + r.fullName + ".git" }

// Dir is the bare repository's directory on disk.
func (r *Repo) Dir() string { return r.repo.Dir }

// Commit writes files (path -> content; content Delete removes the path) in
// a new commit on top of branch, creating the branch from nothing if it does
// not exist, and returns the commit's full sha. The first branch committed
// to becomes the repository's default branch (HEAD). Commit dates advance by one
// second per commit, so equal content still gives distinct commits.
func (r *Repo) Commit(t testing.TB, branch string, files map[string]string, msg string) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.ContainsAny(branch, " \n\t") || branch == "" {
		t.Fatalf("gittest: bad branch name %q", branch)
	}
	ctx := context.Background()
	r.commits++
	c := gitrepo.Commit{
		Ref:       "refs/heads/" + branch,
		Message:   msg,
		When:      time.Unix(int64(1_700_000_000+r.commits), 0),
		Committer: "gittest <gittest@example.com>",
		Files:     map[string][]byte{},
	}
	tip, ok, err := r.repo.Resolve(ctx, c.Ref)
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	if ok {
		c.Parent = tip
	}
	for path, content := range files {
		if content == Delete {
			c.Delete = append(c.Delete, path)
			continue
		}
		c.Files[path] = []byte(content)
	}
	sha, err := r.repo.Commit(ctx, c)
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	if r.commits == 1 {
		// The first branch committed to becomes the default branch (HEAD).
		if _, err := r.repo.Git(ctx, nil, "symbolic-ref", "HEAD", c.Ref); err != nil {
			t.Fatalf("gittest: %v", err)
		}
	}
	return sha
}

// SetRef points ref (e.g. refs/pull/7/head) at sha.
func (r *Repo) SetRef(t testing.TB, ref, sha string) {
	t.Helper()
	if err := r.repo.SetRef(context.Background(), ref, sha); err != nil {
		t.Fatalf("gittest: %v", err)
	}
}

// DeleteRef removes ref.
func (r *Repo) DeleteRef(t testing.TB, ref string) {
	t.Helper()
	if err := r.repo.DeleteRef(context.Background(), ref); err != nil {
		t.Fatalf("gittest: %v", err)
	}
}
