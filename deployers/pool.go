package deployers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrPoolFull: every host has as many previews as it may take, and no host
// can be added. A later try may find room.
var ErrPoolFull = errors.New("no preview host has room")

// Provisioner rents hosts for the pool and gives them back.
type Provisioner interface {
	// Provision creates a host and returns it once it takes SSH
	// connections, with its host key already known to byop.
	Provision(ctx context.Context) (Host, error)
	// Deprovision deletes a host that Provision made.
	Deprovision(ctx context.Context, h Host) error
	// Provisioned lists the hosts Provision made that exist now, so that a
	// restarted byop finds them again.
	Provisioned(ctx context.Context) ([]Host, error)
}

// HostRunner runs previews on one host of the pool; *Remote is one.
type HostRunner interface {
	Deploy(ctx context.Context, s Spec) (Endpoint, error)
	Retire(ctx context.Context, project, keepRevision string) error
	Teardown(ctx context.Context, project string) error
	List(ctx context.Context) ([]Running, error)
	Close() error
}

var _ HostRunner = (*Remote)(nil)

// PoolOptions configure a Pool.
type PoolOptions struct {
	Log *slog.Logger // default: discard
	// Remote is how every host is driven.
	Remote RemoteOptions
	// Provisioner adds hosts when none has room; nil: the pool never grows.
	Provisioner Provisioner
	// MaxProvisioned caps how many provisioned hosts exist at once.
	MaxProvisioned int
	// IdleTimeout is how long a provisioned host runs no preview before it
	// is deleted (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Connect returns the runner of a host (default: NewRemote with Remote).
	Connect func(Host) (HostRunner, error)
}

// DefaultIdleTimeout is how long a provisioned host may stay empty.
const DefaultIdleTimeout = 30 * time.Minute

// Pool runs previews on a set of hosts. It places a new preview on the
// least-loaded host with room and keeps a preview's later commits on the
// same host; when no host has room, its Provisioner adds one, up to
// MaxProvisioned, and Reap deletes provisioned hosts that stayed idle.
// It has Local's methods, so the pipeline drives either.
type Pool struct {
	log   *slog.Logger
	opts  PoolOptions
	provM sync.Mutex // one provisioning or reaping at a time

	mu      sync.Mutex
	hosts   []*poolHost
	placed  map[string]*poolHost // project -> host
	adopted bool                 // the Provisioner's existing hosts were added
}

type poolHost struct {
	host        Host
	run         HostRunner
	provisioned bool
	projects    map[string]bool
	idleSince   time.Time
	synced      bool // its previews are known
	leaving     bool // being deleted: no new placements
}

func (h *poolHost) room() int { return h.host.MaxPreviews - len(h.projects) }

// NewPool returns a pool of the configured hosts. It connects to none
// until a call needs it.
func NewPool(hosts []Host, o PoolOptions) (*Pool, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Connect == nil {
		ro := o.Remote
		if ro.Log == nil {
			ro.Log = o.Log
		}
		o.Connect = func(h Host) (HostRunner, error) { return NewRemote(h, ro) }
	}
	if o.Provisioner != nil && o.MaxProvisioned < 1 {
		return nil, errors.New("creating host pool: provisioning is on but the instance cap is below 1")
	}
	if len(hosts) == 0 && o.Provisioner == nil {
		return nil, errors.New("creating host pool: no hosts and no provisioning")
	}
	p := &Pool{log: o.Log, opts: o, placed: map[string]*poolHost{}}
	seen := map[string]bool{}
	for _, h := range hosts {
		if seen[h.Name] {
			return nil, fmt.Errorf("creating host pool: two hosts named %q", h.Name)
		}
		seen[h.Name] = true
		if _, err := p.add(h, false); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

// add connects a host into the pool. The caller holds p.mu or owns p.
func (p *Pool) add(h Host, provisioned bool) (*poolHost, error) {
	if h.Name == "" {
		h.Name = h.SSH.Addr
	}
	if h.MaxPreviews < 1 {
		return nil, fmt.Errorf("host %s: max previews %d, want at least 1", h.Name, h.MaxPreviews)
	}
	run, err := p.opts.Connect(h)
	if err != nil {
		return nil, fmt.Errorf("adding host %s: %w", h.Name, err)
	}
	ph := &poolHost{host: h, run: run, provisioned: provisioned, projects: map[string]bool{}, idleSince: p.opts.Now()}
	p.hosts = append(p.hosts, ph)
	return ph, nil
}

// sync learns which previews run where, from hosts not asked yet, and
// adds the provisioned hosts a previous run of byop left. It returns why
// the hosts it could not reach were not reached.
func (p *Pool) sync(ctx context.Context) (unreachable []error) {
	p.mu.Lock()
	adopt := !p.adopted && p.opts.Provisioner != nil
	p.mu.Unlock()
	if adopt {
		p.adopt(ctx)
	}
	p.mu.Lock()
	var todo []*poolHost
	for _, h := range p.hosts {
		if !h.synced {
			todo = append(todo, h)
		}
	}
	p.mu.Unlock()
	for _, h := range todo {
		if _, err := p.listHost(ctx, h); err != nil {
			p.log.Warn("host not reachable; no new previews go there until it is", "host", h.host.Name, "err", err)
			unreachable = append(unreachable, fmt.Errorf("host %s: %w", h.host.Name, err))
		}
	}
	return unreachable
}

// adopt adds the hosts the Provisioner made before.
func (p *Pool) adopt(ctx context.Context) {
	hs, err := p.opts.Provisioner.Provisioned(ctx)
	if err != nil {
		p.log.Warn("listing provisioned hosts", "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.adopted {
		return
	}
	for _, h := range hs {
		if p.byName(h.Name) != nil {
			continue
		}
		if _, err := p.add(h, true); err != nil {
			p.log.Warn("adding provisioned host", "host", h.Name, "err", err)
			continue
		}
		p.log.Info("found provisioned host", "host", h.Name)
	}
	p.adopted = true
}

func (p *Pool) byName(name string) *poolHost {
	for _, h := range p.hosts {
		if h.host.Name == name {
			return h
		}
	}
	return nil
}

// listHost lists what runs on h and records it.
func (p *Pool) listHost(ctx context.Context, h *poolHost) ([]Running, error) {
	rs, err := h.run.List(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rs {
		if other, ok := p.placed[r.Project]; ok && other != h {
			p.log.Warn("preview runs on two hosts; keeping the first", "project", r.Project, "hosts", []string{other.host.Name, h.host.Name})
			continue
		}
		h.projects[r.Project] = true
		p.placed[r.Project] = h
	}
	h.synced = true
	return rs, nil
}

// place returns the host of project, choosing one (and reserving room on
// it) when the project runs nowhere yet; fresh says so.
func (p *Pool) place(ctx context.Context, project string) (h *poolHost, fresh bool, err error) {
	unreachable := p.sync(ctx)
	if h, fresh := p.tryPlace(project); h != nil {
		return h, fresh, nil
	}
	if p.opts.Provisioner == nil {
		// Say why the hosts that could not be reached were not: a host key
		// that is not the known one must show as that, not as "full".
		return nil, false, errors.Join(append([]error{fmt.Errorf("placing %s: %w (%s)", project, ErrPoolFull, p.summary())}, unreachable...)...)
	}
	// One provisioning at a time: whoever waited may find the new host.
	p.provM.Lock()
	defer p.provM.Unlock()
	if h, fresh := p.tryPlace(project); h != nil {
		return h, fresh, nil
	}
	p.mu.Lock()
	n := 0
	for _, h := range p.hosts {
		if h.provisioned && !h.leaving {
			n++
		}
	}
	p.mu.Unlock()
	if n >= p.opts.MaxProvisioned {
		return nil, false, fmt.Errorf("placing %s: %w: the cap of %d provisioned hosts is reached (%s)", project, ErrPoolFull, p.opts.MaxProvisioned, p.summary())
	}
	p.log.Info("no host has room; provisioning one", "project", project, "provisioned", n, "cap", p.opts.MaxProvisioned)
	nh, err := p.opts.Provisioner.Provision(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("placing %s: provisioning a host: %w", project, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ph, err := p.add(nh, true)
	if err != nil {
		// The host exists but byop cannot use it: give it back at once.
		p.log.Error("provisioned host unusable; deleting it", "host", nh.Name, "err", err)
		if derr := p.opts.Provisioner.Deprovision(context.WithoutCancel(ctx), nh); derr != nil {
			p.log.Error("deleting unusable host", "host", nh.Name, "err", derr)
		}
		return nil, false, fmt.Errorf("placing %s: %w", project, err)
	}
	ph.synced = true // new and empty
	p.log.Info("provisioned host joined the pool", "host", nh.Name, "max_previews", nh.MaxPreviews)
	ph.projects[project] = true
	p.placed[project] = ph
	return ph, true, nil
}

// tryPlace returns project's host, or reserves room on the least-loaded
// host that has some (fresh); nil when none has.
func (p *Pool) tryPlace(project string) (h *poolHost, fresh bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h, ok := p.placed[project]; ok {
		return h, false
	}
	var best *poolHost
	for _, h := range p.hosts {
		if !h.synced || h.leaving || h.room() < 1 {
			continue
		}
		// Least loaded by share of capacity; ties go to the host listed first.
		if best == nil || len(h.projects)*best.host.MaxPreviews < len(best.projects)*h.host.MaxPreviews {
			best = h
		}
	}
	if best == nil {
		return nil, false
	}
	best.projects[project] = true
	p.placed[project] = best
	return best, true
}

func (p *Pool) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for _, h := range p.hosts {
		state := fmt.Sprintf("%d/%d", len(h.projects), h.host.MaxPreviews)
		switch {
		case h.leaving:
			state += " leaving"
		case !h.synced:
			state += " unreachable"
		}
		parts = append(parts, h.host.Name+" "+state)
	}
	if len(parts) == 0 {
		return "no hosts"
	}
	return strings.Join(parts, ", ")
}

// unplace forgets a placement whose first deploy failed.
func (p *Pool) unplace(project string, h *poolHost) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.placed[project] == h {
		delete(p.placed, project)
		delete(h.projects, project)
		if len(h.projects) == 0 {
			h.idleSince = p.opts.Now()
		}
	}
}

// Deploy runs s on the host its project runs on, or on a host with room.
// See Local.Deploy.
func (p *Pool) Deploy(ctx context.Context, s Spec) (Endpoint, error) {
	if err := validateProject(s.Project); err != nil {
		return Endpoint{}, fmt.Errorf("deploying preview: %w", err)
	}
	h, fresh, err := p.place(ctx, s.Project)
	if err != nil {
		return Endpoint{}, err
	}
	ep, err := h.run.Deploy(ctx, s)
	if err != nil && fresh {
		p.unplace(s.Project, h)
	}
	return ep, err
}

// Retire removes the project's other revisions from its host. See
// Local.Retire.
func (p *Pool) Retire(ctx context.Context, project, keepRevision string) error {
	p.mu.Lock()
	h := p.placed[project]
	p.mu.Unlock()
	if h == nil {
		return fmt.Errorf("retiring old revisions of %s: it runs on no host", project)
	}
	return h.run.Retire(ctx, project, keepRevision)
}

// Teardown removes the project from its host; a project byop does not know
// the host of is removed from every host. See Local.Teardown.
func (p *Pool) Teardown(ctx context.Context, project string) error {
	if err := validateProject(project); err != nil {
		return fmt.Errorf("tearing down preview: %w", err)
	}
	p.sync(ctx)
	p.mu.Lock()
	h := p.placed[project]
	targets := []*poolHost{h}
	if h == nil {
		targets = slices.Clone(p.hosts)
	}
	p.mu.Unlock()
	var errs []error
	for _, t := range targets {
		if err := t.run.Teardown(ctx, project); err != nil {
			errs = append(errs, err)
			continue
		}
		p.unplace(project, t)
	}
	return errors.Join(errs...)
}

// List returns what runs on every host. A host that cannot be reached is
// logged and left out.
func (p *Pool) List(ctx context.Context) ([]Running, error) {
	p.sync(ctx)
	p.mu.Lock()
	hosts := slices.Clone(p.hosts)
	p.mu.Unlock()
	var out []Running
	for _, h := range hosts {
		rs, err := p.listHost(ctx, h)
		if err != nil {
			p.log.Warn("listing previews on host", "host", h.host.Name, "err", err)
			continue
		}
		out = append(out, rs...)
	}
	slices.SortFunc(out, func(a, b Running) int {
		if c := strings.Compare(a.Project, b.Project); c != 0 {
			return c
		}
		return strings.Compare(a.Revision, b.Revision)
	})
	return out, nil
}

// HostOf returns the name of the host project is placed on.
func (p *Pool) HostOf(project string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.placed[project]
	if !ok {
		return "", false
	}
	return h.host.Name, true
}

// Reap deletes the provisioned hosts that have run no preview for the idle
// timeout, and returns their names. Configured hosts are never deleted.
func (p *Pool) Reap(ctx context.Context) ([]string, error) {
	if p.opts.Provisioner == nil {
		return nil, nil
	}
	p.provM.Lock()
	defer p.provM.Unlock()
	now := p.opts.Now()
	p.mu.Lock()
	var idle []*poolHost
	for _, h := range p.hosts {
		if h.provisioned && !h.leaving && h.synced && len(h.projects) == 0 && now.Sub(h.idleSince) >= p.opts.IdleTimeout {
			h.leaving = true
			idle = append(idle, h)
		}
	}
	p.mu.Unlock()

	var gone []string
	var errs []error
	for _, h := range idle {
		// Look once more: a preview started by hand, or one byop lost
		// track of, keeps the host.
		rs, err := h.run.List(ctx)
		if err == nil && len(rs) > 0 {
			p.mu.Lock()
			h.leaving = false
			p.mu.Unlock()
			p.listHost(ctx, h)
			continue
		}
		if err := p.opts.Provisioner.Deprovision(ctx, h.host); err != nil {
			p.mu.Lock()
			h.leaving = false
			p.mu.Unlock()
			errs = append(errs, fmt.Errorf("deleting idle host %s: %w", h.host.Name, err))
			continue
		}
		h.run.Close()
		p.mu.Lock()
		p.hosts = slices.DeleteFunc(p.hosts, func(x *poolHost) bool { return x == h })
		p.mu.Unlock()
		p.log.Info("deleted idle host", "host", h.host.Name, "idle", now.Sub(h.idleSince).Round(time.Second))
		gone = append(gone, h.host.Name)
	}
	return gone, errors.Join(errs...)
}

// Run reaps idle hosts every interval until ctx ends.
func (p *Pool) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := p.Reap(ctx); err != nil {
				p.log.Warn("reaping idle hosts", "err", err)
			}
		}
	}
}

// Close closes the connections to every host.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, h := range p.hosts {
		errs = append(errs, h.run.Close())
	}
	return errors.Join(errs...)
}
