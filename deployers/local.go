package deployers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
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

// DefaultHealthTimeout is how long Deploy waits for a new revision to answer
// HTTP unless WithHealthTimeout says otherwise.
const DefaultHealthTimeout = 60 * time.Second

// pollInterval is how often Deploy asks a new revision whether it answers.
const pollInterval = 25 * time.Millisecond

// Local runs previews on this host with docker compose: one compose project
// per preview, one service per revision, each revision's port published on
// 127.0.0.1 where byop's router reaches it.
type Local struct {
	dir           string
	log           *slog.Logger
	healthTimeout time.Duration
	composeCmd    []string
	run           runner
	docker        dockerCLI
	http          *http.Client

	mu        sync.Mutex // guards composeCmd detection and compose file edits
	composeOK bool
}

// LocalOption configures a Local.
type LocalOption func(*Local)

// WithLogger sets the logger (default: discard).
func WithLogger(log *slog.Logger) LocalOption { return func(l *Local) { l.log = log } }

// WithHealthTimeout sets how long Deploy waits for a new revision to answer
// HTTP before it gives up and removes it again.
func WithHealthTimeout(d time.Duration) LocalOption {
	return func(l *Local) { l.healthTimeout = d }
}

// WithComposeCommand sets the compose command instead of detecting it,
// e.g. WithComposeCommand("docker-compose") or ("docker", "compose").
func WithComposeCommand(argv ...string) LocalOption {
	return func(l *Local) { l.composeCmd = slices.Clone(argv) }
}

// withRunner replaces how commands are run (tests record them).
func withRunner(r runner) LocalOption { return func(l *Local) { l.run = r } }

// NewLocal returns a Local that keeps its compose files in dir (created if
// missing).
func NewLocal(dir string, opts ...LocalOption) (*Local, error) {
	if dir == "" {
		return nil, errors.New("creating local deployer: no directory for compose files")
	}
	l := &Local{
		dir:           dir,
		log:           slog.New(slog.DiscardHandler),
		healthTimeout: DefaultHealthTimeout,
		run:           execRunner{},
	}
	for _, o := range opts {
		o(l)
	}
	if l.healthTimeout <= 0 {
		return nil, fmt.Errorf("creating local deployer: health timeout %v is not positive", l.healthTimeout)
	}
	if l.composeCmd != nil && len(l.composeCmd) == 0 {
		return nil, errors.New("creating local deployer: empty compose command")
	}
	l.composeOK = len(l.composeCmd) > 0
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating compose directory: %w", err)
	}
	l.docker = dockerCLI{run: l.run, bin: "docker"}
	l.http = &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		// Any HTTP response means the app is up, a redirect too.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return l, nil
}

// Deploy starts s.Revision beside any revision of s.Project that already
// runs, and returns its endpoint once the app answers HTTP. It does not stop
// older revisions: switch the router, then call Retire. If the new revision
// never answers, it is removed again and the old ones keep serving.
// Deploying a revision that already runs starts nothing and returns its
// endpoint.
func (l *Local) Deploy(ctx context.Context, s Spec) (Endpoint, error) {
	if err := s.validate(); err != nil {
		return Endpoint{}, fmt.Errorf("deploying preview: %w", err)
	}
	log := l.log.With("project", s.Project, "revision", s.Revision)

	running, err := l.docker.containers(ctx, false, LabelProject+"="+s.Project, LabelRevision+"="+s.Revision)
	if err != nil {
		return Endpoint{}, fmt.Errorf("deploying %s: %w", s.Project, err)
	}
	already := len(running) > 0
	if already {
		log.Info("revision already runs; waiting for it to answer")
	} else {
		if err := l.start(ctx, s, log); err != nil {
			l.discard(ctx, s, log)
			return Endpoint{}, fmt.Errorf("deploying %s at %s: %w", s.Project, s.Revision, err)
		}
	}

	ep, err := l.waitAnswer(ctx, s)
	if err != nil {
		// Remove what this call started; a revision that ran before is
		// removed only when it does not answer either.
		if !already || errors.Is(err, ErrNoAnswer) {
			l.discard(ctx, s, log)
		}
		return Endpoint{}, fmt.Errorf("deploying %s at %s: %w", s.Project, s.Revision, err)
	}
	log.Info("revision answers", "endpoint", ep.URL.String())
	return ep, nil
}

// start pulls and checks the image, adds the revision's service to the
// project's compose file and starts it.
func (l *Local) start(ctx context.Context, s Spec, log *slog.Logger) error {
	if err := l.ensureImage(ctx, s); err != nil {
		return err
	}
	compose, err := l.compose(ctx)
	if err != nil {
		return err
	}
	file, err := l.editCompose(s.Project, func(f composeFile) composeFile { return withRevision(f, s) })
	if err != nil {
		return err
	}
	svc := serviceName(s.Revision)
	log.Info("starting revision", "service", svc, "image", s.Image)
	args := append(slices.Clone(compose[1:]), "-p", s.Project, "-f", file, "up", "-d", "--no-deps", "--no-build", svc)
	if _, err := l.run.Run(ctx, compose[0], args...); err != nil {
		return fmt.Errorf("starting service %s: %w", svc, err)
	}
	return nil
}

// ensureImage pulls s.Image unless it is here already, and refuses it unless
// its revision label is s.Revision.
func (l *Local) ensureImage(ctx context.Context, s Spec) error {
	labels, err := l.docker.imageLabels(ctx, s.Image)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		if err := l.docker.pull(ctx, s.Image); err != nil {
			return err
		}
		if labels, err = l.docker.imageLabels(ctx, s.Image); err != nil {
			return err
		}
	}
	got, ok := labels[RevisionLabel]
	if !ok {
		return fmt.Errorf("%w: image %s has no %s label, want %q", ErrRevisionMismatch, s.Image, RevisionLabel, s.Revision)
	}
	if got != s.Revision {
		return fmt.Errorf("%w: image %s has %s=%q, want %q", ErrRevisionMismatch, s.Image, RevisionLabel, got, s.Revision)
	}
	return nil
}

// waitAnswer polls the revision until it answers HTTP, within the health
// timeout and ctx.
func (l *Local) waitAnswer(ctx context.Context, s Spec) (Endpoint, error) {
	wctx, cancel := context.WithTimeout(ctx, l.healthTimeout)
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
			if e, err := l.endpoint(wctx, s); err != nil {
				note(err)
			} else if e != nil {
				ep = e
			} else if ep == nil {
				note(fmt.Errorf("port %d is not published (is the container running?)", s.Port))
			}
		}
		if ep != nil {
			err := l.probe(wctx, ep)
			if err == nil {
				return Endpoint{URL: ep}, nil
			}
			note(err)
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return Endpoint{}, fmt.Errorf("waiting for the app to answer: %w", ctx.Err())
			}
			return Endpoint{}, fmt.Errorf("%w on port %d within %v: %w", ErrNoAnswer, s.Port, l.healthTimeout, last)
		case <-tick.C:
		}
	}
}

// endpoint returns where the running container of s's revision is
// published, or nil when there is none yet.
func (l *Local) endpoint(ctx context.Context, s Spec) (*url.URL, error) {
	cs, err := l.docker.containers(ctx, false, LabelProject+"="+s.Project, LabelRevision+"="+s.Revision)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if u := c.endpoint(s.Port); u != nil && c.State.Running {
			return u, nil
		}
	}
	return nil, nil
}

// probe reports whether anything answers HTTP at u: any status counts.
func (l *Local) probe(ctx context.Context, u *url.URL) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := l.http.Do(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// discard removes the containers of s's revision and its service, after a
// failed deploy. It runs even when ctx has ended.
func (l *Local) discard(ctx context.Context, s Spec, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	cs, err := l.docker.containers(ctx, true, LabelProject+"="+s.Project, LabelRevision+"="+s.Revision)
	for _, c := range cs {
		// What the app said is the best clue to why it did not answer.
		out, lerr := l.run.Run(ctx, l.docker.bin, "logs", "--tail", "20", "--", c.ID)
		if lerr == nil && len(out) > 0 {
			log.Warn("removing failed revision", "container", strings.TrimPrefix(c.Name, "/"),
				"state", c.State.Status, "exit_code", c.State.ExitCode, "stdout_tail", string(out))
		}
	}
	if err == nil {
		err = l.docker.remove(ctx, ids(cs))
	}
	if err != nil {
		log.Warn("removing failed revision", "err", err)
	}
	if _, err := l.editCompose(s.Project, func(f composeFile) composeFile {
		delete(f.Services, serviceName(s.Revision))
		return f
	}); err != nil {
		log.Warn("removing failed revision from compose file", "err", err)
	}
}

// Retire removes every container of project whose revision is not
// keepRevision, at once (no stop timeout), and their services.
func (l *Local) Retire(ctx context.Context, project, keepRevision string) error {
	if err := validateProject(project); err != nil {
		return fmt.Errorf("retiring old revisions: %w", err)
	}
	if err := validateRevision(keepRevision); err != nil {
		return fmt.Errorf("retiring old revisions of %s: %w", project, err)
	}
	cs, err := l.docker.containers(ctx, true, LabelProject+"="+project)
	if err != nil {
		return fmt.Errorf("retiring old revisions of %s: %w", project, err)
	}
	var old []container
	for _, c := range cs {
		if c.Config.Labels[LabelRevision] != keepRevision {
			old = append(old, c)
		}
	}
	if err := l.docker.remove(ctx, ids(old)); err != nil {
		return fmt.Errorf("retiring old revisions of %s: %w", project, err)
	}
	keep := serviceName(keepRevision)
	if _, err := l.editCompose(project, func(f composeFile) composeFile {
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
		l.log.Info("retired revision", "project", project, "revision", c.Config.Labels[LabelRevision], "container", strings.TrimPrefix(c.Name, "/"))
	}
	return nil
}

// Teardown removes the project's containers, networks and volumes and its
// compose file. Tearing down what is not there is not an error.
func (l *Local) Teardown(ctx context.Context, project string) error {
	if err := validateProject(project); err != nil {
		return fmt.Errorf("tearing down preview: %w", err)
	}
	label := LabelProject + "=" + project
	cs, err := l.docker.containers(ctx, true, label)
	if err != nil {
		return fmt.Errorf("tearing down %s: %w", project, err)
	}
	if err := l.docker.remove(ctx, ids(cs)); err != nil {
		return fmt.Errorf("tearing down %s: %w", project, err)
	}
	if err := l.docker.removeLabelled(ctx, "network", label); err != nil {
		return fmt.Errorf("tearing down %s: %w", project, err)
	}
	if err := l.docker.removeLabelled(ctx, "volume", label); err != nil {
		return fmt.Errorf("tearing down %s: %w", project, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := os.Remove(l.composePath(project)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tearing down %s: removing compose file: %w", project, err)
	}
	l.log.Info("tore down preview", "project", project, "containers", len(cs))
	return nil
}

// List returns the revisions of byop's previews that run now, with their
// endpoints, sorted by project and revision. Containers whose port is not
// published (e.g. restarting) are left out.
func (l *Local) List(ctx context.Context) ([]Running, error) {
	cs, err := l.docker.containers(ctx, false, LabelProject)
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
			l.log.Debug("listing previews: container not published", "container", c.Name)
			continue
		}
		r := Running{Project: project, Revision: labels[LabelRevision], Endpoint: Endpoint{URL: u}, Labels: map[string]string{}}
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
func (l *Local) compose(ctx context.Context) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.composeOK {
		return l.composeCmd, nil
	}
	cmd, err := detectCompose(ctx, l.run, l.docker.bin)
	if err != nil {
		return nil, err
	}
	l.log.Info("using compose command", "command", strings.Join(cmd, " "))
	l.composeCmd, l.composeOK = cmd, true
	return cmd, nil
}

func (l *Local) composePath(project string) string {
	return filepath.Join(l.dir, project+".compose.yml")
}

// editCompose reads the project's compose file (empty if missing), applies
// edit and writes the result atomically; a file left with no service is
// removed. It returns the file's path.
func (l *Local) editCompose(project string, edit func(composeFile) composeFile) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	path := l.composePath(project)
	var f composeFile
	b, err := os.ReadFile(path)
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
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("removing compose file: %w", err)
		}
		return path, nil
	}
	b, err = marshalCompose(f)
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, b); err != nil {
		return "", fmt.Errorf("writing compose file: %w", err)
	}
	return path, nil
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
