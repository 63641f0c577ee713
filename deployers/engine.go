package deployers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// engine runs previews with docker compose through a runner. Local drives
// one with commands run on this host; Remote drives one with the same
// commands run on another host over SSH. Everything that decides what runs
// (the compose file, the docker and compose argument vectors, health, the
// revision checks, retiring and teardown) lives here, once.
type engine struct {
	log           *slog.Logger
	healthTimeout time.Duration
	run           runner
	docker        dockerCLI
	files         composeFiles
	images        imageSource
	// bindIP is the host address revisions' ports are published on.
	bindIP string
	// http probes an app as seen from the host it runs on.
	http *http.Client
	// expose turns where an app answers on its host into where byop's
	// router reaches it; nil means the same place.
	expose func(ctx context.Context, hostURL *url.URL) (*url.URL, error)

	mu         sync.Mutex // guards compose command detection and compose file edits
	composeCmd []string
	composeOK  bool
}

// composeFiles keeps the compose file of each project where compose runs.
type composeFiles interface {
	// path is the file's path on the host where compose reads it.
	path(project string) string
	// read returns the file's content, or an error wrapping fs.ErrNotExist.
	read(ctx context.Context, project string) ([]byte, error)
	// write replaces the file atomically.
	write(ctx context.Context, project string, b []byte) error
	// remove deletes the file; a missing file is not an error.
	remove(ctx context.Context, project string) error
}

// imageSource brings a Spec's image to the host that runs it.
type imageSource interface {
	// ensure makes s.Image available on the host and returns the reference
	// compose is to run there.
	ensure(ctx context.Context, s Spec) (string, error)
}

// probeClient returns an HTTP client for health probes that dials with
// dial (nil: this host's network).
func probeClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if dial != nil {
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) { return dial(ctx, network, addr) }
	}
	return &http.Client{
		Transport: tr,
		// Any HTTP response means the app is up, a redirect too.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (e *engine) deploy(ctx context.Context, s Spec) (Endpoint, error) {
	if err := s.validate(); err != nil {
		return Endpoint{}, fmt.Errorf("deploying preview: %w", err)
	}
	log := e.log.With("project", s.Project, "revision", s.Revision)

	running, err := e.docker.containers(ctx, false, LabelProject+"="+s.Project, LabelRevision+"="+s.Revision)
	if err != nil {
		return Endpoint{}, fmt.Errorf("deploying %s: %w", s.Project, err)
	}
	already := len(running) > 0
	if already {
		log.Info("revision already runs; waiting for it to answer")
	} else {
		if err := e.start(ctx, s, log); err != nil {
			e.discard(ctx, s, log)
			return Endpoint{}, fmt.Errorf("deploying %s at %s: %w", s.Project, s.Revision, err)
		}
	}

	ep, err := e.waitAnswer(ctx, s)
	if err == nil {
		ep, err = e.routed(ctx, ep)
	}
	if err != nil {
		// Remove what this call started; a revision that ran before is
		// removed only when it does not answer either.
		if !already || errors.Is(err, ErrNoAnswer) || errors.Is(err, ErrRevisionMismatch) {
			e.discard(ctx, s, log)
		}
		return Endpoint{}, fmt.Errorf("deploying %s at %s: %w", s.Project, s.Revision, err)
	}
	log.Info("revision answers", "endpoint", ep.URL.String())
	return ep, nil
}

// routed turns a host endpoint into the one byop's router uses.
func (e *engine) routed(ctx context.Context, ep Endpoint) (Endpoint, error) {
	if e.expose == nil {
		return ep, nil
	}
	u, err := e.expose(ctx, ep.URL)
	if err != nil {
		return Endpoint{}, fmt.Errorf("routing to %s: %w", ep.URL, err)
	}
	return Endpoint{URL: u}, nil
}

// start brings the image to the host, checks it, adds the revision's
// service to the project's compose file and starts it.
func (e *engine) start(ctx context.Context, s Spec, log *slog.Logger) error {
	runRef, err := e.ensureImage(ctx, s)
	if err != nil {
		return err
	}
	compose, err := e.compose(ctx)
	if err != nil {
		return err
	}
	run := s
	run.Image = runRef
	file, err := e.editCompose(ctx, s.Project, func(f composeFile) composeFile { return withRevisionOn(f, run, e.bindIP) })
	if err != nil {
		return err
	}
	svc := serviceName(s.Revision)
	log.Info("starting revision", "service", svc, "image", runRef)
	args := append(slices.Clone(compose[1:]), "-p", s.Project, "-f", file, "up", "-d", "--no-deps", "--no-build", svc)
	if _, err := e.run.Run(ctx, compose[0], args...); err != nil {
		return fmt.Errorf("starting service %s: %w", svc, err)
	}
	return nil
}

// ensureImage brings s.Image to the host and refuses it unless its
// revision label is s.Revision. It returns the reference to run.
func (e *engine) ensureImage(ctx context.Context, s Spec) (string, error) {
	ref, err := e.images.ensure(ctx, s)
	if err != nil {
		return "", err
	}
	labels, err := e.docker.imageLabels(ctx, ref)
	if err != nil {
		return "", err
	}
	got, ok := labels[RevisionLabel]
	if !ok {
		return "", fmt.Errorf("%w: image %s has no %s label, want %q", ErrRevisionMismatch, s.Image, RevisionLabel, s.Revision)
	}
	if got != s.Revision {
		return "", fmt.Errorf("%w: image %s has %s=%q, want %q", ErrRevisionMismatch, s.Image, RevisionLabel, got, s.Revision)
	}
	return ref, nil
}

// pullMissing is the image source of a host that reaches the registry:
// docker pulls the image unless it is there already.
type pullMissing struct{ docker dockerCLI }

func (p pullMissing) ensure(ctx context.Context, s Spec) (string, error) {
	if _, err := p.docker.imageLabels(ctx, s.Image); err == nil {
		return s.Image, nil
	} else if ctx.Err() != nil {
		return "", err
	}
	if err := p.docker.pull(ctx, s.Image); err != nil {
		return "", err
	}
	return s.Image, nil
}

// waitAnswer polls the revision until it answers HTTP, within the health
// timeout and ctx, and checks that what answers is that revision. The
// endpoint is where the app answers on its host.
func (e *engine) waitAnswer(ctx context.Context, s Spec) (Endpoint, error) {
	wctx, cancel := context.WithTimeout(ctx, e.healthTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()

	var ep *url.URL
	var last error
	// note keeps why the app failed, not that time ran out meanwhile.
	note := func(err error) {
		if wctx.Err() == nil || last == nil {
			last = err
		}
	}
	for n := 0; ; n++ {
		// The host port can change if the container restarts: look again
		// now and then while it does not answer.
		if ep == nil || n%40 == 0 {
			if c, err := e.live(wctx, s); err != nil {
				note(err)
			} else if c != nil {
				ep = c.endpoint(s.Port)
			} else if ep == nil {
				note(fmt.Errorf("port %d is not published (is the container running?)", s.Port))
			}
		}
		if ep != nil {
			err := e.probe(wctx, ep)
			if err == nil {
				return e.confirm(wctx, s, ep)
			}
			note(err)
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return Endpoint{}, fmt.Errorf("waiting for the app to answer: %w", ctx.Err())
			}
			return Endpoint{}, fmt.Errorf("%w on port %d within %v: %w", ErrNoAnswer, s.Port, e.healthTimeout, last)
		case <-tick.C:
		}
	}
}

// live returns the running container of s's revision that publishes its
// port, or nil when there is none yet.
func (e *engine) live(ctx context.Context, s Spec) (*container, error) {
	cs, err := e.docker.containers(ctx, false, LabelProject+"="+s.Project, LabelRevision+"="+s.Revision)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.endpoint(s.Port) != nil && c.State.Running {
			return &c, nil
		}
	}
	return nil, nil
}

// confirm checks, once ep answered, that the container publishing ep is
// the one of s's revision: a port that changed hands in between is not
// taken for the new revision.
func (e *engine) confirm(ctx context.Context, s Spec, ep *url.URL) (Endpoint, error) {
	cs, err := e.docker.containers(ctx, false, LabelProject+"="+s.Project)
	if err != nil {
		return Endpoint{}, fmt.Errorf("checking the live revision: %w", err)
	}
	for _, c := range cs {
		if u := c.endpoint(s.Port); u != nil && u.String() == ep.String() && c.State.Running {
			if got := c.Config.Labels[LabelRevision]; got != s.Revision {
				return Endpoint{}, fmt.Errorf("%w: the container answering at %s runs %q, want %q", ErrRevisionMismatch, ep, got, s.Revision)
			}
			return Endpoint{URL: ep}, nil
		}
	}
	return Endpoint{}, fmt.Errorf("checking the live revision: no running container of %s publishes %s", s.Project, ep)
}

// probe reports whether anything answers HTTP at u: any status counts.
func (e *engine) probe(ctx context.Context, u *url.URL) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// discard removes the containers of s's revision and its service, after a
// failed deploy. It runs even when ctx has ended.
func (e *engine) discard(ctx context.Context, s Spec, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	cs, err := e.docker.containers(ctx, true, LabelProject+"="+s.Project, LabelRevision+"="+s.Revision)
	for _, c := range cs {
		// What the app said is the best clue to why it did not answer.
		out, lerr := e.run.Run(ctx, e.docker.bin, "logs", "--tail", "20", "--", c.ID)
		if lerr == nil && len(out) > 0 {
			log.Warn("removing failed revision", "container", strings.TrimPrefix(c.Name, "/"),
				"state", c.State.Status, "exit_code", c.State.ExitCode, "stdout_tail", string(out))
		}
	}
	if err == nil {
		err = e.docker.remove(ctx, ids(cs))
	}
	if err != nil {
		log.Warn("removing failed revision", "err", err)
	}
	if _, err := e.editCompose(ctx, s.Project, func(f composeFile) composeFile {
		delete(f.Services, serviceName(s.Revision))
		return f
	}); err != nil {
		log.Warn("removing failed revision from compose file", "err", err)
	}
}

func (e *engine) retire(ctx context.Context, project, keepRevision string) error {
	if err := validateProject(project); err != nil {
		return fmt.Errorf("retiring old revisions: %w", err)
	}
	if err := validateRevision(keepRevision); err != nil {
		return fmt.Errorf("retiring old revisions of %s: %w", project, err)
	}
	cs, err := e.docker.containers(ctx, true, LabelProject+"="+project)
	if err != nil {
		return fmt.Errorf("retiring old revisions of %s: %w", project, err)
	}
	var old []container
	for _, c := range cs {
		if c.Config.Labels[LabelRevision] != keepRevision {
			old = append(old, c)
		}
	}
	if err := e.docker.remove(ctx, ids(old)); err != nil {
		return fmt.Errorf("retiring old revisions of %s: %w", project, err)
	}
	keep := serviceName(keepRevision)
	if _, err := e.editCompose(ctx, project, func(f composeFile) composeFile {
		for name := range f.Services {
			if name != keep {
				delete(f.Services, name)
			}
		}
		return f
	}); err != nil {
		return fmt.Errorf("retiring old revisions of %s: %w", project, err)
	}
	for _, c := range old {
		e.log.Info("retired revision", "project", project, "revision", c.Config.Labels[LabelRevision], "container", strings.TrimPrefix(c.Name, "/"))
	}
	return nil
}

func (e *engine) teardown(ctx context.Context, project string) error {
	if err := validateProject(project); err != nil {
		return fmt.Errorf("tearing down preview: %w", err)
	}
	label := LabelProject + "=" + project
	cs, err := e.docker.containers(ctx, true, label)
	if err != nil {
		return fmt.Errorf("tearing down %s: %w", project, err)
	}
	if err := e.docker.remove(ctx, ids(cs)); err != nil {
		return fmt.Errorf("tearing down %s: %w", project, err)
	}
	if err := e.docker.removeLabelled(ctx, "network", label); err != nil {
		return fmt.Errorf("tearing down %s: %w", project, err)
	}
	if err := e.docker.removeLabelled(ctx, "volume", label); err != nil {
		return fmt.Errorf("tearing down %s: %w", project, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.files.remove(ctx, project); err != nil {
		return fmt.Errorf("tearing down %s: removing compose file: %w", project, err)
	}
	e.log.Info("tore down preview", "project", project, "containers", len(cs))
	return nil
}

// list returns the revisions that run, with their endpoints as byop's
// router reaches them.
func (e *engine) list(ctx context.Context) ([]Running, error) {
	cs, err := e.docker.containers(ctx, false, LabelProject)
	if err != nil {
		return nil, fmt.Errorf("listing previews: %w", err)
	}
	var out []Running
	for _, c := range cs {
		labels := c.Config.Labels
		project := labels[LabelProject]
		// Compose sets its project label itself; an image cannot fake it.
		if project == "" || labels["com.docker.compose.project"] != project {
			continue
		}
		port, err := strconv.Atoi(labels[LabelPort])
		if err != nil {
			continue
		}
		u := c.endpoint(port)
		if u == nil || !c.State.Running {
			e.log.Debug("listing previews: container not published", "container", c.Name)
			continue
		}
		ep, err := e.routed(ctx, Endpoint{URL: u})
		if err != nil {
			return nil, fmt.Errorf("listing previews: %w", err)
		}
		r := Running{Project: project, Revision: labels[LabelRevision], Endpoint: ep, Labels: map[string]string{}}
		for k, v := range labels {
			if !strings.HasPrefix(k, "com.docker.compose.") {
				r.Labels[k] = v
			}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Running) int {
		if c := strings.Compare(a.Project, b.Project); c != 0 {
			return c
		}
		return strings.Compare(a.Revision, b.Revision)
	})
	return out, nil
}

// compose returns the compose command, detecting it on first use.
func (e *engine) compose(ctx context.Context) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.composeOK {
		return e.composeCmd, nil
	}
	cmd, err := detectCompose(ctx, e.run, e.docker.bin)
	if err != nil {
		return nil, err
	}
	e.log.Info("using compose command", "command", strings.Join(cmd, " "))
	e.composeCmd, e.composeOK = cmd, true
	return cmd, nil
}

// editCompose reads the project's compose file (empty if missing), applies
// edit and writes the result atomically; a file left with no service is
// removed. It returns the file's path on the host.
func (e *engine) editCompose(ctx context.Context, project string, edit func(composeFile) composeFile) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	path := e.files.path(project)
	var f composeFile
	b, err := e.files.read(ctx, project)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", fmt.Errorf("reading compose file: %w", err)
	default:
		if f, err = unmarshalCompose(b); err != nil {
			return "", err
		}
	}
	f = edit(f)
	if len(f.Services) == 0 {
		if err := e.files.remove(ctx, project); err != nil {
			return "", fmt.Errorf("removing compose file: %w", err)
		}
		return path, nil
	}
	b, err = marshalCompose(f)
	if err != nil {
		return "", err
	}
	if err := e.files.write(ctx, project, b); err != nil {
		return "", fmt.Errorf("writing compose file: %w", err)
	}
	return path, nil
}

// localFiles keeps compose files in a directory of this host.
type localFiles struct{ dir string }

func (l localFiles) path(project string) string {
	return filepath.Join(l.dir, project+".compose.yml")
}

func (l localFiles) read(_ context.Context, project string) ([]byte, error) {
	return os.ReadFile(l.path(project))
}

func (l localFiles) write(_ context.Context, project string, b []byte) error {
	return writeFileAtomic(l.path(project), b)
}

func (l localFiles) remove(_ context.Context, project string) error {
	if err := os.Remove(l.path(project)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func ids(cs []container) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}
