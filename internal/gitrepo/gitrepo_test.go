package gitrepo_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/byop-dev/byop/internal/gitrepo"
)

func newRepo(t *testing.T) gitrepo.Repo {
	t.Helper()
	r, err := gitrepo.InitBare(context.Background(), filepath.Join(t.TempDir(), "o", "r.git"), "main")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func git(t *testing.T, r gitrepo.Repo, args ...string) string {
	t.Helper()
	out, err := r.Git(context.Background(), nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCommitWritesFilesOverTheParentsTree(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	first, err := r.Commit(ctx, gitrepo.Commit{Ref: "refs/heads/main", Message: "first",
		Files: map[string][]byte{"a.txt": []byte("one"), "dir/b.txt": []byte("bee")}})
	if err != nil {
		t.Fatal(err)
	}
	second, err := r.Commit(ctx, gitrepo.Commit{Ref: "refs/heads/main", Parent: "refs/heads/main", Message: "second",
		Files: map[string][]byte{"a.txt": []byte("two"), "empty": {}}, Delete: []string{"dir/b.txt"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := git(t, r, "rev-parse", "refs/heads/main"); got != second {
		t.Errorf("main = %s, want the second commit %s", got, second)
	}
	if got := git(t, r, "rev-parse", second+"^"); got != first {
		t.Errorf("parent of the second commit = %s, want %s", got, first)
	}
	if got := git(t, r, "ls-tree", "-r", "--name-only", second); got != "a.txt\nempty" {
		t.Errorf("files of the second commit = %q, want a.txt and empty", got)
	}
	if got := git(t, r, "show", second+":a.txt"); got != "two" {
		t.Errorf("a.txt = %q, want two", got)
	}
	if got := git(t, r, "symbolic-ref", "HEAD"); got != "refs/heads/main" {
		t.Errorf("HEAD = %s, want the initial branch main", got)
	}
}

func TestCommitIsTheSameForTheSameInput(t *testing.T) {
	c := gitrepo.Commit{Ref: "refs/heads/main", Message: "m", When: time.Unix(1_700_000_000, 0),
		Committer: "someone <someone@example.com>", Files: map[string][]byte{"f": []byte("x")}}
	var shas []string
	for range 2 {
		r := newRepo(t)
		sha, err := r.Commit(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		shas = append(shas, sha)
		if got := git(t, r, "log", "-1", "--format=%an <%ae> %ct %s", sha); got != "someone <someone@example.com> 1700000000 m" {
			t.Errorf("commit reads %q, want the given author, committer date and message", got)
		}
	}
	if shas[0] != shas[1] {
		t.Errorf("the same commit in two repositories has shas %s and %s", shas[0], shas[1])
	}
}

func TestImportChainsCommitsByMark(t *testing.T) {
	r := newRepo(t)
	var cs []gitrepo.Commit
	for i := 1; i <= 5; i++ {
		c := gitrepo.Commit{Ref: "refs/heads/main", Message: "c", Files: map[string][]byte{"n": []byte(strconv.Itoa(i))}}
		if i > 1 {
			c.Parent = ":" + strconv.Itoa(i-1)
		}
		cs = append(cs, c)
	}
	shas, err := r.Import(context.Background(), cs)
	if err != nil {
		t.Fatal(err)
	}
	if len(shas) != 5 || git(t, r, "rev-parse", "refs/heads/main") != shas[4] {
		t.Fatalf("shas %v, main at %s: want five, main at the last", shas, git(t, r, "rev-parse", "refs/heads/main"))
	}
	if got := git(t, r, "rev-list", "--count", "main"); got != "5" {
		t.Errorf("main has %s commits, want 5 in one line", got)
	}
	if got := git(t, r, "rev-parse", shas[3]+"^"); got != shas[2] {
		t.Errorf("parent of the fourth = %s, want the third %s", got, shas[2])
	}
}

func TestCommitRefusesWhatIsNotAFastForward(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	if _, err := r.Commit(ctx, gitrepo.Commit{Ref: "refs/heads/main", Message: "first"}); err != nil {
		t.Fatal(err)
	}
	before := git(t, r, "rev-parse", "main")
	if _, err := r.Commit(ctx, gitrepo.Commit{Ref: "refs/heads/main", Message: "unrelated root"}); err == nil {
		t.Error("a root commit over an existing branch was written")
	}
	if _, err := r.Commit(ctx, gitrepo.Commit{Ref: "refs/heads/x", Parent: "refs/heads/nothing", Message: "m"}); err == nil || !strings.Contains(err.Error(), "refs/heads/nothing") {
		t.Errorf("a commit on a missing parent: %v, want an error naming it", err)
	}
	if _, err := r.Commit(ctx, gitrepo.Commit{Ref: "refs/heads/main", Parent: "main", Files: map[string][]byte{"a\nM 100644 inline evil": nil}}); err == nil {
		t.Error("a path with a newline was written")
	}
	if got := git(t, r, "rev-parse", "main"); got != before {
		t.Errorf("main moved to %s, want it left at %s", got, before)
	}
}

func TestRefsAreSetResolvedAndDeleted(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	sha, err := r.Commit(ctx, gitrepo.Commit{Ref: "refs/heads/main", Message: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := r.Resolve(ctx, "refs/pull/1/head"); ok || err != nil {
		t.Fatalf("Resolve of a missing ref = %v, %v; want not found and no error", ok, err)
	}
	if err := r.SetRef(ctx, "refs/pull/1/head", sha); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := r.Resolve(ctx, "refs/pull/1/head"); got != sha || !ok || err != nil {
		t.Errorf("Resolve = %s, %v, %v; want %s", got, ok, err, sha)
	}
	if err := r.DeleteRef(ctx, "refs/pull/1/head"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := r.Resolve(ctx, "refs/pull/1/head"); ok {
		t.Error("the ref is still there after DeleteRef")
	}
}

func TestRunIgnoresTheUsersConfiguration(t *testing.T) {
	global := filepath.Join(t.TempDir(), "gitconfig")
	if err := os.WriteFile(global, []byte("[user]\n\tname = Someone Else\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CONFIG_GLOBAL", global)
	out, err := gitrepo.Run(context.Background(), "", nil, "config", "--get", "user.name")
	if err == nil {
		t.Errorf("git read the user's configuration: user.name = %q", out)
	}
}
