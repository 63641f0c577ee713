// Command bench measures byop against its floor: each measure runs byop
// and its comparison in the same run, alternating, for several rounds, and
// prints one table of medians and spreads. `make bench` builds byop and
// runs it; bench/README.md says what each measure does.
//
// The figures are printed, never asserted: bench exits non-zero only when
// a measure could not be taken.
//
// Usage:
//
//	bench -byop .cache/bench/byop [-only P1,P3] [-dir .cache/bench/run]
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/byop-dev/byop/internal/githttp"
)

// benchOwner owns every repository the bench creates; byop is configured
// to build benchOwner/*.
const benchOwner = "bench"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "ceiling":
			os.Exit(ceilingMain(os.Args[2:]))
		case "receiver":
			os.Exit(receiverMain(os.Args[2:]))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	byop, buildctl, dir, payloads string
	redis, buildkit, registry     string
	baseImage                     string
	redisDB                       int
	only                          map[string]bool

	p1Rate, p1Rounds  int
	p1Duration        time.Duration
	p2Rounds          int
	p3Rounds          int
	p3DepsMB          int
	p4Rounds          int
	p4Commits         int
	p5Previews        int
	p5Rounds          int
	p5Requests        int
	cpuProfile        string
	cpuProfileMeasure string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.byop, "byop", ".cache/bench/byop", "the byop binary to measure")
	fs.StringVar(&o.buildctl, "buildctl", "buildctl", "buildctl, for P2's floor")
	fs.StringVar(&o.dir, "dir", ".cache/bench/run", "work dir: repositories, byop's data and logs (emptied first)")
	fs.StringVar(&o.payloads, "payloads", "../shared/testdata/github-webhooks/octokit/pull_request", "directory of real pull_request deliveries")
	fs.StringVar(&o.redis, "redis", envOr("BYOP_TEST_REDIS", "127.0.0.1:6379"), "Redis address")
	fs.IntVar(&o.redisDB, "redis-db", 12, "Redis database reserved for the bench (flushed)")
	fs.StringVar(&o.buildkit, "buildkit", envOr("BYOP_TEST_BUILDKIT", "unix:///run/buildkit/buildkitd.sock"), "buildkitd address")
	fs.StringVar(&o.registry, "registry", envOr("BYOP_TEST_REGISTRY", "127.0.0.1:5000"), "registry host:port (plain HTTP)")
	fs.StringVar(&o.baseImage, "base-image", os.Getenv("BYOP_TEST_BASE_IMAGE"), "busybox base image of the sample app")
	only := fs.String("only", "P1,P2,P3,P4,P5", "measures to run, comma-separated")
	fs.IntVar(&o.p1Rate, "p1-rate", 1000, "P1: deliveries per second")
	fs.DurationVar(&o.p1Duration, "p1-duration", 30*time.Second, "P1: length of one run")
	fs.IntVar(&o.p1Rounds, "p1-rounds", 3, "P1: rounds (one run of byop and one of the ceiling each)")
	fs.IntVar(&o.p2Rounds, "p2-rounds", 9, "P2: rounds")
	fs.IntVar(&o.p3Rounds, "p3-rounds", 3, "P3: rounds (a new repository each)")
	fs.IntVar(&o.p3DepsMB, "p3-deps-mb", 64, "P3: size of the app's dependency layer in MB")
	fs.IntVar(&o.p4Rounds, "p4-rounds", 9, "P4: rounds")
	fs.IntVar(&o.p4Commits, "p4-commits", 2000, "P4: commits in the generated repository")
	fs.IntVar(&o.p5Previews, "p5-previews", 20, "P5: previews alive at once")
	fs.IntVar(&o.p5Rounds, "p5-rounds", 4, "P5: latency rounds")
	fs.IntVar(&o.p5Requests, "p5-requests", 500, "P5: requests per latency round and path")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of -cpuprofile-measure to this file (P1: an extra run against byop's receiver built into the bench; P4: byop's fetch, in the bench)")
	fs.StringVar(&o.cpuProfileMeasure, "cpuprofile-measure", "P4", "measure -cpuprofile profiles: P1 or P4")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.only = map[string]bool{}
	for _, m := range strings.Split(*only, ",") {
		if m = strings.ToUpper(strings.TrimSpace(m)); m != "" {
			o.only[m] = true
		}
	}
	if o.baseImage == "" && (o.only["P2"] || o.only["P3"] || o.only["P5"]) {
		return o, errors.New("no base image: run `make bench`, which reads it from .cache/test.env, or pass -base-image")
	}
	return o, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// bench is one run of the harness.
type bench struct {
	o        options
	dir      string
	nonce    string // names this run's repositories, images and containers
	log      io.Writer
	git      *githttp.Server
	payloads map[string][]byte
	notes    []string // printed after the table
}

// note records a finding to print after the table.
func (b *bench) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	b.notes = append(b.notes, n)
	b.logf("%s", n)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

func (b *bench) registryPrefix() string { return b.o.registry + "/bench-" + b.nonce }

// measure is one row of the table.
type row struct {
	id, what, byop, comparison, ratio, target, verdict string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("emptying %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if o.byop, err = filepath.Abs(o.byop); err != nil {
		return err
	}
	b := &bench{o: o, dir: dir, nonce: strings.ToLower(rand.Text()[:6]), log: stderr, payloads: map[string][]byte{}}
	for _, action := range []string{"opened", "synchronize", "closed"} {
		raw, err := os.ReadFile(filepath.Join(o.payloads, action+".payload.json"))
		if err != nil {
			return fmt.Errorf("reading the real deliveries: %w", err)
		}
		b.payloads[action] = raw
	}
	if b.git, err = githttp.Start(filepath.Join(dir, "git"), githttp.Options{AnySHA1InWant: true}); err != nil {
		return fmt.Errorf("the bench serves its repositories with git: %w", err)
	}
	defer b.git.Close()
	defer b.cleanup()

	machine := describeMachine(ctx, b)
	fmt.Fprintln(stdout, machine)
	b.logf("run %s; logs and data under %s", b.nonce, dir)

	measures := []struct {
		id  string
		run func(context.Context) ([]row, error)
	}{
		{"P1", b.p1}, {"P2", b.p2}, {"P3", b.p3}, {"P4", b.p4}, {"P5", b.p5},
	}
	var rows []row
	var failed []string
	start := time.Now()
	for _, m := range measures {
		if !o.only[m.id] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		b.logf("%s: starting (load %s)", m.id, loadAvg())
		rs, err := m.run(ctx)
		rows = append(rows, rs...)
		if err != nil {
			failed = append(failed, m.id)
			b.logf("%s: could not measure: %v", m.id, err)
			rows = append(rows, row{id: m.id, what: "not measured", byop: oneLine(err.Error(), 80), verdict: "—"})
		}
		b.logf("%s: done in %s (load %s)", m.id, time.Since(t0).Round(time.Second), loadAvg())
	}
	fmt.Fprintln(stdout)
	printTable(stdout, rows)
	if len(b.notes) > 0 {
		fmt.Fprintln(stdout)
		for _, n := range b.notes {
			fmt.Fprintln(stdout, "- "+n)
		}
	}
	fmt.Fprintf(stdout, "\n%d measures in %s; logs: %s\n", len(rows), time.Since(start).Round(time.Second), dir)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not measure %s", strings.Join(failed, ", "))
	}
	return nil
}

// inTurn runs round r's two runs, byop's and its comparison's, swapping
// their order every other round so that neither always runs first (on a
// warmer or a more loaded machine).
func inTurn(r int, runs []func() error) error {
	if r%2 == 1 {
		runs = []func() error{runs[1], runs[0]}
	}
	for _, f := range runs {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// printTable prints rows as one Markdown table.
func printTable(w io.Writer, rows []row) {
	head := row{id: "id", what: "measure", byop: "byop", comparison: "comparison", ratio: "ratio", target: "target", verdict: "met"}
	all := append([]row{head}, rows...)
	cols := func(r row) []string {
		return []string{r.id, r.what, r.byop, r.comparison, r.ratio, r.target, r.verdict}
	}
	width := make([]int, 7)
	for _, r := range all {
		for i, c := range cols(r) {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var sb strings.Builder
		sb.WriteString("|")
		for i, c := range cells {
			sb.WriteString(" " + c + strings.Repeat(" ", width[i]-len([]rune(c))) + " |")
		}
		fmt.Fprintln(w, sb.String())
	}
	line(cols(head))
	sep := make([]string, 7)
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, r := range rows {
		line(cols(r))
	}
}

func verdict(met bool) string {
	if met {
		return "yes"
	}
	return "no"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// describeMachine says what the figures were measured on.
func describeMachine(ctx context.Context, b *bench) string {
	var sb strings.Builder
	out := func(name string, args ...string) string {
		s, err := commandOutput(ctx, name, args...)
		if err != nil {
			return "?"
		}
		return strings.SplitN(strings.TrimSpace(s), "\n", 2)[0]
	}
	mem := "?"
	if s, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Join(strings.Fields(strings.SplitN(string(s), "\n", 2)[0])[1:], " ")
	}
	cpu := "?"
	if s, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(s), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	fmt.Fprintf(&sb, "machine: %d cores (%s), %s memory, kernel %s\n", runtime.NumCPU(), cpu, mem, out("uname", "-r"))
	fmt.Fprintf(&sb, "versions: byop %s; docker %s; compose %s; %s; redis %s; %s",
		out("git", "describe", "--always", "--dirty"), out("docker", "version", "--format", "{{.Server.Version}}"),
		out("docker", "compose", "version", "--short"), out(b.o.buildctl, "--version"),
		field(out("redis-server", "--version"), "v"), out("git", "--version"))
	fmt.Fprintf(&sb, "\ngo: %s; load before: %s", runtime.Version(), loadAvg())
	return sb.String()
}
