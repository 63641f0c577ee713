// Package githttp serves a root of bare git repositories over git's smart
// HTTP protocol with the real `git http-backend` as a CGI program, as a git
// host (GitHub) serves them to byop. Repositories live at
// root/owner/name.git and are served at /owner/name.git. It needs only the
// git binary, and serves the project's tests and its tools alike.
package githttp

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/byop-dev/byop/internal/gitrepo"
)

// Options configures what the server allows.
type Options struct {
	// AnySHA1InWant serves commits that no ref points at, as GitHub does
	// for pull request heads (uploadpack.allowAnySHA1InWant).
	AnySHA1InWant bool
}

// Handler serves the repositories under root. It fails when there is no
// git binary.
func Handler(root string, o Options) (http.Handler, error) {
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("serving git repositories: %w", err)
	}
	env := append([]string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}, gitrepo.Env()...)
	if o.AnySHA1InWant {
		env = append(env,
			"GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=uploadpack.allowAnySHA1InWant",
			"GIT_CONFIG_VALUE_0=true",
		)
	}
	return &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env:  env,
		// http-backend reports what it refuses ("not our ref") to the
		// client as well as on stderr; the client's view is what counts.
		Stderr: io.Discard,
	}, nil
}

// Server is a Handler listening on a free loopback port.
type Server struct {
	root string
	url  string
	srv  *http.Server
}

// Start serves the repositories under root (created if missing) until
// Close.
func Start(root string, o Options) (*Server, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("making the git root: %w", err)
	}
	h, err := Handler(root, o)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for git: %w", err)
	}
	s := &Server{root: root, url: "http://" + ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

// URL is the server's base URL, http://127.0.0.1:port.
func (s *Server) URL() string { return s.url }

// CloneURL is where the server serves repository fullName ("owner/name").
func (s *Server) CloneURL(fullName string) string { return s.url + "/" + fullName + ".git" }

// CreateRepo creates the repository fullName under the server's root (see
// the package function CreateRepo).
func (s *Server) CreateRepo(ctx context.Context, fullName, branch string) (gitrepo.Repo, error) {
	return CreateRepo(ctx, s.root, fullName, branch)
}

// Close stops serving at once.
func (s *Server) Close() error { return s.srv.Close() }

var fullNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`)

// CreateRepo creates an empty bare repository fullName ("owner/name") under
// root, whose default branch is branch ("" for git's default).
func CreateRepo(ctx context.Context, root, fullName, branch string) (gitrepo.Repo, error) {
	if !fullNameRE.MatchString(fullName) || strings.Contains(fullName, "..") {
		return gitrepo.Repo{}, fmt.Errorf("creating a repository: %q is not owner/name", fullName)
	}
	return gitrepo.InitBare(ctx, filepath.Join(root, filepath.FromSlash(fullName)+".git"), branch)
}
