// Package gittest runs a local smart-HTTP git host for tests: the real
// `git http-backend` behind an httptest server, over a temporary root of bare
// repositories. It needs only the git binary.
package gittest

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
)

// Delete, as the content of a file passed to Repo.Commit, removes that file.
const Delete = "\x00gittest:delete\x00"

// Option configures a Server.
type Option func(*Server)

// WithToken makes the server require HTTP basic auth whose password is
// token (any user name); other requests get 401.
func WithToken(token string) Option {
	return func(s *Server) { s.token = token }
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
	home    string
	token   string
	anySHA1 bool
	srv     *httptest.Server

	mu       sync.Mutex
	requests []Request
}

// NewServer starts a server over a fresh temporary root; it is closed when
// the test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("gittest needs the git binary: %v", err)
	}
	s := &Server{root: t.TempDir(), home: t.TempDir(), anySHA1: true}
	for _, o := range opts {
		o(s)
	}
	env := append(s.gitEnv(),
		"GIT_PROJECT_ROOT="+s.root,
		"GIT_HTTP_EXPORT_ALL=1",
	)
	if s.anySHA1 {
		env = append(env,
			"GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=uploadpack.allowAnySHA1InWant",
			"GIT_CONFIG_VALUE_0=true",
		)
	}
	backend := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env:  env,
		// http-backend reports refused wants ("not our ref") on stderr as
		// well as to the client; the client's view is what tests check.
		Stderr: io.Discard,
	}
	s.srv = httptest.NewServer(s.handler(backend))
	t.Cleanup(s.srv.Close)
	return s
}

// gitEnv isolates git from the machine's and user's configuration.
func (s *Server) gitEnv() []string {
	return []string{
		"HOME=" + s.home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + os.DevNull,
		"GIT_TERMINAL_PROMPT=0",
	}
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
		if s.token != "" && (!ok || subtle.ConstantTimeCompare([]byte(pass), []byte(s.token)) != 1) {
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

var fullNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`)

// CreateRepo creates an empty bare repository "owner/name", served at
// /owner/name.git.
func (s *Server) CreateRepo(t testing.TB, fullName string) *Repo {
	t.Helper()
	if !fullNameRE.MatchString(fullName) || strings.Contains(fullName, "..") {
		t.Fatalf("gittest: repository name %q is not owner/name", fullName)
	}
	r := &Repo{s: s, fullName: fullName, dir: filepath.Join(s.root, filepath.FromSlash(fullName)+".git")}
	r.git(t, nil, "init", "--bare", "--quiet", r.dir)
	return r
}

// Repo is a bare repository on a Server.
type Repo struct {
	s        *Server
	fullName string
	dir      string

	mu      sync.Mutex
	commits int
}

// CloneURL is the repository's HTTP URL, e.g. http://127.0.0.1:port/o/r.git.
func (r *Repo) CloneURL() string { return r.s.URL() + "/" + r.fullName + ".git" }

// Dir is the bare repository's directory on disk.
func (r *Repo) Dir() string { return r.dir }

// Commit writes files (path -> content; content Delete removes the path) in
// a new commit on top of branch, creating the branch from nothing if it does
// not exist, and returns the commit's full sha. The first branch committed
// to becomes the repository's default branch (HEAD). Commit dates advance by one
// second per commit, so equal content still gives distinct commits.
func (r *Repo) Commit(t testing.TB, branch string, files map[string]string, msg string) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	ref := "refs/heads/" + branch
	if strings.ContainsAny(branch, " \n\t") || branch == "" {
		t.Fatalf("gittest: bad branch name %q", branch)
	}
	r.commits++
	when := 1_700_000_000 + r.commits

	var in bytes.Buffer
	fmt.Fprintf(&in, "commit %s\nmark :1\n", ref)
	fmt.Fprintf(&in, "committer gittest <gittest@example.com> %d +0000\n", when)
	fmt.Fprintf(&in, "data %d\n%s\n", len(msg), msg)
	if tip := r.revParse(t, ref); tip != "" {
		fmt.Fprintf(&in, "from %s\n", tip)
	}
	paths := make([]string, 0, len(files))
	for path := range files {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	for _, path := range paths {
		content := files[path]
		if path == "" || strings.ContainsAny(path, "\n\"") {
			t.Fatalf("gittest: bad file path %q", path)
		}
		if content == Delete {
			fmt.Fprintf(&in, "D %s\n", path)
			continue
		}
		fmt.Fprintf(&in, "M 100644 inline %s\ndata %d\n%s\n", path, len(content), content)
	}
	in.WriteString("\nget-mark :1\ndone\n")
	out := r.git(t, &in, "--git-dir", r.dir, "fast-import", "--quiet", "--done")
	sha := strings.TrimSpace(out)
	if len(sha) != 40 {
		t.Fatalf("gittest: fast-import gave %q, not a commit sha", out)
	}
	if r.commits == 1 {
		// The first branch committed to becomes the default branch (HEAD).
		r.git(t, nil, "--git-dir", r.dir, "symbolic-ref", "HEAD", ref)
	}
	return sha
}

// SetRef points ref (e.g. refs/pull/7/head) at sha.
func (r *Repo) SetRef(t testing.TB, ref, sha string) {
	t.Helper()
	r.git(t, nil, "--git-dir", r.dir, "update-ref", ref, sha)
}

// DeleteRef removes ref.
func (r *Repo) DeleteRef(t testing.TB, ref string) {
	t.Helper()
	r.git(t, nil, "--git-dir", r.dir, "update-ref", "-d", ref)
}

// revParse returns the sha ref points at, or "" when it does not exist.
func (r *Repo) revParse(t testing.TB, ref string) string {
	t.Helper()
	cmd := exec.Command("git", "--git-dir", r.dir, "rev-parse", "--verify", "--quiet", ref+"^{commit}")
	cmd.Env = append(os.Environ(), r.s.gitEnv()...)
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
			return ""
		}
		t.Fatalf("gittest: git rev-parse %s: %v", ref, err)
	}
	return strings.TrimSpace(string(out))
}

func (r *Repo) git(t testing.TB, stdin io.Reader, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), r.s.gitEnv()...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gittest: git %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}
