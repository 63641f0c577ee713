package deployers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
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
	dir string
	e   *engine
}

// localSettings are what LocalOptions set.
type localSettings struct {
	log           *slog.Logger
	healthTimeout time.Duration
	composeCmd    []string
	run           runner
}

// LocalOption configures a Local.
type LocalOption func(*localSettings)

// WithLogger sets the logger (default: discard).
func WithLogger(log *slog.Logger) LocalOption { return func(l *localSettings) { l.log = log } }

// WithHealthTimeout sets how long Deploy waits for a new revision to answer
// HTTP before it gives up and removes it again.
func WithHealthTimeout(d time.Duration) LocalOption {
	return func(l *localSettings) { l.healthTimeout = d }
}

// WithComposeCommand sets the compose command instead of detecting it,
// e.g. WithComposeCommand("docker-compose") or ("docker", "compose").
func WithComposeCommand(argv ...string) LocalOption {
	return func(l *localSettings) { l.composeCmd = slices.Clone(argv) }
}

// withRunner replaces how commands are run (tests record them).
func withRunner(r runner) LocalOption { return func(l *localSettings) { l.run = r } }

// NewLocal returns a Local that keeps its compose files in dir (created if
// missing).
func NewLocal(dir string, opts ...LocalOption) (*Local, error) {
	if dir == "" {
		return nil, errors.New("creating local deployer: no directory for compose files")
	}
	set := localSettings{
		log:           slog.New(slog.DiscardHandler),
		healthTimeout: DefaultHealthTimeout,
		run:           execRunner{},
	}
	for _, o := range opts {
		o(&set)
	}
	if set.healthTimeout <= 0 {
		return nil, fmt.Errorf("creating local deployer: health timeout %v is not positive", set.healthTimeout)
	}
	if set.composeCmd != nil && len(set.composeCmd) == 0 {
		return nil, errors.New("creating local deployer: empty compose command")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating compose directory: %w", err)
	}
	docker := dockerCLI{run: set.run, bin: "docker"}
	return &Local{dir: dir, e: &engine{
		log:           set.log,
		healthTimeout: set.healthTimeout,
		run:           set.run,
		docker:        docker,
		files:         localFiles{dir: dir},
		images:        pullMissing{docker: docker},
		bindIP:        loopback,
		http:          probeClient(nil),
		composeCmd:    set.composeCmd,
		composeOK:     len(set.composeCmd) > 0,
	}}, nil
}

// Deploy starts s.Revision beside any revision of s.Project that already
// runs, and returns its endpoint once the app answers HTTP. It does not stop
// older revisions: switch the router, then call Retire. If the new revision
// never answers, it is removed again and the old ones keep serving.
// Deploying a revision that already runs starts nothing and returns its
// endpoint.
func (l *Local) Deploy(ctx context.Context, s Spec) (Endpoint, error) { return l.e.deploy(ctx, s) }

// Retire removes every container of project whose revision is not
// keepRevision, at once (no stop timeout), and their services.
func (l *Local) Retire(ctx context.Context, project, keepRevision string) error {
	return l.e.retire(ctx, project, keepRevision)
}

// Teardown removes the project's containers, networks and volumes and its
// compose file. Tearing down what is not there is not an error.
func (l *Local) Teardown(ctx context.Context, project string) error {
	return l.e.teardown(ctx, project)
}

// List returns the revisions of byop's previews that run now, with their
// endpoints, sorted by project and revision. Containers whose port is not
// published (e.g. restarting) are left out.
func (l *Local) List(ctx context.Context) ([]Running, error) { return l.e.list(ctx) }

func (l *Local) composePath(project string) string { return l.e.files.path(project) }

func (l *Local) editCompose(project string, edit func(composeFile) composeFile) (string, error) {
	return l.e.editCompose(context.Background(), project, edit)
}
