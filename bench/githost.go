package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// gitHost serves bare repositories under root over git's smart HTTP
// protocol: the real `git http-backend` as a CGI program, as a git host
// (GitHub) does for byop. It serves commits by sha (allowAnySHA1InWant), as
// GitHub does for pull request heads.
type gitHost struct {
	root string
	url  string // http://127.0.0.1:port
	srv  *http.Server
}

// gitEnv keeps git away from the machine's and the user's configuration.
func gitEnv() []string {
	return []string{
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + os.DevNull,
		"GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=byop bench", "GIT_AUTHOR_EMAIL=bench@byop.invalid",
		"GIT_COMMITTER_NAME=byop bench", "GIT_COMMITTER_EMAIL=bench@byop.invalid",
	}
}

func startGitHost(root string) (*gitHost, error) {
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("the bench serves its repositories with git: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("making the git root: %w", err)
	}
	backend := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env: append([]string{
			"GIT_PROJECT_ROOT=" + root,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=uploadpack.allowAnySHA1InWant",
			"GIT_CONFIG_VALUE_0=true",
		}, gitEnv()...),
		Stderr: io.Discard,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for git: %w", err)
	}
	g := &gitHost{root: root, url: "http://" + ln.Addr().String(), srv: &http.Server{Handler: backend, ReadHeaderTimeout: 10 * time.Second}}
	go g.srv.Serve(ln)
	return g, nil
}

func (g *gitHost) close() { g.srv.Close() }

// gitRepo is one bare repository on the host.
type gitRepo struct {
	owner, name string
	dir         string
	cloneURL    string
}

func (r *gitRepo) fullName() string { return r.owner + "/" + r.name }

// create makes an empty bare repository owner/name.
func (g *gitHost) create(ctx context.Context, owner, name string) (*gitRepo, error) {
	dir := filepath.Join(g.root, owner, name+".git")
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("creating repository %s/%s: %w", owner, name, err)
	}
	if _, err := git(ctx, "", nil, "init", "-q", "--bare", "-b", "main", dir); err != nil {
		return nil, err
	}
	return &gitRepo{owner: owner, name: name, dir: dir, cloneURL: g.url + "/" + owner + "/" + name + ".git"}, nil
}

// commit writes one commit to ref whose tree is parent's (a sha or ref; ""
// for a root commit) with files written over it, and returns its sha.
func (r *gitRepo) commit(ctx context.Context, ref, parent string, files map[string][]byte, msg string) (string, error) {
	if parent != "" {
		sha, err := git(ctx, r.dir, nil, "rev-parse", "--verify", parent+"^{commit}")
		if err != nil {
			return "", err
		}
		parent = sha
	}
	var s bytes.Buffer
	c := fastCommit{ref: ref, from: parent, msg: msg, when: time.Now(), files: files}
	c.write(&s, "")
	s.WriteString("done\n")
	if _, err := git(ctx, r.dir, &s, "fast-import", "--quiet", "--done"); err != nil {
		return "", err
	}
	return git(ctx, r.dir, nil, "rev-parse", ref)
}

// setRef points ref at sha, as GitHub does with refs/pull/<n>/head.
func (r *gitRepo) setRef(ctx context.Context, ref, sha string) error {
	_, err := git(ctx, r.dir, nil, "update-ref", ref, sha)
	return err
}

// fastCommit is one commit in a git fast-import stream.
type fastCommit struct {
	ref, from, msg string
	mark           int // 0: none
	when           time.Time
	files          map[string][]byte
}

// write writes c to s; fromMark, when not "", names the parent by mark
// (":3") and overrides from.
func (c fastCommit) write(s *bytes.Buffer, fromMark string) {
	fmt.Fprintf(s, "commit %s\n", c.ref)
	if c.mark > 0 {
		fmt.Fprintf(s, "mark :%d\n", c.mark)
	}
	fmt.Fprintf(s, "committer byop bench <bench@byop.invalid> %d +0000\n", c.when.Unix())
	fmt.Fprintf(s, "data %d\n%s\n", len(c.msg), c.msg)
	switch {
	case fromMark != "":
		fmt.Fprintf(s, "from %s\n", fromMark)
	case c.from != "":
		fmt.Fprintf(s, "from %s\n", c.from)
	}
	paths := make([]string, 0, len(c.files))
	for p := range c.files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		fmt.Fprintf(s, "M 100644 inline %s\ndata %d\n", p, len(c.files[p]))
		s.Write(c.files[p])
		s.WriteByte('\n')
	}
}

// git runs git with the bench's environment in dir ("" for none), stdin
// from in (may be nil), and returns its trimmed output.
func git(ctx context.Context, dir string, in io.Reader, args ...string) (string, error) {
	if dir != "" {
		args = append([]string{"-C", dir}, args...)
	}
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = append(os.Environ(), gitEnv()...)
	cmd.Stdin = in
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(errb.Bytes()))
	}
	return strings.TrimSpace(out.String()), nil
}
