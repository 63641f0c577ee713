package main

import (
	"context"
	_ "embed"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/byop-dev/byop/internal/gitrepo"
)

// appDockerfile is the sample app: busybox httpd serving index.html, the
// app of byop's demo and end-to-end test.
const appDockerfile = `FROM %s
COPY index.html /www/index.html
EXPOSE 8080
CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
`

//go:embed floor.sh
var floorScript []byte

// p2 is push to preview: from the webhook's 202 to the preview URL serving
// the new commit's content, one file changed per round, against the floor:
// the same steps by hand in floor.sh.
func (b *bench) p2(ctx context.Context) ([]row, error) {
	p, err := b.startByop(ctx, byopSettings{dir: b.dir + "/p2/byop", redisDB: b.o.redisDB}, nil)
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	repo, base, err := b.sampleApp(ctx, "app-"+b.nonce)
	if err != nil {
		return nil, err
	}
	const pr, branch = 1, "pr-1"
	if _, err := repo.commit(ctx, "refs/heads/"+branch, base, nil, "start the pull request"); err != nil {
		return nil, err
	}
	fl, err := b.newFloor(ctx, repo, base)
	if err != nil {
		return nil, err
	}
	defer fl.down()

	// Warm-up, not measured: the pull request opens (byop builds it for the
	// first time), and the floor runs once, so that both start each round
	// from a running preview and a warm BuildKit.
	if _, err := b.byopRound(ctx, p, "opened", repo, pr, branch, "warm-up\n"); err != nil {
		return nil, fmt.Errorf("opening the pull request: %w", err)
	}
	if _, err := fl.round(ctx, "warm-up\n"); err != nil {
		return nil, fmt.Errorf("floor warm-up: %w", err)
	}

	var byop, floor []time.Duration
	var phases, floorPhases []phaseTimes
	for r := 0; r < b.o.p2Rounds; r++ {
		runs := []func() error{
			func() error {
				rr, err := b.byopRound(ctx, p, "synchronize", repo, pr, branch, fmt.Sprintf("byop round %d\n", r+1))
				if err != nil {
					return err
				}
				byop = append(byop, rr.took)
				phases = append(phases, rr.phases)
				b.logf("P2: round %d: byop %s (%s)", r+1, fmtDur(rr.took.Seconds()), rr.phases)
				return nil
			},
			func() error {
				d, ph, err := fl.roundPhases(ctx, fmt.Sprintf("floor round %d\n", r+1))
				if err != nil {
					return err
				}
				floor, floorPhases = append(floor, d), append(floorPhases, ph)
				b.logf("P2: round %d: floor %s (%s)", r+1, fmtDur(d.Seconds()), ph)
				return nil
			},
		}
		if err := inTurn(r, runs); err != nil {
			return nil, err
		}
	}
	if err := b.closePR(ctx, p, repo, pr, branch); err != nil {
		return nil, err
	}
	sb, sf := summarizeDurations(byop), summarizeDurations(floor)
	rt := ratio(sb.median, sf.median)
	b.note("P2: where byop's time goes (median of %d rounds): %s", len(phases), medianPhases(phases))
	b.note("P2: where the floor's time goes (median of %d rounds): %s", len(floorPhases), medianPhases(floorPhases))
	return []row{{
		id: "P2", what: "push to preview (202 → new content served)",
		byop: fmtSpread(sb), comparison: fmtSpread(sf) + " floor",
		ratio: fmt.Sprintf("%.2f×", rt), target: "≤ 1.2× floor", verdict: verdict(rt <= 1.2),
	}}, nil
}

// roundResult is one delivery followed until its preview served.
type roundResult struct {
	took   time.Duration // from the 202 to the new content served
	phases phaseTimes
	at     map[string]time.Time // when byop logged each milestone
}

// span is the time between two milestones byop logged, 0 if either is
// missing.
func (r roundResult) span(from, to string) time.Duration {
	a, okA := r.at[from]
	b, okB := r.at[to]
	if !okA || !okB {
		return 0
	}
	return b.Sub(a)
}

// byopRound commits content as index.html to branch, points the pull
// request at it, delivers action and waits until the preview serves it,
// then until byop is idle again.
func (b *bench) byopRound(ctx context.Context, p *byopProc, action string, repo *gitRepo, pr int, branch, content string) (roundResult, error) {
	sha, err := repo.commit(ctx, "refs/heads/"+branch, "refs/heads/"+branch, map[string][]byte{"index.html": []byte(content)}, "change the page")
	if err != nil {
		return roundResult{}, err
	}
	return b.byopDeliver(ctx, p, action, repo, pr, branch, sha, content)
}

// byopDeliver points the pull request at sha, delivers action and waits
// until the preview serves content, then until byop is idle again.
func (b *bench) byopDeliver(ctx context.Context, p *byopProc, action string, repo *gitRepo, pr int, branch, sha, content string) (roundResult, error) {
	if err := repo.SetRef(ctx, fmt.Sprintf("refs/pull/%d/head", pr), sha); err != nil {
		return roundResult{}, err
	}
	body, err := b.event(action, repo, pr, sha, branch)
	if err != nil {
		return roundResult{}, err
	}
	offset := p.logSize()
	if err := p.mustQueue(ctx, "pull_request", body); err != nil {
		return roundResult{}, err
	}
	accepted := time.Now()
	served, err := p.waitServes(ctx, repo, pr, content, 3*time.Minute)
	if err != nil {
		return roundResult{}, err
	}
	if err := p.waitIdle(ctx, time.Minute); err != nil {
		return roundResult{}, err
	}
	lines, _ := p.logLines(offset)
	at := milestoneTimes(lines, sha)
	return roundResult{took: served.Sub(accepted), phases: phasesOf(at, accepted, served), at: at}, nil
}

// closePR delivers the pull request's closing and waits until byop is idle.
func (b *bench) closePR(ctx context.Context, p *byopProc, repo *gitRepo, pr int, branch string) error {
	sha, err := repo.Git(ctx, nil, "rev-parse", "refs/heads/"+branch)
	if err != nil {
		return err
	}
	body, err := b.event("closed", repo, pr, sha, branch)
	if err != nil {
		return err
	}
	if err := p.mustQueue(ctx, "pull_request", body); err != nil {
		return err
	}
	return p.waitIdle(ctx, 2*time.Minute)
}

func (p *byopProc) logSize() int64 {
	fi, err := os.Stat(p.LogPath())
	if err != nil {
		return 0
	}
	return fi.Size()
}

// floor runs P2's comparison: floor.sh, then polls the published port.
type floor struct {
	b       *bench
	repo    *gitRepo
	script  string
	work    string
	project string
	port    int
	http    *http.Client
}

func (b *bench) newFloor(ctx context.Context, repo *gitRepo, base string) (*floor, error) {
	work := filepath.Join(b.dir, "p2", "floor")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	script := filepath.Join(b.dir, "floor.sh")
	if err := os.WriteFile(script, floorScript, 0o755); err != nil {
		return nil, err
	}
	if err := repo.SetRef(ctx, "refs/heads/floor", base); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return &floor{b: b, repo: repo, script: script, work: work, project: "bench-floor-" + b.nonce, port: port, http: localClient()}, nil
}

// round commits content as index.html and times floor.sh until the new
// content answers.
func (f *floor) round(ctx context.Context, content string) (time.Duration, error) {
	d, _, err := f.roundPhases(ctx, content)
	return d, err
}

// roundPhases is round with the time of each of floor.sh's steps.
func (f *floor) roundPhases(ctx context.Context, content string) (time.Duration, phaseTimes, error) {
	sha, err := f.repo.commit(ctx, "refs/heads/floor", "refs/heads/floor", map[string][]byte{"index.html": []byte(content)}, "change the page")
	if err != nil {
		return 0, nil, err
	}
	image := f.b.registryPrefix() + "/floor:" + sha
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", f.script, f.repo.cloneURL, "floor", f.work, image, f.project, strconv.Itoa(f.port))
	cmd.Env = append(append(os.Environ(), gitrepo.Env()...), "BUILDKIT_HOST="+f.b.o.buildkit, "BUILDCTL="+f.b.o.buildctl)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, nil, fmt.Errorf("floor.sh: %w: %s", err, oneLine(string(out), 400))
	}
	scriptDone := time.Now()
	var phases phaseTimes
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "floor-step" {
			us, _ := strconv.ParseInt(f[2], 10, 64)
			phases = append(phases, phase{f[1], time.Duration(us) * time.Microsecond})
		}
	}
	url := "http://127.0.0.1:" + strconv.Itoa(f.port) + "/"
	var served time.Time
	err = poll(ctx, pollEvery, time.Minute, "waiting for the floor's app to serve "+strconv.Quote(content), func() (bool, error) {
		code, body, err := httpGet(ctx, f.http, url, "")
		if err == nil && code == http.StatusOK && body == content {
			served = time.Now()
			return true, nil
		}
		return false, nil
	})
	phases = append(phases, phase{"first answer", served.Sub(scriptDone)})
	return served.Sub(start), phases, err
}

func (f *floor) down() {
	if _, err := os.Stat(filepath.Join(f.work, "compose.yaml")); err != nil {
		return // never started
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "compose", "-p", f.project, "-f", filepath.Join(f.work, "compose.yaml"), "down", "-t", "0")
	if out, err := cmd.CombinedOutput(); err != nil {
		f.b.logf("removing the floor's app: %v: %s", err, oneLine(string(out), 200))
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// phaseTimes is how long each step of one deploy took, read from byop's
// log: named phases in order.
type phaseTimes []phase

type phase struct {
	name string
	d    time.Duration
}

func (pt phaseTimes) String() string {
	var parts []string
	for _, p := range pt {
		parts = append(parts, p.name+" "+fmtDur(p.d.Seconds()))
	}
	return strings.Join(parts, ", ")
}

// milestones are the log lines a deploy passes, in order, and the name of
// the phase that ends at each.
var milestones = []struct{ msg, phase string }{
	{"deploy started", "queue pickup"},
	{"fetched commit", "fetch"},
	{"image pushed", "build+push+verify"},
	{"starting revision", "pull+compose file"},
	{"revision answers", "compose up+answer"},
}

// milestoneTimes reads when byop logged each milestone about sha.
func milestoneTimes(lines []string, sha string) map[string]time.Time {
	at := map[string]time.Time{}
	for _, l := range lines {
		if !strings.Contains(l, sha[:7]) {
			continue
		}
		msg := field(l, "msg")
		if i := strings.Index(l, `msg="`); i >= 0 {
			msg, _, _ = strings.Cut(l[i+5:], `"`)
		}
		if _, seen := at[msg]; seen {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, field(l, "time")); err == nil {
			at[msg] = t
		}
	}
	return at
}

// phasesOf splits the time from accepted to served into phases at the
// milestones byop logged. A milestone byop does not log is folded into the
// next phase.
func phasesOf(at map[string]time.Time, accepted, served time.Time) phaseTimes {
	var out phaseTimes
	last := accepted
	pending := ""
	for _, m := range milestones {
		t, ok := at[m.msg]
		if !ok {
			pending = joinPhase(pending, m.phase)
			continue
		}
		out = append(out, phase{joinPhase(pending, m.phase), t.Sub(last)})
		last, pending = t, ""
	}
	return append(out, phase{joinPhase(pending, "switch+first answer"), served.Sub(last)})
}

func joinPhase(a, b string) string {
	if a == "" {
		return b
	}
	return a + "+" + b
}

// medianPhases is the median of each phase over rounds with the same
// phases.
func medianPhases(rounds []phaseTimes) string {
	if len(rounds) == 0 {
		return "no rounds"
	}
	var parts []string
	for i, ph := range rounds[0] {
		var ds []time.Duration
		for _, r := range rounds {
			if i < len(r) && r[i].name == ph.name {
				ds = append(ds, r[i].d)
			}
		}
		parts = append(parts, ph.name+" "+fmtDur(durations(ds).median().Seconds()))
	}
	return strings.Join(parts, ", ")
}
