package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// p5 is many previews alive at once on this host: byop's memory, each
// preview's, and the latency byop's router adds over going to the
// container directly.
func (b *bench) p5(ctx context.Context) ([]row, error) {
	p, err := b.startByop(ctx, byopSettings{dir: b.dir + "/p5/byop", redisDB: b.o.redisDB}, nil)
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	n := b.o.p5Previews
	repo, base, err := b.sampleApp(ctx, "many-"+b.nonce)
	if err != nil {
		return nil, err
	}
	// Idle: started, answered /healthz, nothing built yet.
	time.Sleep(time.Second) // let start-up settle before reading the RSS: a reading, not a condition
	rssIdle, err := p.rss()
	if err != nil {
		return nil, err
	}
	avail0 := memAvailable()

	start := time.Now()
	content := func(pr int) string { return fmt.Sprintf("preview %d\n", pr) }
	for pr := 1; pr <= n; pr++ {
		br := "pr-" + strconv.Itoa(pr)
		sha, err := repo.commit(ctx, "refs/heads/"+br, base, map[string][]byte{"index.html": []byte(content(pr))}, "page of "+br)
		if err != nil {
			return nil, err
		}
		if err := repo.SetRef(ctx, fmt.Sprintf("refs/pull/%d/head", pr), sha); err != nil {
			return nil, err
		}
		body, err := b.event("opened", repo, pr, sha, br)
		if err != nil {
			return nil, err
		}
		if err := p.mustQueue(ctx, "pull_request", body); err != nil {
			return nil, err
		}
	}
	defer func() {
		for pr := 1; pr <= n; pr++ {
			if err := b.closePR(ctx, p, repo, pr, "pr-"+strconv.Itoa(pr)); err != nil {
				b.logf("P5: closing pull request %d: %v", pr, err)
			}
		}
	}()
	for pr := 1; pr <= n; pr++ {
		if _, err := p.waitServes(ctx, repo, pr, content(pr), 10*time.Minute); err != nil {
			return nil, err
		}
	}
	allLive := time.Since(start)
	if err := p.waitIdle(ctx, time.Minute); err != nil {
		return nil, err
	}
	states, err := p.buildStates(ctx)
	if err != nil {
		return nil, err
	}
	b.logf("P5: %d previews live %s after the first delivery; builds: %v", n, allLive.Round(time.Millisecond), states)

	ups, err := upstreams(ctx, repo.fullName())
	if err != nil {
		return nil, err
	}
	if len(ups) != n {
		return nil, fmt.Errorf("%d preview containers run, want %d", len(ups), n)
	}
	time.Sleep(time.Second) // as for the idle reading
	rssLive, err := p.rss()
	if err != nil {
		return nil, err
	}
	avail1 := memAvailable()
	mem, err := previewMemory(ctx, ups)
	if err != nil {
		return nil, err
	}

	// Router latency: the same requests, round robin over the previews,
	// through byop's router (Host: the preview's host) and straight to
	// the port byop's router itself proxies to.
	via, direct := keepAliveClient(), keepAliveClient()
	var viaP50, viaP99, dirP50, dirP99 []time.Duration
	for r := 0; r < b.o.p5Rounds; r++ {
		runs := []func() error{
			func() error {
				d, err := latencies(ctx, via, b.o.p5Requests, func(i int) (string, string, string) {
					pr := i%n + 1
					return "http://" + p.Router() + "/", previewHost(repo, pr), content(pr)
				})
				viaP50, viaP99 = append(viaP50, d.quantile(0.5)), append(viaP99, d.quantile(0.99))
				return err
			},
			func() error {
				d, err := latencies(ctx, direct, b.o.p5Requests, func(i int) (string, string, string) {
					pr := i%n + 1
					return "http://" + ups[pr].addr + "/", "", content(pr)
				})
				dirP50, dirP99 = append(dirP50, d.quantile(0.5)), append(dirP99, d.quantile(0.99))
				return err
			},
		}
		if err := inTurn(r, runs); err != nil {
			return nil, err
		}
	}
	v99, d99 := summarizeDurations(viaP99), summarizeDurations(dirP99)
	v50, d50 := summarizeDurations(viaP50), summarizeDurations(dirP50)
	perByop := float64(rssLive-rssIdle) / float64(n)
	perAvail := float64(avail0-avail1) / float64(n)
	b.note("P5: %d previews live %s after the first of %d deliveries (concurrency 4); per preview: container %s, its containerd shim %s PSS, its docker-proxy %s PSS (medians); byop RSS %s idle → %s live; host MemAvailable fell %s per preview",
		n, allLive.Round(100*time.Millisecond), n, fmtBytes(mem.container), fmtBytes(mem.shim), fmtBytes(mem.proxy), fmtBytes(float64(rssIdle)), fmtBytes(float64(rssLive)), fmtBytes(perAvail))
	return []row{
		{id: "P5", what: fmt.Sprintf("byop RSS with %d previews live", n), byop: fmtBytes(float64(rssLive)), comparison: fmtBytes(float64(rssIdle)) + " idle",
			ratio: "—", target: "report", verdict: "—"},
		{id: "P5", what: "memory per preview (container + shim + proxy; byop's share)",
			byop:       fmt.Sprintf("%s + %s", fmtBytes(mem.container+mem.shim+mem.proxy), fmtBytes(perByop)),
			comparison: "—", ratio: "—", target: "report", verdict: "—"},
		{id: "P5", what: "router latency p50", byop: fmtSpread(v50), comparison: fmtSpread(d50) + " direct",
			ratio: fmt.Sprintf("%.2f×", ratio(v50.median, d50.median)), target: "report", verdict: "—"},
		{id: "P5", what: "router latency p99", byop: fmtSpread(v99), comparison: fmtSpread(d99) + " direct",
			ratio: fmt.Sprintf("%.2f×", ratio(v99.median, d99.median)), target: "report", verdict: "—"},
	}, nil
}

// latencies sends n requests one after the other and returns how long each
// took; target(i) gives the URL, Host header and expected body of the i-th.
func latencies(ctx context.Context, c *http.Client, n int, target func(i int) (url, host, want string)) (durations, error) {
	out := make(durations, 0, n)
	for i := 0; i < n; i++ {
		url, host, want := target(i)
		start := time.Now()
		code, body, err := httpGet(ctx, c, url, host)
		d := time.Since(start)
		if err != nil || code != http.StatusOK || body != want {
			return out, fmt.Errorf("GET %s (Host %q): %d %q %v, want %q", url, host, code, oneLine(body, 80), err, want)
		}
		out = append(out, d)
	}
	return out, nil
}

// keepAliveClient keeps connections open where the server allows, as a
// browser does (busybox httpd closes each one).
func keepAliveClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConnsPerHost: 8,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
}

// upstream is where one preview's container is published.
type upstream struct {
	id   string
	addr string // 127.0.0.1:port
	port string
}

var published = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+):(\d+)->`)

// upstreams finds the running containers of repo's previews, by pull
// request number.
func upstreams(ctx context.Context, repo string) (map[int]upstream, error) {
	out, err := commandOutput(ctx, "docker", "ps", "--no-trunc", "--filter", "label=byop.repo="+repo,
		"--format", `{{.ID}}	{{.Label "byop.pr"}}	{{.Ports}}`)
	if err != nil {
		return nil, err
	}
	ups := map[int]upstream{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(l, "\t")
		if len(f) != 3 {
			continue
		}
		pr, err := strconv.Atoi(f[1])
		m := published.FindStringSubmatch(f[2])
		if err != nil || m == nil {
			return nil, fmt.Errorf("cannot read container %q", l)
		}
		ups[pr] = upstream{id: f[0], addr: m[1] + ":" + m[2], port: m[2]}
	}
	return ups, nil
}

// perPreview is the memory one preview holds, medians over the previews.
type perPreview struct {
	container, shim, proxy float64
}

// previewMemory reads each preview container's memory (as docker stats
// counts it) and the proportional set size (PSS: shared pages divided among
// the processes sharing them) of the host processes it brings: its
// containerd shim and the docker-proxy of its published port.
func previewMemory(ctx context.Context, ups map[int]upstream) (perPreview, error) {
	args := []string{"stats", "--no-stream", "--no-trunc", "--format", "{{.ID}}\t{{.MemUsage}}"}
	byID := map[string]upstream{}
	for _, u := range ups {
		args = append(args, u.id)
		byID[u.id] = u
	}
	out, err := commandOutput(ctx, "docker", args...)
	if err != nil {
		return perPreview{}, err
	}
	var cont []float64
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		id, usage, ok := strings.Cut(l, "\t")
		if _, known := byID[id]; !ok || !known {
			continue
		}
		used, _, _ := strings.Cut(usage, " / ")
		v, err := parseSize(used)
		if err != nil {
			return perPreview{}, fmt.Errorf("reading docker stats %q: %w", l, err)
		}
		cont = append(cont, v)
	}
	shim, proxy := map[string]float64{}, map[string]float64{}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, path := range procs {
		raw, err := os.ReadFile(path)
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		switch filepath.Base(args[0]) {
		case "containerd-shim-runc-v2", "containerd-shim":
			if id := argAfter(args, "-id"); id != "" {
				if _, ok := byID[id]; ok {
					pss, _ := procPSS(pid)
					shim[id] += float64(pss)
				}
			}
		case "docker-proxy":
			port := argAfter(args, "-host-port")
			for id, u := range byID {
				if u.port == port {
					pss, _ := procPSS(pid)
					proxy[id] += float64(pss)
				}
			}
		}
	}
	return perPreview{container: median(cont), shim: median(values(shim)), proxy: median(values(proxy))}, nil
}

func argAfter(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func values(m map[string]float64) []float64 {
	var out []float64
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func median(v []float64) float64 { return summarize(v).median }

// parseSize reads sizes as docker prints them: 1.5MiB, 800KiB, 2GB, 12B.
func parseSize(s string) (float64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f * u.mult, err
		}
	}
	return 0, fmt.Errorf("size %q has no unit", s)
}

// procPSS is a process's proportional set size in bytes.
func procPSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Pss:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no Pss in /proc/%d/smaps_rollup", pid)
}

// memAvailable is the host's MemAvailable in bytes.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
