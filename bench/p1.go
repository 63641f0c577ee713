package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/internal/delivery"
	"github.com/byop-dev/byop/tasks"
)

// p1Round is one open-loop run against byop or the ceiling.
type p1Round struct {
	res       loadResult
	found     int     // accepted deliveries whose task is in Redis (byop only)
	serverCPU float64 // CPU seconds the server used during the run
	redisCPU  float64 // CPU seconds redis-server used
	benchCPU  float64 // CPU seconds the bench (the load generator) used
	load      string  // load average after the run
}

// p1 is webhook ingest: signed pull_request deliveries at a fixed rate
// against byop serve with real Redis, and against a bare net/http handler
// that only checks the HMAC (the ceiling).
func (b *bench) p1(ctx context.Context) ([]row, error) {
	ingest := &gitRepo{owner: benchOwner, name: "ingest", cloneURL: b.git.CloneURL(benchOwner + "/ingest")}
	body, err := b.event("opened", ingest, 1347, "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "changes")
	if err != nil {
		return nil, err
	}
	n := int(int64(b.o.p1Rate) * int64(b.o.p1Duration) / int64(time.Second))
	b.logf("P1: %d deliveries of %d bytes at %d/s per run, %d rounds", n, len(body), b.o.p1Rate, b.o.p1Rounds)
	var byop, ceil []p1Round
	for r := 0; r < b.o.p1Rounds; r++ {
		runs := []func() error{
			func() error {
				rr, err := b.p1Byop(ctx, r, body, n)
				if err == nil {
					byop = append(byop, rr)
				}
				return err
			},
			func() error {
				rr, err := b.p1Ceiling(ctx, body, n)
				if err == nil {
					ceil = append(ceil, rr)
				}
				return err
			},
		}
		if err := inTurn(r, runs); err != nil {
			return nil, err
		}
	}
	if b.o.cpuProfile != "" && b.o.cpuProfileMeasure == "P1" {
		if err := b.p1Profile(ctx, body, n); err != nil {
			return nil, err
		}
	}
	rows, cpuNote := p1Rows(byop, ceil)
	b.note("%s", cpuNote)
	return rows, nil
}

// p1Profile runs the same load once more against byop's receiver built
// into the bench (the `receiver` subcommand) under a CPU profile. Its
// figures are only logged.
func (b *bench) p1Profile(ctx context.Context, body []byte, n int) error {
	opt := asynq.RedisClientOpt{Addr: b.o.redis, DB: b.o.redisDB}
	if err := flushRedis(ctx, opt); err != nil {
		return err
	}
	secret := []byte("receiver-" + b.nonce)
	c, err := startChild(append(os.Environ(), receiverEnv+"="+string(secret)), "receiver",
		"-redis", b.o.redis, "-redis-db", strconv.Itoa(b.o.redisDB), "-cpuprofile", b.o.cpuProfile, "-log", b.dir+"/p1/receiver.log")
	if err != nil {
		return err
	}
	url := "http://" + c.addr + "/webhooks/github"
	sig := delivery.Sign(secret, body)
	rr, err := b.p1Run(ctx, c.cmd.Process.Pid, n, func(ctx context.Context, cl *http.Client, i int) (int, error) {
		return postDelivery(ctx, cl, url, body, sig, "profile-"+strconv.Itoa(i))
	})
	if serr := c.stop(); err == nil {
		err = serr
	}
	b.logf("P1: profiled receiver: %s; profile: %s", describeLoad(rr), b.o.cpuProfile)
	return err
}

func (b *bench) p1Byop(ctx context.Context, round int, body []byte, n int) (p1Round, error) {
	// The queues are paused before byop starts: its worker takes nothing,
	// so every accepted delivery must still be in Redis at the end, and no
	// build competes with the receiver for the CPU.
	p, err := b.startByop(ctx, byopSettings{dir: fmt.Sprintf("%s/p1/byop-%d", b.dir, round), redisDB: b.o.redisDB}, func(opt asynq.RedisClientOpt) error {
		in := asynq.NewInspector(opt)
		defer in.Close()
		for _, q := range []string{tasks.QueueDefault, tasks.QueueTeardown} {
			if err := in.PauseQueue(q); err != nil {
				return fmt.Errorf("pausing queue %s: %w", q, err)
			}
		}
		return nil
	})
	if err != nil {
		return p1Round{}, err
	}
	defer p.Stop()
	url := "http://" + p.API() + "/webhooks/github"
	sig := delivery.Sign(p.secret, body)
	prefix := fmt.Sprintf("bench-%s-p1-%d-", b.nonce, round)
	rr, err := b.p1Run(ctx, p.Pid(), n, func(ctx context.Context, c *http.Client, i int) (int, error) {
		return postDelivery(ctx, c, url, body, sig, prefix+strconv.Itoa(i))
	})
	if err != nil {
		return rr, err
	}
	ids := make(map[string]bool, len(rr.res.accepted))
	for _, i := range rr.res.accepted {
		ids[prefix+strconv.Itoa(i)] = true
	}
	if rr.found, err = countTasks(p.redis, ids); err != nil {
		return rr, err
	}
	b.logf("P1: byop round %d: %s; found %d of %d accepted in Redis", round+1, describeLoad(rr), rr.found, len(rr.res.accepted))
	return rr, nil
}

func (b *bench) p1Ceiling(ctx context.Context, body []byte, n int) (p1Round, error) {
	secret := []byte("ceiling-" + b.nonce)
	c, err := startCeiling(secret)
	if err != nil {
		return p1Round{}, err
	}
	defer c.stop()
	url := "http://" + c.addr + "/webhooks/github"
	sig := delivery.Sign(secret, body)
	rr, err := b.p1Run(ctx, c.cmd.Process.Pid, n, func(ctx context.Context, cl *http.Client, i int) (int, error) {
		return postDelivery(ctx, cl, url, body, sig, "ceiling-"+strconv.Itoa(i))
	})
	b.logf("P1: ceiling: %s", describeLoad(rr))
	return rr, err
}

func (b *bench) p1Run(ctx context.Context, pid, n int, send func(context.Context, *http.Client, int) (int, error)) (p1Round, error) {
	c := loadClient()
	defer c.CloseIdleConnections()
	srv0, err := procCPU(pid)
	if err != nil {
		return p1Round{}, err
	}
	self0 := selfCPU()
	redisPID := pidOf("redis-server")
	redis0, _ := procCPU(redisPID)
	res := openLoop(ctx, b.o.p1Rate, n, func(ctx context.Context, i int) (int, error) { return send(ctx, c, i) })
	srv1, err := procCPU(pid)
	if err != nil {
		return p1Round{}, err
	}
	redis1, _ := procCPU(redisPID)
	rr := p1Round{res: res, serverCPU: srv1 - srv0, redisCPU: redis1 - redis0, benchCPU: selfCPU() - self0, load: loadAvg()}
	if ctx.Err() != nil {
		return rr, ctx.Err()
	}
	if len(res.latencies) == 0 {
		return rr, fmt.Errorf("no delivery was answered: %v", res.firstErr)
	}
	return rr, nil
}

func describeLoad(rr p1Round) string {
	r := rr.res
	return fmt.Sprintf("sent %d in %s, codes %v, %d errors (%v), p50 %s p99 %s max %s, send lag p99 %s, CPU: server %.1fs redis %.1fs bench %.1fs, load %s",
		r.sent, r.elapsed.Round(time.Millisecond), r.codes, r.errors, r.firstErr,
		fmtDur(r.latencies.quantile(0.5).Seconds()), fmtDur(r.latencies.quantile(0.99).Seconds()), fmtDur(r.latencies.max().Seconds()),
		fmtDur(r.lag.quantile(0.99).Seconds()), rr.serverCPU, rr.redisCPU, rr.benchCPU, rr.load)
}

// countTasks counts the ids that are tasks in Redis, in any state of any
// queue.
func countTasks(opt asynq.RedisClientOpt, ids map[string]bool) (int, error) {
	in := asynq.NewInspector(opt)
	defer in.Close()
	queues, err := in.Queues()
	if err != nil {
		return 0, fmt.Errorf("listing queues: %w", err)
	}
	const size = 5000
	seen := map[string]bool{}
	for _, q := range queues {
		lists := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
			in.ListPendingTasks, in.ListActiveTasks, in.ListScheduledTasks,
			in.ListRetryTasks, in.ListArchivedTasks, in.ListCompletedTasks,
		}
		for _, list := range lists {
			for page := 1; ; page++ {
				ts, err := list(q, asynq.PageSize(size), asynq.Page(page))
				if err != nil {
					return 0, fmt.Errorf("listing tasks of queue %s: %w", q, err)
				}
				for _, t := range ts {
					seen[t.ID] = true
				}
				if len(ts) < size {
					break
				}
			}
		}
	}
	found := 0
	for id := range ids {
		if seen[id] {
			found++
		}
	}
	return found, nil
}

func p1Rows(byop, ceil []p1Round) (rows []row, cpuNote string) {
	pick := func(rs []p1Round, f func(loadResult) time.Duration) summary {
		var v []time.Duration
		for _, r := range rs {
			v = append(v, f(r.res))
		}
		return summarizeDurations(v)
	}
	p50 := func(r loadResult) time.Duration { return r.latencies.quantile(0.5) }
	p99 := func(r loadResult) time.Duration { return r.latencies.quantile(0.99) }
	pmax := func(r loadResult) time.Duration { return r.latencies.max() }
	accepted, found, sent, non202, errs := 0, 0, 0, 0, 0
	var cpuB, cpuC []float64
	for _, r := range byop {
		accepted += len(r.res.accepted)
		found += r.found
		sent += r.res.sent
		non202 += len(r.res.latencies) - len(r.res.accepted)
		errs += r.res.errors
		cpuB = append(cpuB, r.serverCPU/float64(r.res.sent))
	}
	for _, r := range ceil {
		cpuC = append(cpuC, r.serverCPU/float64(r.res.sent))
	}
	lat := func(what string, f func(loadResult) time.Duration, target string, ok func(float64) bool) row {
		sb, sc := pick(byop, f), pick(ceil, f)
		r := row{id: "P1", what: what, byop: fmtSpread(sb), comparison: fmtSpread(sc) + " ceiling",
			ratio: fmt.Sprintf("%.1f×", ratio(sb.median, sc.median)), target: target, verdict: "—"}
		if ok != nil {
			r.verdict = verdict(ok(sb.median))
		}
		return r
	}
	cb, cc := summarize(cpuB), summarize(cpuC)
	var redisB, benchB []float64
	for _, r := range byop {
		redisB = append(redisB, r.redisCPU/float64(r.res.sent))
		benchB = append(benchB, r.benchCPU/float64(r.res.sent))
	}
	cpuNote = fmt.Sprintf("P1: CPU per delivery against byop (median of rounds): byop %s, redis-server %s, load generator %s; at 1,000/s that is %.2f + %.2f + %.2f of the 2 cores",
		fmtDur(cb.median), fmtDur(summarize(redisB).median), fmtDur(summarize(benchB).median),
		cb.median*1000, summarize(redisB).median*1000, summarize(benchB).median*1000)
	return []row{
		lat("ingest ack p50", p50, "", nil),
		lat("ingest ack p99", p99, "p99 ≤ 5 ms", func(s float64) bool { return s <= 0.005 }),
		lat("ingest ack max", pmax, "", nil),
		{id: "P1", what: "ingest lost (accepted − in Redis)",
			byop:       fmt.Sprintf("%d of %d accepted (%d sent, %d not 202, %d errors)", accepted-found, accepted, sent, non202, errs),
			comparison: "—", ratio: "—", target: "lost = 0", verdict: verdict(accepted == found)},
		{id: "P1", what: "ingest server CPU per delivery", byop: fmtDur(cb.median), comparison: fmtDur(cc.median) + " ceiling",
			ratio: fmt.Sprintf("%.1f×", ratio(cb.median, cc.median)), target: "", verdict: "—"},
	}, cpuNote
}

// procCPU is the CPU time (user + system) process pid has used, in seconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; fields count from its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks, nil
}

// pidOf returns the pid of the first process named comm, 0 if none.
func pidOf(comm string) int {
	paths, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == comm {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	return 0
}

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100

func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
