// Package gitrepo makes and changes bare git repositories with the git
// command line, away from the machine's and the user's configuration: the
// repositories that the project's tests and tools serve as a git host would.
// Commits are written with `git fast-import`, so no work tree is needed and
// a commit's date and committer are the caller's to choose.
package gitrepo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Env is what Run adds to the process environment: no system or global
// configuration (signing, hooks, templates, credential helpers), and no
// prompt for credentials.
func Env() []string {
	return []string{
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + os.DevNull,
		"GIT_TERMINAL_PROMPT=0",
	}
}

// Run runs git with args in dir ("" for the current directory), with stdin
// from in (nil for none) and Env, and returns its standard output trimmed of
// surrounding space. A failure carries git's standard error.
func Run(ctx context.Context, dir string, in io.Reader, args ...string) (string, error) {
	if dir != "" {
		args = append([]string{"-C", dir}, args...)
	}
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = append(os.Environ(), Env()...)
	cmd.Stdin = in
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(errb.Bytes()))
	}
	return strings.TrimSpace(out.String()), nil
}

// Repo is a bare repository on disk.
type Repo struct {
	Dir string
}

// InitBare creates an empty bare repository in dir whose default branch
// (HEAD) is branch, or git's default when branch is "".
func InitBare(ctx context.Context, dir, branch string) (Repo, error) {
	args := []string{"init", "--quiet", "--bare"}
	if branch != "" {
		args = append(args, "--initial-branch", branch)
	}
	if _, err := Run(ctx, "", nil, append(args, dir)...); err != nil {
		return Repo{}, fmt.Errorf("creating the repository %s: %w", dir, err)
	}
	return Repo{Dir: dir}, nil
}

// Git runs git with args in the repository (see Run).
func (r Repo) Git(ctx context.Context, in io.Reader, args ...string) (string, error) {
	return Run(ctx, r.Dir, in, args...)
}

// Resolve returns the sha of the commit rev names, and false when rev names
// no commit.
func (r Repo) Resolve(ctx context.Context, rev string) (string, bool, error) {
	sha, err := r.Git(ctx, nil, "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return "", false, nil // --verify --quiet: no such commit
	}
	if err != nil {
		return "", false, err
	}
	return sha, true, nil
}

// SetRef points ref (e.g. refs/pull/7/head) at sha.
func (r Repo) SetRef(ctx context.Context, ref, sha string) error {
	_, err := r.Git(ctx, nil, "update-ref", ref, sha)
	return err
}

// DeleteRef removes ref.
func (r Repo) DeleteRef(ctx context.Context, ref string) error {
	_, err := r.Git(ctx, nil, "update-ref", "-d", ref)
	return err
}

// DefaultCommitter commits when Commit.Committer is "".
const DefaultCommitter = "byop <git@byop.invalid>"

// Commit is one commit to write.
type Commit struct {
	// Ref is the ref the commit is written to, e.g. refs/heads/main. Like
	// a push, the write fails unless it moves Ref forward.
	Ref string
	// Parent is the parent commit: a sha or a ref of the repository, or
	// ":N" for the N-th commit (from 1) of the same Import; "" for a
	// commit with no parent.
	Parent string
	// Files are written over the parent's tree, path to content; Delete
	// removes paths from it.
	Files  map[string][]byte
	Delete []string
	// Message, the committer's date (zero for now) and identity ("Name
	// <email>", "" for DefaultCommitter). The author is the committer.
	Message   string
	When      time.Time
	Committer string
}

// Commit writes c and returns its sha.
func (r Repo) Commit(ctx context.Context, c Commit) (string, error) {
	shas, err := r.Import(ctx, []Commit{c})
	if err != nil {
		return "", err
	}
	return shas[0], nil
}

// Import writes commits in one `git fast-import`, in order, and returns
// their shas. Many commits are much faster to write this way than one by
// one.
func (r Repo) Import(ctx context.Context, commits []Commit) ([]string, error) {
	var s bytes.Buffer
	for i, c := range commits {
		from := c.Parent
		if from != "" && !strings.HasPrefix(from, ":") {
			sha, ok, err := r.Resolve(ctx, from)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("writing a commit to %s: parent %s is no commit", c.Ref, from)
			}
			from = sha
		}
		if err := c.write(&s, i+1, from); err != nil {
			return nil, err
		}
	}
	for i := range commits {
		fmt.Fprintf(&s, "get-mark :%d\n", i+1)
	}
	s.WriteString("done\n")
	out, err := r.Git(ctx, &s, "fast-import", "--quiet", "--done")
	if err != nil {
		return nil, err
	}
	shas := strings.Fields(out)
	if len(shas) != len(commits) {
		return nil, fmt.Errorf("git fast-import wrote %d commits, want %d: %q", len(shas), len(commits), out)
	}
	return shas, nil
}

// write writes c to s as a fast-import commit with mark, from the parent
// from (a sha or a mark, "" for none).
func (c Commit) write(s *bytes.Buffer, mark int, from string) error {
	if c.Ref == "" || strings.ContainsAny(c.Ref, " \n\t") {
		return fmt.Errorf("writing a commit: bad ref %q", c.Ref)
	}
	committer := c.Committer
	if committer == "" {
		committer = DefaultCommitter
	}
	when := c.When
	if when.IsZero() {
		when = time.Now()
	}
	fmt.Fprintf(s, "commit %s\nmark :%d\n", c.Ref, mark)
	fmt.Fprintf(s, "committer %s %d +0000\n", committer, when.Unix())
	fmt.Fprintf(s, "data %d\n%s\n", len(c.Message), c.Message)
	if from != "" {
		fmt.Fprintf(s, "from %s\n", from)
	}
	for _, p := range c.Delete {
		if err := checkPath(p); err != nil {
			return err
		}
		fmt.Fprintf(s, "D %s\n", p)
	}
	paths := make([]string, 0, len(c.Files))
	for p := range c.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := checkPath(p); err != nil {
			return err
		}
		fmt.Fprintf(s, "M 100644 inline %s\ndata %d\n", p, len(c.Files[p]))
		s.Write(c.Files[p])
		s.WriteByte('\n')
	}
	s.WriteByte('\n')
	return nil
}

// checkPath refuses the paths fast-import would read as something else.
func checkPath(p string) error {
	if p == "" || strings.ContainsAny(p, "\n\"") {
		return fmt.Errorf("writing a commit: bad file path %s", strconv.Quote(p))
	}
	return nil
}
