package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/byop-dev/byop/gitsrc"
	"github.com/byop-dev/byop/internal/gitrepo"
)

// p4 is fetching a pull request head into byop's warm per-repository
// cache (gitsrc, the code byop's worker runs, in this process) against
// `git fetch` of the same ref into a warm clone, for a generated repository
// of some 2,000 commits and 20 MB.
func (b *bench) p4(ctx context.Context) ([]row, error) {
	repo, err := b.createRepo(ctx, "history-"+b.nonce)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := generateHistory(ctx, repo, b.o.p4Commits); err != nil {
		return nil, err
	}
	size, _ := repo.Git(ctx, nil, "count-objects", "-vH")
	b.logf("P4: generated %d commits in %s: %s", b.o.p4Commits, time.Since(t0).Round(time.Millisecond), oneLine(size, 200))

	// Warm both: byop's cache receives the history once, the clone too.
	cache := filepath.Join(b.dir, "p4", "cache")
	steps := &fetchSteps{}
	fetcher := gitsrc.New(cache, gitsrc.WithLogger(slog.New(steps)))
	mainSHA, err := repo.Git(ctx, nil, "rev-parse", "refs/heads/main")
	if err != nil {
		return nil, err
	}
	t0 = time.Now()
	if err := fetcher.Fetch(ctx, gitsrc.Spec{CloneURL: repo.cloneURL, SHA: mainSHA, Ref: "refs/heads/main"}, filepath.Join(b.dir, "p4", "work-0")); err != nil {
		return nil, fmt.Errorf("warming byop's cache: %w", err)
	}
	b.logf("P4: byop's cache warmed in %s", time.Since(t0).Round(time.Millisecond))
	clone := filepath.Join(b.dir, "p4", "clone.git")
	t0 = time.Now()
	if _, err := gitrepo.Run(ctx, "", nil, "clone", "--quiet", "--bare", repo.cloneURL, clone); err != nil {
		return nil, err
	}
	b.logf("P4: git clone warmed in %s", time.Since(t0).Round(time.Millisecond))

	if b.o.cpuProfile != "" && b.o.cpuProfileMeasure == "P4" {
		// The bench's own CPU in these rounds is byop's fetch; the git
		// CLI runs in child processes, which the profile does not see.
		prof, err := os.Create(b.o.cpuProfile)
		if err != nil {
			return nil, err
		}
		defer prof.Close()
		if err := pprof.StartCPUProfile(prof); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	var byop, byopFetch, cli, cliCheckout []time.Duration
	for r := 0; r < b.o.p4Rounds; r++ {
		pr := r + 1
		ref := fmt.Sprintf("refs/pull/%d/head", pr)
		sha, err := repo.commit(ctx, ref, "refs/heads/main", map[string][]byte{
			fmt.Sprintf("src/d%02d/f%04d.go", pr%25, pr*7%1000): randomBytes(uint64(1e6+pr), 6<<10),
			fmt.Sprintf("src/new/pr%d.go", pr):                  []byte("package new\n"),
		}, "pull request "+strconv.Itoa(pr))
		if err != nil {
			return nil, err
		}
		runs := []func() error{
			func() error {
				dir := filepath.Join(b.dir, "p4", "work-"+strconv.Itoa(pr))
				start := time.Now()
				err := fetcher.Fetch(ctx, gitsrc.Spec{CloneURL: repo.cloneURL, SHA: sha, Ref: ref}, dir)
				d := time.Since(start)
				if err != nil {
					return fmt.Errorf("byop's fetch: %w", err)
				}
				fetchOnly, ok := steps.last()
				if !ok {
					return fmt.Errorf("byop's fetch logged no fetch_duration")
				}
				byop, byopFetch = append(byop, d), append(byopFetch, fetchOnly)
				os.RemoveAll(dir)
				return nil
			},
			func() error {
				start := time.Now()
				if _, err := gitrepo.Run(ctx, clone, nil, "fetch", "--quiet", "origin", ref); err != nil {
					return err
				}
				d := time.Since(start)
				// Context, not the comparison: the same fetch followed by
				// a checkout of a work tree, which byop's fetch includes.
				wt := filepath.Join(b.dir, "p4", "wt-"+strconv.Itoa(pr))
				if _, err := gitrepo.Run(ctx, clone, nil, "worktree", "add", "--quiet", "--detach", wt, sha); err != nil {
					return err
				}
				cli = append(cli, d)
				cliCheckout = append(cliCheckout, time.Since(start))
				gitrepo.Run(ctx, clone, nil, "worktree", "remove", "--force", wt)
				return nil
			},
		}
		if err := inTurn(r, runs); err != nil {
			return nil, err
		}
		b.logf("P4: round %d: byop %s (fetch %s), git fetch %s, git fetch+checkout %s", pr, fmtDur(byop[r].Seconds()), fmtDur(byopFetch[r].Seconds()), fmtDur(cli[r].Seconds()), fmtDur(cliCheckout[r].Seconds()))
	}
	sb, sf, sc, sk := summarizeDurations(byop), summarizeDurations(byopFetch), summarizeDurations(cli), summarizeDurations(cliCheckout)
	rt := ratio(sf.median, sc.median)
	return []row{
		{id: "P4", what: fmt.Sprintf("fetch PR head into warm cache (%d commits, %s)", b.o.p4Commits, packSize(size)),
			byop: fmtSpread(sf), comparison: fmtSpread(sc) + " git fetch",
			ratio: fmt.Sprintf("%.2f×", rt), target: "≤ 1.5×", verdict: verdict(rt <= 1.5)},
		{id: "P4", what: "fetch + checkout of the work tree",
			byop: fmtSpread(sb), comparison: fmtSpread(sk) + " git fetch + worktree add",
			ratio: fmt.Sprintf("%.2f×", ratio(sb.median, sk.median)), target: "—", verdict: "—"},
	}, nil
}

// fetchSteps is a slog handler that keeps the fetch_duration gitsrc logs
// for each fetch: the time to bring the commit into the cache and copy it
// out, before the work tree is checked out.
type fetchSteps struct {
	mu    sync.Mutex
	fetch []time.Duration
}

func (h *fetchSteps) Enabled(context.Context, slog.Level) bool { return true }
func (h *fetchSteps) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *fetchSteps) WithGroup(string) slog.Handler            { return h }

func (h *fetchSteps) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "fetch_duration" {
			h.mu.Lock()
			h.fetch = append(h.fetch, a.Value.Duration())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

// last returns and forgets the fetch_duration of the latest fetch.
func (h *fetchSteps) last() (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.fetch) == 0 {
		return 0, false
	}
	d := h.fetch[len(h.fetch)-1]
	h.fetch = h.fetch[:0]
	return d, true
}

// generateHistory writes n commits to main in one fast-import: a first
// commit of 1,000 files of 10 KB, then commits that each rewrite one file
// with 5 KB, all incompressible, some 20 MB packed in all.
func generateHistory(ctx context.Context, repo *gitRepo, n int) error {
	when := time.Now().Add(-time.Duration(n) * time.Minute)
	first := map[string][]byte{}
	for i := 0; i < 1000; i++ {
		first[fmt.Sprintf("src/d%02d/f%04d.go", i%25, i)] = randomBytes(uint64(i), 10<<10)
	}
	commits := []gitrepo.Commit{{Ref: "refs/heads/main", When: when, Files: first, Message: "import", Committer: committer}}
	for c := 2; c <= n; c++ {
		i := c * 7919 % 1000
		commits = append(commits, gitrepo.Commit{
			Ref:       "refs/heads/main",
			Parent:    ":" + strconv.Itoa(c-1), // the commit before, in this import
			When:      when.Add(time.Duration(c) * time.Minute),
			Files:     map[string][]byte{fmt.Sprintf("src/d%02d/f%04d.go", i%25, i): randomBytes(uint64(c)<<20, 5<<10)},
			Message:   "change " + strconv.Itoa(c),
			Committer: committer,
		})
	}
	if _, err := repo.Import(ctx, commits); err != nil {
		return fmt.Errorf("generating history: %w", err)
	}
	return nil
}

// randomBytes returns n incompressible bytes, the same for the same seed.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x62796f70))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// packSize picks size-pack from `git count-objects -vH`.
func packSize(countObjects string) string {
	for _, l := range bytes.Split([]byte(countObjects), []byte("\n")) {
		if v, ok := bytes.CutPrefix(l, []byte("size-pack: ")); ok {
			return string(v) + " packed"
		}
	}
	return "size unknown"
}
