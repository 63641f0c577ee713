package pipeline

import (
	"context"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/previews"
	"github.com/byop-dev/byop/tasks"
)

// HandleBuild builds and pushes the commit-pinned image of a push to a
// repository's default branch, with a byop/build status; no preview.
func (p *Pipeline) HandleBuild(ctx context.Context, t *asynq.Task) error {
	pl, err := tasks.Decode[tasks.BuildPayload](t)
	if err != nil {
		return err
	}
	key := previews.Key{Owner: pl.Owner, Repo: pl.Repo}
	build, err := p.Store.StartBuild(ctx, taskID(ctx, "build-"+pl.SHA), key, pl.SHA)
	if err != nil {
		return err
	}
	r := &run{
		p:      p,
		pl:     tasks.DeployPayload{Owner: pl.Owner, Repo: pl.Repo, SHA: pl.SHA, Ref: pl.Ref, CloneURL: pl.CloneURL, SourceURL: pl.SourceURL},
		key:    key,
		build:  build,
		logURL: p.buildURL(build.ID),
		log:    p.Store.NewBuildLog(build.ID),
		slog:   p.Log.With("repo", key.FullName(), "ref", pl.Ref, "sha", short(pl.SHA), "build", build.ID),
	}
	defer r.closeLog()
	r.status(ctx, ContextBuild, forge.StatePending, "Building "+short(pl.SHA))
	img, err := r.buildImage(ctx)
	if err != nil {
		return r.fail(ctx, err)
	}
	r.setState(ctx, previews.Pushed)
	r.status(ctx, ContextBuild, forge.StateSuccess, "Built and pushed "+short(pl.SHA)+" as "+short12(img.Digest))
	r.slog.Info("image pushed", "image", img.Ref)
	return nil
}
