package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const dockerfile = `FROM %s
COPY index.html /www/index.html
EXPOSE 8080
CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
`

// indexHTML is the sample app's page; the demo waits for it at the preview URL.
const indexHTML = `<!doctype html>
<title>byop demo</title>
<h1>Hello from a byop preview</h1>
<p>This page was built from a pull request by BuildKit and is served by docker compose behind byop's router.</p>
`

// gitEnv keeps git away from the machine's and the user's configuration
// (signing, hooks, templates) and gives the commit a fixed author and date,
// so the sample commit is the same on every run.
func gitEnv() []string {
	return []string{
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + os.DevNull,
		"GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=byop demo", "GIT_AUTHOR_EMAIL=demo@byop.invalid", "GIT_AUTHOR_DATE=2024-01-01T00:00:00Z",
		"GIT_COMMITTER_NAME=byop demo", "GIT_COMMITTER_EMAIL=demo@byop.invalid", "GIT_COMMITTER_DATE=2024-01-01T00:00:00Z",
	}
}

// sampleRepo makes the sample app's repository in dir: one commit on the
// pull request's branch, also under refs/pull/<n>/head as GitHub serves it.
// It returns the commit's sha.
func sampleRepo(ctx context.Context, dir, baseImage string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("making the sample repository: %w", err)
	}
	files := map[string]string{"Dockerfile": fmt.Sprintf(dockerfile, baseImage), "index.html": indexHTML}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return "", fmt.Errorf("making the sample repository: %w", err)
		}
	}
	var sha string
	for _, args := range [][]string{
		{"init", "-q", "-b", branch},
		{"config", "uploadpack.allowAnySHA1InWant", "true"},
		{"add", "Dockerfile", "index.html"},
		{"commit", "-q", "-m", "Add a page served by busybox httpd"},
		{"rev-parse", "HEAD"},
	} {
		out, err := git(ctx, dir, args...)
		if err != nil {
			return "", err
		}
		sha = out
	}
	if _, err := git(ctx, dir, "update-ref", fmt.Sprintf("refs/pull/%d/head", pr), sha); err != nil {
		return "", err
	}
	return sha, nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), gitEnv()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// serveGit serves the repositories under root over git's smart HTTP
// protocol, with `git http-backend` as a CGI program, on a free loopback
// port. It returns the server's base URL.
func serveGit(root string) (string, func(), error) {
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return "", nil, fmt.Errorf("the demo serves its sample repository with git: %w", err)
	}
	backend := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env:  append([]string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}, gitEnv()...),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listening for git: %w", err)
	}
	srv := &http.Server{Handler: backend, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}
