package gitsrc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/byop-dev/byop/gitsrc"
	"github.com/byop-dev/byop/gitsrc/gittest"
)

// benchRepo creates a repository with a few thousand files and some
// history, and returns a function that pushes a new pull request head
// (a small change) and returns its sha and ref.
func benchRepo(b *testing.B) (*gittest.Repo, func() (sha, ref string)) {
	b.Helper()
	srv := gittest.NewServer(b)
	repo := srv.CreateRepo(b, "octo/bench")
	files := map[string]string{}
	for i := 0; i < 2000; i++ {
		files[fmt.Sprintf("pkg%02d/file%04d.go", i%40, i)] = incompressible(int64(i), 2048)
	}
	repo.Commit(b, "main", files, "import")
	for i := 0; i < 20; i++ {
		repo.Commit(b, "main", map[string]string{fmt.Sprintf("pkg00/file%04d.go", i*40): incompressible(int64(10000+i), 2048)}, "change")
	}
	n := 0
	return repo, func() (string, string) {
		n++
		sha := repo.Commit(b, "main", map[string]string{
			fmt.Sprintf("pkg01/file%04d.go", 1+40*(n%50)): incompressible(int64(20000+n), 2048),
			fmt.Sprintf("new/pr%d.go", n):                 "package new\n",
		}, "pr")
		ref := fmt.Sprintf("refs/pull/%d/head", n)
		repo.SetRef(b, ref, sha)
		return sha, ref
	}
}

// BenchmarkFetchPRHeadIntoWarmCache measures Fetch of a new pull request
// head through a warm repository cache, checkout included.
func BenchmarkFetchPRHeadIntoWarmCache(b *testing.B) {
	repo, push := benchRepo(b)
	var opts []gitsrc.Option
	if testing.Verbose() {
		opts = append(opts, gitsrc.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))))
	}
	f := gitsrc.New(b.TempDir(), opts...)
	sha, ref := push()
	if err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: sha, Ref: ref}, filepath.Join(b.TempDir(), "warm")); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		sha, ref := push()
		dir := filepath.Join(b.TempDir(), "w")
		b.StartTimer()
		if err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: sha, Ref: ref}, dir); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGitFetchPRHeadIntoWarmClone is the yardstick: the git client
// fetching the same kind of pull request head into a full clone, alone and
// followed by a checkout into a new work tree (what Fetch does as a whole).
func BenchmarkGitFetchPRHeadIntoWarmClone(b *testing.B) {
	for _, checkout := range []bool{false, true} {
		name := "fetch"
		if checkout {
			name = "fetch+checkout"
		}
		b.Run(name, func(b *testing.B) {
			repo, push := benchRepo(b)
			clone := filepath.Join(b.TempDir(), "clone")
			home := b.TempDir()
			run := func(args ...string) {
				cmd := exec.Command("git", args...)
				cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull, "HOME="+home)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("git %v: %v: %s", args, err, out)
				}
			}
			run("clone", "--quiet", "--bare", repo.CloneURL(), clone)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				sha, ref := push()
				dir := filepath.Join(b.TempDir(), "w")
				b.StartTimer()
				run("-C", clone, "fetch", "--quiet", "origin", ref)
				if checkout {
					run("-C", clone, "worktree", "add", "--quiet", "--detach", dir, sha)
				}
			}
		})
	}
}
