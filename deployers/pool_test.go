package deployers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"
)

// fakeHost is a HostRunner that keeps previews in memory and records calls.
type fakeHost struct {
	name string
	mu   sync.Mutex
	runs map[string]string // project -> revision
	// failDeploy, when set, fails every Deploy; listErr every List.
	failDeploy error
	listErr    error
	calls      []string
	closed     bool
}

func (h *fakeHost) record(call string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, call)
}

func (h *fakeHost) Deploy(_ context.Context, s Spec) (Endpoint, error) {
	h.record("deploy " + s.Project)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failDeploy != nil {
		return Endpoint{}, h.failDeploy
	}
	h.runs[s.Project] = s.Revision
	return Endpoint{URL: &url.URL{Scheme: "http", Host: h.name + ":80"}}, nil
}

func (h *fakeHost) Retire(_ context.Context, project, _ string) error {
	h.record("retire " + project)
	return nil
}

func (h *fakeHost) Teardown(_ context.Context, project string) error {
	h.record("teardown " + project)
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.runs, project)
	return nil
}

func (h *fakeHost) List(context.Context) ([]Running, error) {
	h.record("list")
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.listErr != nil {
		return nil, h.listErr
	}
	var out []Running
	for p, rev := range h.runs {
		out = append(out, Running{Project: p, Revision: rev, Endpoint: Endpoint{URL: &url.URL{Scheme: "http", Host: h.name + ":80"}}})
	}
	return out, nil
}

func (h *fakeHost) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	return nil
}

// fakeProvisioner hands out hosts named vps-1, vps-2, ... and records
// which exist.
type fakeProvisioner struct {
	mu          sync.Mutex
	n           int
	maxPreviews int
	exist       map[string]bool
	created     []string
	deleted     []string
	delay       time.Duration
}

func (f *fakeProvisioner) Provision(context.Context) (Host, error) {
	time.Sleep(f.delay) // lets concurrent deploys pile up behind it
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	name := fmt.Sprintf("vps-%d", f.n)
	if f.exist == nil {
		f.exist = map[string]bool{}
	}
	f.exist[name] = true
	f.created = append(f.created, name)
	return Host{Name: name, MaxPreviews: f.maxPreviews}, nil
}

func (f *fakeProvisioner) Deprovision(_ context.Context, h Host) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.exist, h.Name)
	f.deleted = append(f.deleted, h.Name)
	return nil
}

func (f *fakeProvisioner) Provisioned(context.Context) ([]Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Host
	for name := range f.exist {
		out = append(out, Host{Name: name, MaxPreviews: f.maxPreviews})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type poolFixture struct {
	pool  *Pool
	hosts map[string]*fakeHost
	prov  *fakeProvisioner
	clock *fakeClock
}

func newPoolFixture(t *testing.T, static []Host, prov *fakeProvisioner, maxProvisioned int) *poolFixture {
	t.Helper()
	f := &poolFixture{hosts: map[string]*fakeHost{}, prov: prov, clock: &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}}
	var mu sync.Mutex
	o := PoolOptions{
		MaxProvisioned: maxProvisioned,
		IdleTimeout:    10 * time.Minute,
		Now:            f.clock.Now,
		Connect: func(h Host) (HostRunner, error) {
			mu.Lock()
			defer mu.Unlock()
			fh, ok := f.hosts[h.Name]
			if !ok {
				fh = &fakeHost{name: h.Name, runs: map[string]string{}}
				f.hosts[h.Name] = fh
			}
			return fh, nil
		},
	}
	if prov != nil {
		o.Provisioner = prov
	}
	p, err := NewPool(static, o)
	if err != nil {
		t.Fatal(err)
	}
	f.pool = p
	return f
}

func poolSpec(pr int, rev string) Spec {
	return Spec{Project: fmt.Sprintf("byop-acme-web-pr-%d", pr), Image: "r/acme/web@" + dgst, Revision: rev, Port: 80}
}

func (f *poolFixture) deploy(t *testing.T, pr int, rev string) string {
	t.Helper()
	s := poolSpec(pr, rev)
	ep, err := f.pool.Deploy(context.Background(), s)
	if err != nil {
		t.Fatalf("deploying PR %d: %v", pr, err)
	}
	return ep.URL.Hostname()
}

func TestPoolPlacesOnTheLeastLoadedHostAndKeepsAPROnItsHost(t *testing.T) {
	f := newPoolFixture(t, []Host{{Name: "a", MaxPreviews: 2}, {Name: "b", MaxPreviews: 4}, {Name: "c", MaxPreviews: 2}}, nil, 0)
	var got []string
	for pr := 1; pr <= 5; pr++ {
		got = append(got, f.deploy(t, pr, revA))
	}
	// a 0/2, b 0/4, c 0/2 -> a; then b (0/4 beats 1/2); c; b (1/4); then
	// a, b and c are at half: the first listed, a.
	want := []string{"a", "b", "c", "b", "a"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("placements = %v, want %v", got, want)
	}
	for pr, host := range map[int]string{1: "a", 2: "b", 3: "c"} {
		if again := f.deploy(t, pr, revB); again != host {
			t.Errorf("PR %d's next commit went to %s, want its host %s", pr, again, host)
		}
	}
	if host, _ := f.pool.HostOf(poolSpec(3, revA).Project); host != "c" {
		t.Errorf("HostOf(PR 3) = %s", host)
	}
}

func TestPoolWithoutRoomRefusesUntilAPreviewCloses(t *testing.T) {
	f := newPoolFixture(t, []Host{{Name: "a", MaxPreviews: 1}}, nil, 0)
	f.deploy(t, 1, revA)
	_, err := f.pool.Deploy(context.Background(), poolSpec(2, revA))
	if !errors.Is(err, ErrPoolFull) {
		t.Fatalf("deploy on a full pool = %v, want ErrPoolFull", err)
	}
	if err := f.pool.Teardown(context.Background(), poolSpec(1, revA).Project); err != nil {
		t.Fatal(err)
	}
	if host := f.deploy(t, 2, revA); host != "a" {
		t.Errorf("after teardown PR 2 went to %s", host)
	}
}

func TestPoolReleasesThePlaceOfAFirstDeployThatFailed(t *testing.T) {
	f := newPoolFixture(t, []Host{{Name: "a", MaxPreviews: 1}, {Name: "b", MaxPreviews: 1}}, nil, 0)
	f.pool.List(context.Background()) // connect
	f.hosts["a"].failDeploy = errors.New("boom")
	if _, err := f.pool.Deploy(context.Background(), poolSpec(1, revA)); err == nil {
		t.Fatal("deploy on a failing host succeeded")
	}
	if _, ok := f.pool.HostOf(poolSpec(1, revA).Project); ok {
		t.Error("a failed first deploy keeps its place")
	}
	f.hosts["a"].failDeploy = nil
	f.deploy(t, 2, revA)
	f.deploy(t, 3, revA)
	if host, _ := f.pool.HostOf(poolSpec(3, revA).Project); host == "" {
		t.Error("room taken by the failed deploy was not given back")
	}
}

func TestPoolLearnsWhatRunsWhereFromTheHosts(t *testing.T) {
	f := newPoolFixture(t, []Host{{Name: "a", MaxPreviews: 2}, {Name: "b", MaxPreviews: 2}}, nil, 0)
	// byop restarted: b already runs PR 9 and PR 8.
	f.hosts["b"].runs[poolSpec(9, revA).Project] = revA
	f.hosts["b"].runs[poolSpec(8, revA).Project] = revA
	if host := f.deploy(t, 9, revB); host != "b" {
		t.Errorf("PR 9 went to %s, want b where it runs", host)
	}
	if host := f.deploy(t, 1, revA); host != "a" {
		t.Errorf("PR 1 went to %s, want a: b is full", host)
	}
	running, err := f.pool.List(context.Background())
	if err != nil || len(running) != 3 {
		t.Errorf("List() = %v, %v; want three previews", running, err)
	}
}

func TestPoolSkipsAnUnreachableHostForNewPreviews(t *testing.T) {
	f := newPoolFixture(t, []Host{{Name: "a", MaxPreviews: 5}, {Name: "b", MaxPreviews: 5}}, nil, 0)
	f.hosts["a"].listErr = errors.New("connection refused")
	for pr := 1; pr <= 3; pr++ {
		if host := f.deploy(t, pr, revA); host != "b" {
			t.Errorf("PR %d went to %s, want b", pr, host)
		}
	}
}

func TestPoolProvisionsOneHostWhenFullAndHoldsTheCap(t *testing.T) {
	prov := &fakeProvisioner{maxPreviews: 2, delay: 50 * time.Millisecond}
	f := newPoolFixture(t, []Host{{Name: "static", MaxPreviews: 1}}, prov, 1)
	f.deploy(t, 1, revA) // fills static

	// Two previews arrive at once on a full pool: one host is made, and
	// both fit on it.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.pool.Deploy(context.Background(), poolSpec(2+i, revA))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(prov.created, []string{"vps-1"}) {
		t.Fatalf("created %v, want one host", prov.created)
	}
	for _, pr := range []int{2, 3} {
		if host, _ := f.pool.HostOf(poolSpec(pr, revA).Project); host != "vps-1" {
			t.Errorf("PR %d on %s, want vps-1", pr, host)
		}
	}

	_, err := f.pool.Deploy(context.Background(), poolSpec(4, revA))
	if !errors.Is(err, ErrPoolFull) {
		t.Fatalf("deploy past the cap = %v, want ErrPoolFull", err)
	}
	if len(prov.created) != 1 {
		t.Errorf("created %v past the cap of 1", prov.created)
	}
}

func TestPoolDeletesAProvisionedHostAfterItIdledLongEnough(t *testing.T) {
	prov := &fakeProvisioner{maxPreviews: 1}
	f := newPoolFixture(t, []Host{{Name: "static", MaxPreviews: 1}}, prov, 2)
	ctx := context.Background()
	f.deploy(t, 1, revA) // static
	f.deploy(t, 2, revA) // vps-1

	f.clock.Add(time.Hour)
	if gone, _ := f.pool.Reap(ctx); len(gone) != 0 {
		t.Fatalf("reaped %v while it runs a preview", gone)
	}
	if err := f.pool.Teardown(ctx, poolSpec(2, revA).Project); err != nil {
		t.Fatal(err)
	}
	if err := f.pool.Teardown(ctx, poolSpec(1, revA).Project); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(9 * time.Minute)
	if gone, _ := f.pool.Reap(ctx); len(gone) != 0 {
		t.Fatalf("reaped %v after 9 of 10 idle minutes", gone)
	}
	f.clock.Add(time.Minute)
	gone, err := f.pool.Reap(ctx)
	if err != nil || !reflect.DeepEqual(gone, []string{"vps-1"}) {
		t.Fatalf("Reap() = %v, %v; want vps-1 deleted, the configured host kept", gone, err)
	}
	if !reflect.DeepEqual(prov.deleted, []string{"vps-1"}) || !f.hosts["vps-1"].closed {
		t.Errorf("deleted %v, closed %v", prov.deleted, f.hosts["vps-1"].closed)
	}
	// The next preview that needs room gets a new host.
	f.deploy(t, 3, revA)
	if host := f.deploy(t, 4, revA); host != "vps-2" {
		t.Errorf("PR 4 went to %s, want a new host", host)
	}
}

func TestPoolFindsTheHostsItProvisionedBeforeARestart(t *testing.T) {
	prov := &fakeProvisioner{maxPreviews: 1, exist: map[string]bool{"vps-7": true}}
	f := newPoolFixture(t, nil, prov, 1)
	f.pool.sync(context.Background())
	// Syncing adopted vps-7; it runs PR 5.
	f.hosts["vps-7"].runs[poolSpec(5, revA).Project] = revA
	running, err := f.pool.List(context.Background())
	if err != nil || len(running) != 1 || running[0].Project != poolSpec(5, revA).Project {
		t.Fatalf("List() = %v, %v; want PR 5 on the adopted host", running, err)
	}
	// The adopted host counts toward the cap.
	if _, err := f.pool.Deploy(context.Background(), poolSpec(6, revA)); !errors.Is(err, ErrPoolFull) {
		t.Errorf("deploy with the cap taken by an adopted host = %v, want ErrPoolFull", err)
	}
	f.clock.Add(time.Hour)
	if gone, _ := f.pool.Reap(context.Background()); len(gone) != 0 {
		t.Errorf("reaped %v although it runs PR 5", gone)
	}
}
