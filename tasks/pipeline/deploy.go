package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/buildkit"
	"github.com/byop-dev/byop/deployers"
	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/gitsrc"
	"github.com/byop-dev/byop/previews"
	"github.com/byop-dev/byop/registry"
	"github.com/byop-dev/byop/tasks"
)

// deployOptions change how a deploy runs.
type deployOptions struct {
	noCache bool // /rebuild: build without BuildKit's cache
	reuse   bool // /redeploy: deploy the image already pushed for the head, if any
	trusted bool // a maintainer asked for it: no trust check
}

// HandleDeploy builds one commit of a pull request and makes it the
// preview. It is idempotent: asynq may run it again after a crash.
func (p *Pipeline) HandleDeploy(ctx context.Context, t *asynq.Task) error {
	pl, err := tasks.Decode[tasks.DeployPayload](t)
	if err != nil {
		return err
	}
	return p.deploy(ctx, taskID(ctx, "deploy-"+pl.SHA), pl, deployOptions{})
}

// run is one build (and, for a pull request, deploy) in progress.
type run struct {
	p       *Pipeline
	pl      tasks.DeployPayload
	key     previews.Key
	opt     deployOptions
	build   previews.Build
	logURL  string
	log     *previews.BuildLog
	slog    *slog.Logger
	preview previews.Preview
	built   bool // the image is pushed and checked
}

// deploy runs the pipeline for one head of a pull request. Newer work for
// the same pull request supersedes it; the pull request's lock keeps one
// deploy at a time.
func (p *Pipeline) deploy(ctx context.Context, id string, pl tasks.DeployPayload, opt deployOptions) error {
	key := previews.Key{Owner: pl.Owner, Repo: pl.Repo, PR: pl.PR}
	log := p.Log.With("pr", key.String(), "sha", short(pl.SHA))
	ctx, release, newer := p.heads.claim(ctx, key.String(), pl.Seq, pl.SHA)
	if newer != "" {
		p.superseded(ctx, key, pl.SHA, "", newer, log)
		return nil
	}
	defer release()

	unlock, err := p.locks.lock(ctx, key.String())
	if err != nil {
		return p.interrupted(ctx, key, pl.SHA, "", err, log)
	}
	defer unlock()
	if ctx.Err() != nil {
		// Superseded or closed while waiting for the lock.
		return p.interrupted(ctx, key, pl.SHA, "", ctx.Err(), log)
	}
	preview, _, err := p.Store.Preview(ctx, key)
	if err != nil {
		return err
	}
	if preview.Seq > pl.Seq {
		// Newer work finished before this task ran (across a restart).
		p.superseded(ctx, key, pl.SHA, "", preview.SHA, log)
		return nil
	}
	preview.Seq = pl.Seq
	if !opt.trusted {
		ok, err := p.trusted(ctx, key, pl)
		if err != nil {
			return fmt.Errorf("checking trust of %s: %w", key, err)
		}
		if !ok {
			return p.waitForApproval(ctx, key, pl, preview, log)
		}
	}

	build, err := p.Store.StartBuild(ctx, id, key, pl.SHA)
	if err != nil {
		return err
	}
	r := &run{
		p: p, pl: pl, key: key, opt: opt, build: build, preview: preview,
		logURL: p.buildURL(build.ID),
		log:    p.Store.NewBuildLog(build.ID),
		slog:   log.With("build", build.ID),
	}
	defer r.closeLog()

	r.slog.Info("deploy started")
	r.status(ctx, ContextBuild, forge.StatePending, "Building "+short(pl.SHA))
	r.status(ctx, ContextPreview, forge.StatePending, "Waiting for the build")
	r.comment(ctx, commentBuilding)

	img, err := r.image(ctx)
	if err == nil {
		r.status(ctx, ContextBuild, forge.StateSuccess, "Built "+short(pl.SHA)+" as "+short12(img.Digest))
		err = r.deploy(ctx, img)
	}
	if err != nil {
		return r.fail(ctx, err)
	}
	return nil
}

func (r *run) closeLog() {
	if err := r.log.Close(); err != nil {
		r.slog.Warn("writing build log", "err", err)
	}
}

// image returns the commit's pushed image: the one already pushed for
// /redeploy, else a fresh build.
func (r *run) image(ctx context.Context) (registry.Image, error) {
	if r.opt.reuse {
		ref, digest, ok, err := r.p.Store.PushedImage(ctx, r.pl.Owner, r.pl.Repo, r.pl.SHA)
		if err != nil {
			return registry.Image{}, byopError("byop could not read its store", err)
		}
		if ok {
			repo, _, _ := strings.Cut(ref, "@")
			img, err := r.p.Images.Verify(ctx, repo+":"+r.pl.SHA, digest, r.pl.SHA)
			if err == nil {
				r.log.Line("byop: redeploying the image already pushed: " + img.Ref)
				r.built = true
				if err := r.p.Store.SetBuildImage(ctx, r.build.ID, img.Ref, img.Digest); err != nil {
					return registry.Image{}, byopError("byop could not record the image", err)
				}
				return img, nil
			}
			r.log.Line("byop: the image pushed before is gone (" + err.Error() + "); building again")
		}
	}
	return r.buildImage(ctx)
}

// buildImage fetches the commit, builds it and pushes it, then reads the
// pushed manifest back: the deploy uses only what the registry holds.
func (r *run) buildImage(ctx context.Context) (registry.Image, error) {
	p, pl := r.p, r.pl
	release, err := p.builds.acquire(ctx, pl.Owner+"/"+pl.Repo, p.Settings.MaxBuilds, p.Settings.MaxBuildsPerRepo)
	if err != nil {
		return registry.Image{}, err
	}
	defer release()
	work, err := os.MkdirTemp(p.Settings.WorkDir, "build-"+strconv.FormatInt(r.build.ID, 10)+"-")
	if err != nil {
		return registry.Image{}, byopError("byop could not make a work dir", err)
	}
	defer os.RemoveAll(work)

	r.setState(ctx, previews.Fetching)
	r.log.Line("byop: fetching " + pl.SHA + " from " + pl.CloneURL)
	token, err := p.token(ctx, pl.Owner, pl.Repo)
	if err != nil {
		return registry.Image{}, byopError("byop has no token for "+pl.Owner+"/"+pl.Repo, err)
	}
	src := filepath.Join(work, "src")
	if err := p.Source.Fetch(ctx, gitsrc.Spec{CloneURL: pl.CloneURL, SHA: pl.SHA, Ref: pl.Ref, Token: token}, src); err != nil {
		if errors.Is(err, gitsrc.ErrCommitNotFound) {
			return registry.Image{}, userFailure("Commit "+short(pl.SHA)+" not found in the repository", err)
		}
		return registry.Image{}, byopError("Fetching "+short(pl.SHA)+" failed", err)
	}

	r.setState(ctx, previews.Building)
	ref := previews.ImageRepository(p.Settings.RegistryPrefix, pl.Owner, pl.Repo) + ":" + pl.SHA
	r.log.Line("byop: building " + ref)
	labels := map[string]string{registry.RevisionLabel: pl.SHA}
	if pl.SourceURL != "" {
		labels["org.opencontainers.image.source"] = pl.SourceURL
	}
	res, err := p.Builder.Build(ctx, buildkit.Spec{
		ContextDir: src,
		Image:      ref,
		Labels:     labels,
		NoCache:    r.opt.noCache,
		Insecure:   p.Settings.RegistryInsecure,
		Log:        r.log.Line,
	})
	if err != nil {
		var be *buildkit.BuildError
		switch {
		case ctx.Err() != nil:
			return registry.Image{}, err
		case errors.As(err, &be):
			return registry.Image{}, userFailure(capitalise(be.Error()), nil)
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
		switch {
		case ctx.Err() != nil:
			return err
		case errors.Is(err, deployers.ErrNoAnswer), errors.Is(err, deployers.ErrRevisionMismatch):
			return userFailure("Preview did not start", err)
		case errors.Is(err, deployers.ErrHostKey):
			// Retrying cannot fix a host key that is not the known one.
			return userFailure("Preview host refused: its SSH host key is not the known one", err)
		case errors.Is(err, deployers.ErrPoolFull):
			return byopError("No preview host has room", err)
		}
		return byopError("Deploying "+short(pl.SHA)+" failed", err)
	}
	host := key.Host(p.Settings.PreviewDomain)
	p.Router.Set(host, ep.URL)
	r.log.Line("byop: " + host + " now serves " + short(pl.SHA))
	// The switch is done: what follows must not be undone by a newer push
	// cancelling this one.
	ctx = context.WithoutCancel(ctx)
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

// stepError is a failed step: what to tell the user, and whether the cause
// is theirs (a failure: retrying will not help) or byop's (an error: asynq
// retries).
type stepError struct {
	state  forge.State
	reason string
	err    error // the detail, for the log; nil when the reason says it all
}

func (e *stepError) Error() string {
	if e.err == nil {
		return e.reason
	}
	return e.reason + ": " + e.err.Error()
}

func (e *stepError) Unwrap() error { return e.err }

func userFailure(reason string, err error) error {
	return &stepError{state: forge.StateFailure, reason: reason, err: err}
}

func byopError(reason string, err error) error {
	return &stepError{state: forge.StateError, reason: reason, err: err}
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
		se = &stepError{state: forge.StateError, reason: cancelReason(ctx)}
	}
	// The task's context may be done; the report must still go out.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()

	r.log.Line("byop: " + se.Error())
	r.slog.Warn("deploy failed", "err", se)
	if err := r.p.Store.SetBuildState(rctx, r.build.ID, state, se.reason); err != nil {
		r.slog.Error("recording failure", "err", err)
	}
	r.build.State, r.build.Reason = state, se.reason

	if !r.built {
		r.status(rctx, ContextBuild, se.state, se.reason)
	}
	if r.key.PR != 0 {
		msg := "Not deployed: " + se.reason
		switch {
		case state == previews.Cancelled:
			msg = se.reason
		case r.preview.State == previews.Running:
			msg = "Not deployed (" + se.reason + "); " + short(r.preview.SHA) + " still serving"
		}
		r.status(rctx, ContextPreview, se.state, msg)
		r.comment(rctx, commentFailed)
	}

	if se.state == forge.StateFailure || state == previews.Cancelled {
		return fmt.Errorf("%w: %w", se, asynq.SkipRetry)
	}
	return se
}

// cancelReason says why ctx ended: superseded, closed, or timed out.
func cancelReason(ctx context.Context) string {
	cause := context.Cause(ctx)
	var s superseded
	switch {
	case errors.As(cause, &s):
		return "Superseded by " + short(s.by)
	case errors.Is(cause, errClosed):
		return "Cancelled: the preview was removed"
	case errors.Is(cause, context.DeadlineExceeded):
		return "Timed out"
	}
	return "Cancelled: " + cause.Error()
}

// superseded reports that newer work replaced this head before it ran.
func (p *Pipeline) superseded(ctx context.Context, key previews.Key, sha, logURL, newer string, log *slog.Logger) {
	log.Info("superseded", "by", short(newer))
	ctx = context.WithoutCancel(ctx)
	for _, c := range []string{ContextBuild, ContextPreview} {
		p.report(ctx, key, forge.Status{SHA: sha, Context: c, State: forge.StateError, Description: "Superseded by " + short(newer), TargetURL: logURL}, log)
	}
}

// interrupted reports work cancelled before it started (waiting for the
// pull request's lock) and tells asynq not to retry it.
func (p *Pipeline) interrupted(ctx context.Context, key previews.Key, sha, logURL string, err error, log *slog.Logger) error {
	if ctx.Err() == nil {
		return err
	}
	reason := cancelReason(ctx)
	log.Info("cancelled before it started", "why", reason)
	rctx := context.WithoutCancel(ctx)
	for _, c := range []string{ContextBuild, ContextPreview} {
		p.report(rctx, key, forge.Status{SHA: sha, Context: c, State: forge.StateError, Description: reason, TargetURL: logURL}, log)
	}
	return fmt.Errorf("%s: %w", reason, asynq.SkipRetry)
}

func (r *run) setState(ctx context.Context, s previews.State) {
	r.build.State = s
	if err := r.p.Store.SetBuildState(ctx, r.build.ID, s, ""); err != nil {
		r.slog.Warn("recording build state", "state", s, "err", err)
	}
}

func (r *run) status(ctx context.Context, context string, state forge.State, desc string) {
	if r.key.PR == 0 && context == ContextPreview {
		return
	}
	r.p.report(ctx, r.key, forge.Status{SHA: r.pl.SHA, Context: context, State: state, Description: desc, TargetURL: r.logURL}, r.slog)
}

func (r *run) comment(ctx context.Context, kind commentKind) {
	if r.key.PR == 0 {
		return
	}
	r.p.saveComment(ctx, &r.preview, commentBody(kind, r.pl.SHA, r.logURL, r.build, r.preview), r.slog)
}

func short12(digest string) string {
	if len(digest) > 19 {
		return digest[:19]
	}
	return digest
}

func capitalise(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
