package main

import (
	"context"
	"fmt"
	"time"
)

// depsDockerfile is an app with a dependency step, as most real apps have:
// deps.lock is copied first and a step that stands in for installing
// dependencies (%d MB of files, some seconds of CPU) builds on it; the page
// is copied last. A change to the page leaves the dependency layer cached;
// a new deps.lock does not.
const depsDockerfile = `FROM %s
COPY deps.lock /deps/deps.lock
RUN head -c %d /dev/urandom > /deps/vendor.bin && for i in 1 2 3; do sha256sum /deps/vendor.bin >> /deps/sums; done
COPY index.html /www/index.html
EXPOSE 8080
CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
`

// p3 is warm rebuild: a second pull request of a repository, changing one
// file, after the first pull request of that repository built cold. Each
// round uses a repository byop and BuildKit have never seen (its deps.lock
// is new), so the first build is truly cold.
func (b *bench) p3(ctx context.Context) ([]row, error) {
	p, err := b.startByop(ctx, byopSettings{dir: b.dir + "/p3/byop", redisDB: b.o.redisDB}, nil)
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	var cold, warm, coldBuild, warmBuild []time.Duration
	var coldPhases, warmPhases []phaseTimes
	for r := 0; r < b.o.p3Rounds; r++ {
		repo, err := b.createRepo(ctx, fmt.Sprintf("deps-%s-%d", b.nonce, r+1))
		if err != nil {
			return nil, err
		}
		base, err := repo.commit(ctx, "refs/heads/main", "", map[string][]byte{
			"Dockerfile": fmt.Appendf(nil, depsDockerfile, b.o.baseImage, b.o.p3DepsMB<<20),
			"deps.lock":  fmt.Appendf(nil, "%s round %d\n", b.nonce, r+1),
			"index.html": []byte("main\n"),
		}, "app with dependencies")
		if err != nil {
			return nil, err
		}
		for _, br := range []string{"pr-1", "pr-2"} {
			if err := repo.SetRef(ctx, "refs/heads/"+br, base); err != nil {
				return nil, err
			}
		}
		c, err := b.byopRound(ctx, p, "opened", repo, 1, "pr-1", "first pull request\n")
		if err != nil {
			return nil, fmt.Errorf("cold build: %w", err)
		}
		w, err := b.byopRound(ctx, p, "opened", repo, 2, "pr-2", "second pull request\n")
		if err != nil {
			return nil, fmt.Errorf("warm build: %w", err)
		}
		b.logf("P3: round %d: cold %s (%s); warm %s (%s)", r+1, fmtDur(c.took.Seconds()), c.phases, fmtDur(w.took.Seconds()), w.phases)
		cold, warm = append(cold, c.took), append(warm, w.took)
		coldBuild = append(coldBuild, c.span("fetched commit", "starting revision"))
		warmBuild = append(warmBuild, w.span("fetched commit", "starting revision"))
		coldPhases, warmPhases = append(coldPhases, c.phases), append(warmPhases, w.phases)
		for _, pr := range []int{1, 2} {
			if err := b.closePR(ctx, p, repo, pr, fmt.Sprintf("pr-%d", pr)); err != nil {
				return nil, err
			}
		}
	}
	sw, sc := summarizeDurations(warm), summarizeDurations(cold)
	rt := ratio(sw.median, sc.median)
	b.note("P3: cold, median: %s", medianPhases(coldPhases))
	b.note("P3: warm, median: %s", medianPhases(warmPhases))
	swb, scb := summarizeDurations(warmBuild), summarizeDurations(coldBuild)
	return []row{{
		id: "P3", what: fmt.Sprintf("warm rebuild, 2nd PR (202 → served; %d MB deps layer)", b.o.p3DepsMB),
		byop: fmtSpread(sw), comparison: fmtSpread(sc) + " cold",
		ratio: fmt.Sprintf("%.2f×", rt), target: "warm ≤ 0.3× cold", verdict: verdict(rt <= 0.3),
	}, {
		id: "P3", what: "  build+push+pull only (fetched → starting revision)",
		byop: fmtSpread(swb), comparison: fmtSpread(scb) + " cold",
		ratio: fmt.Sprintf("%.2f×", ratio(swb.median, scb.median)), target: "—", verdict: "—",
	}}, nil
}
