// Package pipeline runs byop's tasks: it turns one pull-request commit
// into a live preview (fetch, build, push, verify, deploy, switch, report),
// carries out slash commands, builds default-branch pushes, and removes a
// preview when its pull request closes.
package pipeline

import (
	"context"
	"log/slog"
	"net/url"
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
	// reporter is GitHub. It is nil when byop has no token: the store still
	// records every status and comment for byop's own pages, and what needs
	// GitHub's answer (permissions, slash commands) is refused.
	reporter interface {
		SetStatus(ctx context.Context, owner, repo string, s forge.Status) error
		UpsertComment(ctx context.Context, owner, repo string, pr int, knownID int64, body string) (int64, error)
		Reply(ctx context.Context, owner, repo string, pr int, body string) (int64, error)
		React(ctx context.Context, owner, repo string, commentID int64, content string) error
		Permission(ctx context.Context, owner, repo, user string) (string, error)
		PullRequest(ctx context.Context, owner, repo string, number int) (forge.PullRequest, error)
	}
	// tokens gives the token byop fetches a repository with.
	tokens interface {
		Token(ctx context.Context, owner, repo string) (config.Secret, error)
	}
)

var (
	_ sourceFetcher = (*gitsrc.Fetcher)(nil)
	_ imageBuilder  = (*buildkit.Client)(nil)
	_ imageVerifier = (*registry.Client)(nil)
	_ previewRunner = (*deployers.Local)(nil)
	_ previewRunner = (*deployers.Pool)(nil)
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
	// TrustOncePerPR lets one /ok-to-test trust every later push of the
	// pull request, instead of only the head it was given for.
	TrustOncePerPR bool
	// MaxBuilds and MaxBuildsPerRepo bound the builds running at once
	// (0: no bound). Work past them waits in line.
	MaxBuilds        int
	MaxBuildsPerRepo int
}

// Pipeline runs byop's tasks. Its exported fields are its dependencies;
// Reporter and Tokens may be nil.
type Pipeline struct {
	Source   sourceFetcher
	Builder  imageBuilder
	Images   imageVerifier
	Runner   previewRunner
	Router   previewRouter
	Store    *previews.Store
	Reporter reporter
	Tokens   tokens
	Log      *slog.Logger
	Settings Settings

	locks  keyedLock
	heads  heads
	perms  permissionCache
	builds limiter
}

// Register adds the pipeline's handlers to mux.
func (p *Pipeline) Register(mux *asynq.ServeMux) {
	mux.HandleFunc(tasks.TypePreviewDeploy, p.HandleDeploy)
	mux.HandleFunc(tasks.TypePreviewTeardown, p.HandleTeardown)
	mux.HandleFunc(tasks.TypePreviewCommand, p.HandleCommand)
	mux.HandleFunc(tasks.TypeImageBuild, p.HandleBuild)
	mux.HandleFunc(tasks.TypeInstallSync, p.HandleInstallSync)
}

// HandleInstallSync records the repositories a GitHub App installation
// added or removed; the receiver allows them from then on.
func (p *Pipeline) HandleInstallSync(ctx context.Context, t *asynq.Task) error {
	pl, err := tasks.Decode[tasks.InstallPayload](t)
	if err != nil {
		return err
	}
	if err := p.Store.SetInstalled(ctx, pl.Added, pl.Removed); err != nil {
		return err
	}
	p.Log.Info("installation changed", "added", pl.Added, "removed", pl.Removed)
	return nil
}

// report records a status and, with a token, sends it to GitHub. A report
// that cannot be sent is logged: it never fails the work it reports on.
//
// A report goes out even when the work's context has ended (a cancelled
// build still says so), bounded by reportTimeout.
func (p *Pipeline) report(ctx context.Context, key previews.Key, s forge.Status, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
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

// saveComment stores the preview's comment and sends it to GitHub, editing
// the one byop made before. The caller holds the pull request's lock.
func (p *Pipeline) saveComment(ctx context.Context, pv *previews.Preview, body string, log *slog.Logger) {
	pv.Comment = body
	if p.Reporter != nil {
		id, err := p.Reporter.UpsertComment(ctx, pv.Key.Owner, pv.Key.Repo, pv.Key.PR, pv.CommentID, body)
		if err != nil {
			log.Warn("sending PR comment to GitHub", "err", err)
		} else {
			pv.CommentID = id
		}
	}
	if err := p.Store.SavePreview(ctx, *pv); err != nil {
		log.Error("saving preview", "err", err)
	}
}

// token is what byop fetches owner/repo with; none without Tokens.
func (p *Pipeline) token(ctx context.Context, owner, repo string) (config.Secret, error) {
	if p.Tokens == nil {
		return "", nil
	}
	return p.Tokens.Token(ctx, owner, repo)
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

// taskID is the running task's asynq ID, or fallback outside asynq.
func taskID(ctx context.Context, fallback string) string {
	if id, ok := asynq.GetTaskID(ctx); ok && id != "" {
		return id
	}
	return fallback
}
