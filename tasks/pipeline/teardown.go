package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/deployers"
	"github.com/byop-dev/byop/previews"
	"github.com/byop-dev/byop/tasks"
)

// HandleTeardown removes a pull request's preview: its containers, networks
// and volumes, its route, and says so in the comment. Work in flight for
// the pull request is cancelled first. Tearing down what is already gone is
// fine.
func (p *Pipeline) HandleTeardown(ctx context.Context, t *asynq.Task) error {
	pl, err := tasks.Decode[tasks.TeardownPayload](t)
	if err != nil {
		return err
	}
	key := previews.Key{Owner: pl.Owner, Repo: pl.Repo, PR: pl.PR}
	return p.teardown(ctx, key, pl.Seq, commentClosed, p.Log.With("pr", key.String()))
}

func (p *Pipeline) teardown(ctx context.Context, key previews.Key, seq int64, kind commentKind, log *slog.Logger) error {
	if seq == 0 {
		seq = time.Now().UnixNano()
	}
	p.heads.end(key.String(), seq, errClosed)
	unlock, err := p.locks.lock(ctx, key.String())
	if err != nil {
		return err
	}
	defer unlock()

	p.Router.Remove(key.Host(p.Settings.PreviewDomain))
	if err := p.Runner.Teardown(ctx, key.Project()); err != nil {
		return fmt.Errorf("tearing down %s: %w", key, err)
	}
	pv, known, err := p.Store.Preview(ctx, key)
	if err != nil {
		return err
	}
	pv.State = previews.Closed
	pv.Upstream = ""
	pv.Seq = max(pv.Seq, seq)
	body := commentBody(kind, pv.SHA, "", previews.Build{}, pv)
	if known {
		p.saveComment(ctx, &pv, body, log)
	} else if err := p.Store.SavePreview(ctx, pv); err != nil {
		return err
	}
	log.Info("preview removed")
	return nil
}

// RestoreRoutes routes every preview that still runs, after byop restarts.
func (p *Pipeline) RestoreRoutes(ctx context.Context) error {
	running, err := p.Runner.List(ctx)
	if err != nil {
		return fmt.Errorf("listing running previews: %w", err)
	}
	type rev struct{ project, sha string }
	live := make(map[rev]deployers.Endpoint, len(running))
	for _, r := range running {
		if r.Endpoint.URL != nil {
			live[rev{r.Project, r.Revision}] = r.Endpoint
		}
	}
	all, err := p.Store.Previews(ctx)
	if err != nil {
		return err
	}
	for _, pv := range all {
		if ep, ok := live[rev{pv.Key.Project(), pv.SHA}]; ok && pv.State == previews.Running {
			p.Router.Set(pv.Key.Host(p.Settings.PreviewDomain), ep.URL)
		}
	}
	return nil
}
