// Package pipeline runs byop's tasks: it turns one pull-request commit
// into a live preview (fetch, build, push, verify, deploy, switch, report),
// and removes the preview when the pull request closes.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/buildkit"
	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/deployers"
	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/gitsrc"
	"github.com/byop-dev/byop/previews"
	"github.com/byop-dev/byop/registry"
	"github.com/byop-dev/byop/tasks"
)

// The parts the pipeline drives, each as small as the pipeline needs it.
type (
	sourceFetcher interface {
		Fetch(ctx context.Context, s gitsrc.Spec, dir string) error
	}
	imageBuilder interface {
		Build(ctx context.Context, s buildkit.Spec) (buildkit.Result, error)
	}
	imageVerifier interface {
		Verify(ctx context.Context, ref, digest, revision string) (registry.Image, error)
	}
	previewRunner interface {
		Deploy(ctx context.Context, s deployers.Spec) (deployers.Endpoint, error)
		Retire(ctx context.Context, project, keepRevision string) error
		Teardown(ctx context.Context, project string) error
		List(ctx context.Context) ([]deployers.Running, error)
	}
	previewRouter interface {
		Set(host string, upstream *url.URL)
		Remove(host string)
	}
	// reporter tells GitHub. It is nil when byop has no token: the store
	// still records everything for byop's own pages.
	reporter interface {
		SetStatus(ctx context.Context, owner, repo string, s forge.Status) error
		UpsertComment(ctx context.Context, owner, repo string, pr int, knownID int64, body string) (int64, error)
	}
)

var (
	_ sourceFetcher = (*gitsrc.Fetcher)(nil)
	_ imageBuilder  = (*buildkit.Client)(nil)
	_ imageVerifier = (*registry.Client)(nil)
	_ previewRunner = (*deployers.Local)(nil)
	_ previewRouter = (*previews.Router)(nil)
	_ reporter      = (*forge.Client)(nil)
)

// reportTimeout bounds telling GitHub about a failure after the task's own
// context ended.
const reportTimeout = 30 * time.Second

// Status contexts byop sets on commits.
const (
	ContextBuild   = "byop/build"
	ContextPreview = "byop/preview"
)

// Settings are the parts of the configuration the pipeline reads.
type Settings struct {
	PublicURL        string
	RegistryPrefix   string
	RegistryInsecure bool
	PreviewDomain    string
	RouterPort       int
	WorkDir          string
	// Token is handed to the git fetch; nil-safe.
	Token config.Secret
}

// Pipeline runs byop's tasks. Its fields are its dependencies; Reporter may
// be nil.
type Pipeline struct {
	Source   sourceFetcher
	Builder  imageBuilder
	Images   imageVerifier
	Runner   previewRunner
	Router   previewRouter
	Store    *previews.Store
	Reporter reporter
	Log      *slog.Logger
	Settings Settings

	locks keyedLock
}

// Register adds the pipeline's handlers to mux.
func (p *Pipeline) Register(mux *asynq.ServeMux) {
	mux.HandleFunc(tasks.TypePreviewDeploy, p.HandleDeploy)
	mux.HandleFunc(tasks.TypePreviewTeardown, p.HandleTeardown)
}

// run is one deploy task in progress.
type run struct {
	p       *Pipeline
	pl      tasks.DeployPayload
	key     previews.Key
	build   previews.Build
	logURL  string
	log     *previews.BuildLog
	slog    *slog.Logger
	preview previews.Preview
	built   bool // the image is pushed and checked
}

// stepError is a failed step: what to tell the user, and whether the cause
// is theirs (a failure: retrying will not help) or byop's (an error: asynq
// retries).
type stepError struct {
	state  forge.State
	reason string
	err    error
}

func (e *stepError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func userFailure(reason string, err error) error {
	return &stepError{state: forge.StateFailure, reason: reason, err: err}
}

func byopError(reason string, err error) error {
	return &stepError{state: forge.StateError, reason: reason, err: err}
}

// HandleDeploy builds one commit of a pull request and makes it the
// preview. It is idempotent: asynq may run it again after a crash.
func (p *Pipeline) HandleDeploy(ctx context.Context, t *asynq.Task) error {
	pl, err := tasks.Decode[tasks.DeployPayload](t)
	if err != nil {
		return err
	}
	key := previews.Key{Owner: pl.Owner, Repo: pl.Repo, PR: pl.PR}
	unlock, err := p.locks.lock(ctx, key.String())
	if err != nil {
		return err
	}
	defer unlock()

	taskID, _ := asynq.GetTaskID(ctx)
	if taskID == "" {
		taskID = "deploy-" + key.String() + "-" + pl.SHA
	}
	build, err := p.Store.StartBuild(ctx, taskID, key, pl.SHA)
	if err != nil {
		return err
	}
	preview, _, err := p.Store.Preview(ctx, key)
	if err != nil {
		return err
	}
	r := &run{
		p: p, pl: pl, key: key, build: build, preview: preview,
		logURL: p.buildURL(build.ID),
		log:    p.Store.NewBuildLog(build.ID),
		slog:   p.Log.With("pr", key.String(), "sha", short(pl.SHA), "build", build.ID),
	}
	defer func() {
		if err := r.log.Close(); err != nil {
			r.slog.Warn("writing build log", "err", err)
		}
	}()

	r.slog.Info("deploy started")
	r.status(ctx, ContextBuild, forge.StatePending, "Building "+short(pl.SHA))
	r.status(ctx, ContextPreview, forge.StatePending, "Waiting for the build")
	r.comment(ctx, commentBuilding)

	err = r.pipeline(ctx)
	if err == nil {
		return nil
	}
	return r.fail(ctx, err)
}

func (r *run) pipeline(ctx context.Context) error {
	img, err := r.buildImage(ctx)
	if err != nil {
		return err
	}
	r.status(ctx, ContextBuild, forge.StateSuccess, "Built "+short(r.pl.SHA)+" as "+img.Digest[:19])
	return r.deploy(ctx, img)
}

// buildImage fetches the commit, builds it and pushes it, then reads the
// pushed manifest back: the deploy uses only what the registry holds.
func (r *run) buildImage(ctx context.Context) (registry.Image, error) {
	p, pl := r.p, r.pl
	work, err := os.MkdirTemp(p.Settings.WorkDir, "build-"+strconv.FormatInt(r.build.ID, 10)+"-")
	if err != nil {
		return registry.Image{}, byopError("byop could not make a work dir", err)
	}
	defer os.RemoveAll(work)

	r.setState(ctx, previews.Fetching)
	r.log.Line("byop: fetching " + pl.SHA + " from " + pl.CloneURL)
	src := filepath.Join(work, "src")
	if err := p.Source.Fetch(ctx, gitsrc.Spec{CloneURL: pl.CloneURL, SHA: pl.SHA, Ref: pl.Ref, Token: p.Settings.Token}, src); err != nil {
		if errors.Is(err, gitsrc.ErrCommitNotFound) {
			return registry.Image{}, userFailure("Commit "+short(pl.SHA)+" not found in the repository", err)
		}
		return registry.Image{}, byopError("Fetching "+short(pl.SHA)+" failed", err)
	}

	r.setState(ctx, previews.Building)
	repo := previews.ImageRepository(p.Settings.RegistryPrefix, pl.Owner, pl.Repo)
	ref := repo + ":" + pl.SHA
	r.log.Line("byop: building " + ref)
	labels := map[string]string{registry.RevisionLabel: pl.SHA}
	if pl.SourceURL != "" {
		labels["org.opencontainers.image.source"] = pl.SourceURL
	}
	res, err := p.Builder.Build(ctx, buildkit.Spec{
		ContextDir: src,
		Image:      ref,
		Labels:     labels,
		Insecure:   p.Settings.RegistryInsecure,
		Log:        r.log.Line,
	})
	if err != nil {
		var be *buildkit.BuildError
		switch {
		case errors.As(err, &be):
			return registry.Image{}, userFailure("Build failed: "+be.Error(), err)
		case errors.Is(err, buildkit.ErrNoDockerfile):
			return registry.Image{}, userFailure("No Dockerfile in the repository", err)
		}
		return registry.Image{}, byopError("Build of "+short(pl.SHA)+" could not run", err)
	}

	r.setState(ctx, previews.Pushing)
	img, err := p.Images.Verify(ctx, ref, res.Digest, pl.SHA)
	if err != nil {
		return registry.Image{}, byopError("Pushed image does not check out", err)
	}
	if err := p.Store.SetBuildImage(ctx, r.build.ID, img.Ref, img.Digest); err != nil {
		return registry.Image{}, byopError("byop could not record the image", err)
	}
	r.built = true
	r.log.Line("byop: pushed " + img.Ref)
	return img, nil
}

// deploy runs the image beside the current preview, switches the router to
// it once it answers, then retires the old one.
func (r *run) deploy(ctx context.Context, img registry.Image) error {
	p, pl, key := r.p, r.pl, r.key
	r.setState(ctx, previews.Deploying)
	r.status(ctx, ContextPreview, forge.StatePending, "Deploying "+short(pl.SHA))
	port := 80
	if len(img.Ports) > 0 {
		port = img.Ports[0]
	}
	project := key.Project()
	r.log.Line("byop: deploying " + img.Ref + " as " + project + " (port " + strconv.Itoa(port) + ")")
	ep, err := p.Runner.Deploy(ctx, deployers.Spec{
		Project:  project,
		Image:    img.Ref,
		Revision: pl.SHA,
		Port:     port,
		Labels: map[string]string{
			"byop.repo": key.FullName(),
			"byop.pr":   strconv.Itoa(key.PR),
			"byop.sha":  pl.SHA,
		},
	})
	if err != nil {
		if errors.Is(err, deployers.ErrNoAnswer) || errors.Is(err, deployers.ErrRevisionMismatch) {
			return userFailure("Preview did not start", err)
		}
		return byopError("Deploying "+short(pl.SHA)+" failed", err)
	}
	host := key.Host(p.Settings.PreviewDomain)
	p.Router.Set(host, ep.URL)
	r.log.Line("byop: " + host + " now serves " + short(pl.SHA))
	if err := p.Runner.Retire(ctx, project, pl.SHA); err != nil {
		// The new preview serves; an old container left over is not the
		// user's problem, and the next deploy or teardown retires it.
		r.slog.Warn("retiring old revisions", "err", err)
	}

	r.preview.SHA = pl.SHA
	r.preview.State = previews.Running
	r.preview.URL = key.URL(p.Settings.PreviewDomain, p.Settings.RouterPort)
	r.preview.Upstream = ep.URL.String()
	r.preview.BuildID = r.build.ID
	r.setState(ctx, previews.Running)
	r.status(ctx, ContextPreview, forge.StateSuccess, "Preview of "+short(pl.SHA)+" is live at "+r.preview.URL)
	r.comment(ctx, commentRunning)
	r.slog.Info("preview running", "url", r.preview.URL, "image", img.Ref)
	return nil
}

// fail reports a failed run. The previous preview, if any, keeps serving.
func (r *run) fail(ctx context.Context, err error) error {
	var se *stepError
	if !errors.As(err, &se) {
		se = &stepError{state: forge.StateError, reason: "byop failed", err: err}
	}
	state := previews.Failed
	if ctx.Err() != nil {
		state = previews.Cancelled
		se.state = forge.StateError
		se.reason = "Cancelled: " + context.Cause(ctx).Error()
	}
	// The task's context may be done; the report must still go out.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()

	r.log.Line("byop: " + se.reason + ": " + se.err.Error())
	r.slog.Warn("deploy failed", "reason", se.reason, "err", se.err)
	if err := r.p.Store.SetBuildState(rctx, r.build.ID, state, se.reason); err != nil {
		r.slog.Error("recording failure", "err", err)
	}
	r.build.State, r.build.Reason = state, se.reason

	if !r.built {
		r.status(rctx, ContextBuild, se.state, se.reason)
	}
	previewMsg := "Not deployed: " + se.reason
	if r.preview.State == previews.Running {
		previewMsg = "Not deployed (" + se.reason + "); " + short(r.preview.SHA) + " still serving"
	}
	r.status(rctx, ContextPreview, se.state, previewMsg)
	r.comment(rctx, commentFailed)

	if se.state == forge.StateFailure {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return err
}

func (r *run) setState(ctx context.Context, s previews.State) {
	r.build.State = s
	if err := r.p.Store.SetBuildState(ctx, r.build.ID, s, ""); err != nil {
		r.slog.Warn("recording build state", "state", s, "err", err)
	}
}

func (r *run) status(ctx context.Context, context string, state forge.State, desc string) {
	r.p.report(ctx, r.key, forge.Status{SHA: r.pl.SHA, Context: context, State: state, Description: desc, TargetURL: r.logURL}, r.slog)
}

func (r *run) comment(ctx context.Context, kind commentKind) {
	body := commentBody(kind, r.p.Settings.PreviewDomain, r.pl.SHA, r.logURL, r.build, r.preview)
	r.preview.Comment = body
	r.p.upsertComment(ctx, &r.preview, r.slog)
	if err := r.p.Store.SavePreview(ctx, r.preview); err != nil {
		r.slog.Error("saving preview", "err", err)
	}
}

// report records a status and, with a token, sends it to GitHub. A report
// that cannot be sent is logged: it never fails the work it reports on.
func (p *Pipeline) report(ctx context.Context, key previews.Key, s forge.Status, log *slog.Logger) {
	s.Description = forge.Truncate(s.Description, forge.MaxDescription)
	if err := p.Store.AddReport(ctx, previews.Report{Owner: key.Owner, Repo: key.Repo, SHA: s.SHA, Context: s.Context, State: string(s.State), Description: s.Description, TargetURL: s.TargetURL}); err != nil {
		log.Error("recording status", "err", err)
	}
	if p.Reporter == nil {
		return
	}
	if err := p.Reporter.SetStatus(ctx, key.Owner, key.Repo, s); err != nil {
		log.Warn("sending status to GitHub", "context", s.Context, "state", s.State, "err", err)
	}
}

// upsertComment sends the preview's comment to GitHub, editing the one byop
// made before. The caller holds the pull request's lock.
func (p *Pipeline) upsertComment(ctx context.Context, pv *previews.Preview, log *slog.Logger) {
	if p.Reporter == nil {
		return
	}
	id, err := p.Reporter.UpsertComment(ctx, pv.Key.Owner, pv.Key.Repo, pv.Key.PR, pv.CommentID, pv.Comment)
	if err != nil {
		log.Warn("sending PR comment to GitHub", "err", err)
		return
	}
	pv.CommentID = id
}

func (p *Pipeline) buildURL(id int64) string {
	return trimSlash(p.Settings.PublicURL) + "/builds/" + strconv.FormatInt(id, 10)
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}
