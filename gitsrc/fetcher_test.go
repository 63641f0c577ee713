package gitsrc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/gitsrc"
	"github.com/byop-dev/byop/gitsrc/gittest"
)

// gitCLI runs the real git client in dir with no user configuration.
func gitCLI(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// assertTree checks that dir holds exactly the files want (path -> content),
// besides .git.
func assertTree(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		got[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatalf("reading work tree: %v", err)
	}
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("work tree lacks %s", p)
		} else if g != w {
			t.Errorf("%s = %q, want %q", p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("work tree has unexpected file %s", p)
		}
	}
}

// assertHead checks that dir's HEAD is detached at sha.
func assertHead(t *testing.T, dir, sha string) {
	t.Helper()
	repo, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatalf("opening %s: %v", dir, err)
	}
	head, err := repo.Head()
	if err != nil {
		t.Fatalf("reading HEAD: %v", err)
	}
	if head.Name() != plumbing.HEAD || head.Hash().String() != sha {
		t.Errorf("HEAD = %s at %s, want detached at %s", head.Name(), head.Hash(), sha)
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("reading %s: %v", dir, err)
	}
	if len(entries) > 0 {
		t.Errorf("work dir holds %d entries after a failed fetch, want none", len(entries))
	}
}

func workDir(t *testing.T) string { return filepath.Join(t.TempDir(), "work") }

func uploadPacks(reqs []gittest.Request) (n int, bytes int64) {
	for _, r := range reqs {
		if r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/git-upload-pack") {
			n++
			bytes += r.ResponseBytes
		}
	}
	return n, bytes
}

func TestFetchChecksOutTheExactCommitNotTheBranchTip(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.CreateRepo(t, "octo/hello")
	repo.Commit(t, "main", map[string]string{"README": "hello", "a.txt": "zero"}, "root")
	pr := repo.Commit(t, "main", map[string]string{"a.txt": "one", "dir/b.txt": "bee"}, "the PR head")
	repo.SetRef(t, "refs/pull/7/head", pr)
	repo.Commit(t, "main", map[string]string{"a.txt": "two", "dir/b.txt": gittest.Delete, "c.txt": "see"}, "later")

	dir := workDir(t)
	f := gitsrc.New(t.TempDir())
	if err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: pr, Ref: "refs/pull/7/head"}, dir); err != nil {
		t.Fatalf("Fetch: %v", err)
	}

	assertTree(t, dir, map[string]string{"README": "hello", "a.txt": "one", "dir/b.txt": "bee"})
	assertHead(t, dir, pr)
	// The real git client agrees: same HEAD, clean, shallow, sound objects,
	// origin recorded.
	if got := gitCLI(t, dir, "rev-parse", "HEAD"); got != pr {
		t.Errorf("git rev-parse HEAD = %s, want %s", got, pr)
	}
	if got := gitCLI(t, dir, "status", "--porcelain"); got != "" {
		t.Errorf("git status --porcelain = %q, want a clean tree", got)
	}
	if got := gitCLI(t, dir, "rev-parse", "--is-shallow-repository"); got != "true" {
		t.Errorf("is-shallow-repository = %s, want true (depth 1)", got)
	}
	if got := gitCLI(t, dir, "rev-list", "--count", "HEAD"); got != "1" {
		t.Errorf("commits in the work dir = %s, want 1", got)
	}
	gitCLI(t, dir, "fsck", "--no-dangling")
	if got := gitCLI(t, dir, "remote", "get-url", "origin"); got != repo.CloneURL() {
		t.Errorf("origin = %s, want %s", got, repo.CloneURL())
	}
}

func TestFetchAnOlderCommitThatIsNoLongerATip(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.CreateRepo(t, "octo/hello")
	repo.Commit(t, "main", map[string]string{"v": "1"}, "one")
	old := repo.Commit(t, "main", map[string]string{"v": "2"}, "two")
	repo.Commit(t, "main", map[string]string{"v": "3"}, "three")

	dir := workDir(t)
	if err := gitsrc.New(t.TempDir()).Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: old}, dir); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	assertTree(t, dir, map[string]string{"v": "2"})
	assertHead(t, dir, old)
}

func TestFetchRootCommitIsNotShallow(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.CreateRepo(t, "octo/hello")
	root := repo.Commit(t, "main", map[string]string{"v": "1"}, "root")

	dir := workDir(t)
	if err := gitsrc.New("").Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: root}, dir); err != nil {
		t.Fatalf("Fetch without a cache: %v", err)
	}
	assertTree(t, dir, map[string]string{"v": "1"})
	if got := gitCLI(t, dir, "rev-parse", "--is-shallow-repository"); got != "false" {
		t.Errorf("is-shallow-repository = %s, want false for a root commit", got)
	}
	gitCLI(t, dir, "fsck", "--no-dangling")
}

// fetchers returns a Fetcher with a cache and one without, the two ways
// commits are brought in.
func fetchers(t *testing.T, opts ...gitsrc.Option) map[string]*gitsrc.Fetcher {
	return map[string]*gitsrc.Fetcher{
		"with a cache":    gitsrc.New(t.TempDir(), opts...),
		"without a cache": gitsrc.New("", opts...),
	}
}

func TestFetchFallsBackToRefWhenHostRefusesBareSHA(t *testing.T) {
	srv := gittest.NewServer(t, gittest.WithoutAnySHA1InWant())
	repo := srv.CreateRepo(t, "octo/hello")
	repo.Commit(t, "main", map[string]string{"v": "main"}, "main")
	head := repo.Commit(t, "feature", map[string]string{"v": "pr"}, "pr")
	repo.SetRef(t, "refs/pull/7/head", head)
	repo.DeleteRef(t, "refs/heads/feature")

	for name, f := range fetchers(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("without Ref the commit is not found", func(t *testing.T) {
				dir := workDir(t)
				err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: head}, dir)
				if !errors.Is(err, gitsrc.ErrCommitNotFound) {
					t.Fatalf("Fetch = %v, want ErrCommitNotFound", err)
				}
				assertEmptyDir(t, dir)
			})
			t.Run("with Ref the commit is fetched through it", func(t *testing.T) {
				dir := workDir(t)
				err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: head, Ref: "refs/pull/7/head"}, dir)
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				assertTree(t, dir, map[string]string{"v": "pr"})
				assertHead(t, dir, head)
				if got := gitCLI(t, dir, "rev-list", "--count", "HEAD"); got != "1" {
					t.Errorf("commits in the work dir = %s, want 1 (depth 1)", got)
				}
			})
		})
	}
}

func TestFetchFindsTheCommitWhenRefHasMovedPastIt(t *testing.T) {
	srv := gittest.NewServer(t, gittest.WithoutAnySHA1InWant())
	repo := srv.CreateRepo(t, "octo/hello")
	repo.Commit(t, "main", map[string]string{"v": "0"}, "base")
	pushed := repo.Commit(t, "main", map[string]string{"v": "1"}, "the pushed commit")
	for i := 2; i <= 4; i++ {
		repo.Commit(t, "main", map[string]string{"v": string(rune('0' + i))}, "later")
	}
	gone := repo.Commit(t, "force-pushed", map[string]string{"v": "gone"}, "overwritten")
	repo.DeleteRef(t, "refs/heads/force-pushed")

	for name, f := range fetchers(t) {
		t.Run(name, func(t *testing.T) {
			dir := workDir(t)
			err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: pushed, Ref: "refs/heads/main"}, dir)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			assertTree(t, dir, map[string]string{"v": "1"})
			assertHead(t, dir, pushed)
			gitCLI(t, dir, "fsck", "--no-dangling")

			t.Run("a commit the ref never had is not found", func(t *testing.T) {
				dir := workDir(t)
				err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: gone, Ref: "refs/heads/main"}, dir)
				if !errors.Is(err, gitsrc.ErrCommitNotFound) {
					t.Fatalf("Fetch = %v, want ErrCommitNotFound", err)
				}
				if !strings.Contains(err.Error(), "refs/heads/main") || !strings.Contains(err.Error(), gone) {
					t.Errorf("error %q does not name the commit and the ref searched", err)
				}
				assertEmptyDir(t, dir)
			})
		})
	}

	t.Run("without a cache the search stops at the deepen limit", func(t *testing.T) {
		dir := workDir(t)
		f := gitsrc.New("", gitsrc.WithDeepenLimit(2))
		err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: pushed, Ref: "refs/heads/main"}, dir)
		if !errors.Is(err, gitsrc.ErrCommitNotFound) {
			t.Fatalf("Fetch = %v, want ErrCommitNotFound", err)
		}
		if !strings.Contains(err.Error(), "2 newest commits") {
			t.Errorf("error %q does not say how deep the ref was searched", err)
		}
		assertEmptyDir(t, dir)
	})
}

func TestFetchSendsTokenAsBasicAuth(t *testing.T) {
	const token = "ghs_0123456789abcdefTOKEN"
	srv := gittest.NewServer(t, gittest.WithToken(token))
	repo := srv.CreateRepo(t, "octo/private")
	sha := repo.Commit(t, "main", map[string]string{"secret.txt": "classified"}, "c")

	t.Run("without the token the host refuses", func(t *testing.T) {
		dir := workDir(t)
		err := gitsrc.New(t.TempDir()).Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: sha}, dir)
		if !errors.Is(err, transport.ErrAuthenticationRequired) {
			t.Fatalf("Fetch = %v, want ErrAuthenticationRequired", err)
		}
		assertEmptyDir(t, dir)
	})

	t.Run("with the token the commit is fetched", func(t *testing.T) {
		before := len(srv.Requests())
		dir := workDir(t)
		err := gitsrc.New(t.TempDir()).Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: sha, Token: token}, dir)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		assertTree(t, dir, map[string]string{"secret.txt": "classified"})
		reqs := srv.Requests()[before:]
		if n, _ := uploadPacks(reqs); n != 1 {
			t.Errorf("upload-pack requests = %d, want 1", n)
		}
		for _, r := range reqs {
			if !r.AuthSent || r.User != "x-access-token" || r.Status != http.StatusOK {
				t.Errorf("request %s %s: auth sent %v as %q, status %d; want x-access-token and 200",
					r.Method, r.Path, r.AuthSent, r.User, r.Status)
			}
		}
		if got := gitCLI(t, dir, "remote", "get-url", "origin"); strings.Contains(got, token) || strings.Contains(got, "@") {
			t.Errorf("origin URL %q carries credentials", got)
		}
		cfg, err := os.ReadFile(filepath.Join(dir, ".git", "config"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(cfg), token) {
			t.Errorf(".git/config holds the token")
		}
	})
}

func TestFetchErrorsNeverContainTheToken(t *testing.T) {
	const token = "ghs_0123456789abcdefTOKEN"
	basic := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + token))
	srv := gittest.NewServer(t, gittest.WithToken("the-right-one"))
	repo := srv.CreateRepo(t, "octo/private")
	sha := repo.Commit(t, "main", map[string]string{"a": "a"}, "c")

	// A host that answers every request with an error quoting the request's
	// credentials back, as a careless proxy might.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pass, _ := r.BasicAuth()
		http.Error(w, "bad credentials "+pass+" in "+r.Header.Get("Authorization"), http.StatusInternalServerError)
	}))
	t.Cleanup(echo.Close)

	tests := []struct {
		name string
		url  string
		ref  string
	}{
		{name: "host rejects the token", url: repo.CloneURL()},
		{name: "host rejects the token with a ref to fall back on", url: repo.CloneURL(), ref: "refs/heads/main"},
		{name: "host is unreachable", url: "http://127.0.0.1:1/octo/private.git", ref: "refs/heads/main"},
		{name: "host repeats the credentials in its error", url: echo.URL + "/octo/private.git", ref: "refs/heads/main"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := workDir(t)
			err := gitsrc.New(t.TempDir()).Fetch(context.Background(),
				gitsrc.Spec{CloneURL: tt.url, SHA: sha, Ref: tt.ref, Token: config.Secret(token)}, dir)
			if err == nil {
				t.Fatal("Fetch succeeded, want an error")
			}
			if msg := err.Error(); strings.Contains(msg, token) || strings.Contains(msg, basic) {
				t.Errorf("error contains the token: %q", msg)
			}
			for e := err; e != nil; e = errors.Unwrap(e) {
				if strings.Contains(e.Error(), token) {
					t.Errorf("wrapped error contains the token: %q", e.Error())
				}
			}
			assertEmptyDir(t, dir)
		})
	}
}

func TestFetchHonoursContextCancellation(t *testing.T) {
	t.Run("cancelled while the host is answering", func(t *testing.T) {
		arrived := make(chan struct{}, 1)
		release := make(chan struct{})
		hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case arrived <- struct{}{}:
			default:
			}
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		t.Cleanup(func() { close(release); hang.Close() })

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		dir := workDir(t)
		go func() {
			done <- gitsrc.New(t.TempDir()).Fetch(ctx, gitsrc.Spec{CloneURL: hang.URL + "/o/r.git", SHA: strings.Repeat("ab", 20), Ref: "refs/heads/main"}, dir)
		}()
		select {
		case <-arrived:
		case err := <-done:
			t.Fatalf("Fetch returned %v before reaching the host", err)
		case <-time.After(10 * time.Second):
			t.Fatal("Fetch never reached the host")
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Fetch = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Fetch did not return within 5s of cancellation")
		}
		assertEmptyDir(t, dir)
	})

	t.Run("already cancelled makes no request", func(t *testing.T) {
		srv := gittest.NewServer(t)
		repo := srv.CreateRepo(t, "octo/hello")
		sha := repo.Commit(t, "main", map[string]string{"a": "a"}, "c")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := gitsrc.New(t.TempDir()).Fetch(ctx, gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: sha}, workDir(t))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Fetch = %v, want context.Canceled", err)
		}
		if n := len(srv.Requests()); n != 0 {
			t.Errorf("host received %d requests, want none", n)
		}
	})
}

// incompressible returns n bytes of base64 text with no repeats: zlib
// shrinks it to no less than 3/4, deltas not at all.
func incompressible(seed int64, n int) string {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return base64.StdEncoding.EncodeToString(b)[:n]
}

func TestSecondFetchOfARepoIsIncremental(t *testing.T) {
	const big = 256 << 10
	srv := gittest.NewServer(t)
	repo := srv.CreateRepo(t, "octo/hello")
	blob := incompressible(1, big)
	first := repo.Commit(t, "main", map[string]string{"big.bin": blob, "small.txt": "v1"}, "first")
	second := repo.Commit(t, "main", map[string]string{"small.txt": "v2"}, "second")

	cacheDir := t.TempDir()
	f := gitsrc.New(cacheDir)
	fetch := func(f *gitsrc.Fetcher, sha string) (packs int, bytes int64) {
		t.Helper()
		before := len(srv.Requests())
		dir := workDir(t)
		if err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: sha}, dir); err != nil {
			t.Fatalf("Fetch %s: %v", sha, err)
		}
		assertHead(t, dir, sha)
		if b, err := os.ReadFile(filepath.Join(dir, "big.bin")); err != nil || string(b) != blob {
			t.Fatalf("big.bin in the work tree of %s is wrong (err %v)", sha, err)
		}
		gitCLI(t, dir, "fsck", "--no-dangling", "--strict")
		return uploadPacks(srv.Requests()[before:])
	}

	_, firstBytes := fetch(f, first)
	if firstBytes < big*3/4 {
		t.Fatalf("first fetch transferred %d bytes, want at least the compressed %d-byte blob", firstBytes, big)
	}
	entries, err := os.ReadDir(cacheDir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("cache dir is empty after a fetch (err %v)", err)
	}

	packs, secondBytes := fetch(f, second)
	if packs != 1 {
		t.Errorf("second fetch made %d upload-pack requests, want 1", packs)
	}
	if secondBytes > big/8 {
		t.Errorf("second fetch through the warm cache transferred %d bytes, want far less than the %d-byte blob it already has", secondBytes, big)
	}

	// Without a cache the same fetch transfers the blob again: the saving
	// above comes from the cache.
	if _, coldBytes := fetch(gitsrc.New(t.TempDir()), second); coldBytes < big*3/4 {
		t.Errorf("cold fetch transferred %d bytes, want at least the compressed %d-byte blob", coldBytes, big)
	}

	// A commit already in the cache needs no transfer at all, even from a
	// new Fetcher over the same cache dir.
	if packs, _ := fetch(gitsrc.New(cacheDir), first); packs != 0 {
		t.Errorf("fetch of a cached commit made %d upload-pack requests, want 0", packs)
	}
}

func TestCacheKeepsRefsToTheNewestCommitsOnly(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.CreateRepo(t, "octo/hello")
	var shas []string
	for i := 0; i < 4; i++ {
		shas = append(shas, repo.Commit(t, "main", map[string]string{"v": string(rune('a' + i))}, "c"))
	}
	cacheDir := t.TempDir()
	f := gitsrc.New(cacheDir, gitsrc.WithKeptCommits(2))
	for _, sha := range shas {
		if err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: sha}, workDir(t)); err != nil {
			t.Fatalf("Fetch %s: %v", sha, err)
		}
	}

	var caches []string
	_ = filepath.WalkDir(cacheDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && strings.HasSuffix(p, ".git") {
			caches = append(caches, p)
			return filepath.SkipDir
		}
		return nil
	})
	if len(caches) != 1 {
		t.Fatalf("cache dir holds %d repository caches, want 1: %v", len(caches), caches)
	}
	got := gitCLI(t, caches[0], "for-each-ref", "--format=%(objectname)", "refs/byop/commits/")
	want := shas[3] + "\n" + shas[2]
	if lines := strings.Split(got, "\n"); len(lines) != 2 || !strings.Contains(want, lines[0]) || !strings.Contains(want, lines[1]) {
		t.Errorf("cache refs point at\n%s\nwant the two newest commits\n%s", got, want)
	}
}

func TestConcurrentFetchesOfOneRepo(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.CreateRepo(t, "octo/hello")
	shas := map[string]string{}
	for _, v := range []string{"a", "b", "c", "d"} {
		shas[v] = repo.Commit(t, "main", map[string]string{"v": v}, v)
	}
	f := gitsrc.New(t.TempDir())
	var wg sync.WaitGroup
	for v, sha := range shas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := workDir(t)
			if err := f.Fetch(context.Background(), gitsrc.Spec{CloneURL: repo.CloneURL(), SHA: sha}, dir); err != nil {
				t.Errorf("Fetch %s: %v", v, err)
				return
			}
			if b, err := os.ReadFile(filepath.Join(dir, "v")); err != nil || string(b) != v {
				t.Errorf("fetch of commit %s left v = %q (err %v)", v, b, err)
			}
		}()
	}
	wg.Wait()
}

func TestFetchRefusesANonEmptyWorkDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := gitsrc.New(t.TempDir()).Fetch(context.Background(), gitsrc.Spec{CloneURL: "http://127.0.0.1:1/o/r.git", SHA: strings.Repeat("ab", 20)}, dir)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Fetch = %v, want a not-empty error", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "keep")); err != nil {
		t.Errorf("existing file was touched: %v", err)
	}
}
