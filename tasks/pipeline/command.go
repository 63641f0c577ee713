package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/previews"
	"github.com/byop-dev/byop/tasks"
)

// Reactions on the comment that gave a command.
const (
	reactTaken   = "eyes"
	reactDone    = "rocket"
	reactRefused = "confused"
)

// helpText lists the commands and who may use them.
const helpText = "byop obeys these commands, each alone at the start of a line of a pull-request comment (`/byop <command>` works too):\n\n" +
	"| command | effect |\n|---|---|\n" +
	"| `/redeploy` | deploy the current head again from its image (built only if it is missing) |\n" +
	"| `/rebuild` | build the current head again without cache, then deploy it |\n" +
	"| `/destroy` | remove the preview; it comes back on the next push or `/redeploy` |\n" +
	"| `/ok-to-test` | trust the current head of a pull request from a fork or an outside contributor |\n" +
	"| `/help` | this list |\n\n" +
	"Commands are taken from people with write, maintain or admin permission on the repository; `/help` from anyone."

// HandleCommand carries out a slash command from a pull-request comment:
// 👀 when taken, 🚀 when done, 😕 with one reply saying why when refused or
// failed.
func (p *Pipeline) HandleCommand(ctx context.Context, t *asynq.Task) error {
	pl, err := tasks.Decode[tasks.CommandPayload](t)
	if err != nil {
		return err
	}
	key := previews.Key{Owner: pl.Owner, Repo: pl.Repo, PR: pl.PR}
	log := p.Log.With("pr", key.String(), "command", pl.Command, "user", pl.User)
	if p.Reporter == nil {
		log.Warn("slash command ignored: byop has no GitHub token to check who gave it")
		return nil
	}
	c := &commandRun{p: p, pl: pl, key: key, log: log}
	c.react(ctx, reactTaken)

	if pl.Command == "help" {
		text := helpText
		if pl.Unknown != "" {
			text = "byop does not know `" + pl.Unknown + "`.\n\n" + helpText
		}
		c.reply(ctx, text)
		c.react(ctx, reactDone)
		return nil
	}
	perm, err := p.permission(ctx, pl.Owner, pl.Repo, pl.User)
	if err != nil {
		c.refuse(ctx, "byop could not check your permission on "+key.FullName()+"; try again later.")
		return fmt.Errorf("permission of %s: %w", pl.User, err)
	}
	if !canWrite(perm) {
		c.refuse(ctx, fmt.Sprintf("`/%s` needs write permission on %s; you have %s.", pl.Command, key.FullName(), perm))
		return nil
	}
	pr, err := p.Reporter.PullRequest(ctx, pl.Owner, pl.Repo, pl.PR)
	if err != nil {
		c.refuse(ctx, "byop could not read this pull request; try again later.")
		return fmt.Errorf("reading %s: %w", key, err)
	}
	if pr.State != "open" {
		c.refuse(ctx, fmt.Sprintf("This pull request is %s: `/%s` works on open pull requests only.", pr.State, pl.Command))
		return nil
	}
	head := tasks.DeployPayload{
		Owner: pl.Owner, Repo: pl.Repo, PR: pl.PR, SHA: pr.HeadSHA,
		Ref:      fmt.Sprintf("refs/pull/%d/head", pl.PR),
		CloneURL: pl.CloneURL, SourceURL: pl.SourceURL,
		HeadRepo: pr.HeadRepo, Author: pr.Author, Seq: pl.Seq,
	}
	id := taskID(ctx, fmt.Sprintf("command-%d", pl.CommentID))

	switch pl.Command {
	case "destroy":
		err = p.teardown(ctx, key, pl.Seq, commentDestroyed, log)
	case "ok-to-test":
		if err = p.Store.Approve(ctx, key, pr.HeadSHA, pl.User); err == nil {
			err = p.deploy(ctx, id, head, deployOptions{trusted: true})
		}
	case "redeploy":
		err = p.deploy(ctx, id, head, deployOptions{reuse: true, trusted: true})
	case "rebuild":
		err = p.deploy(ctx, id, head, deployOptions{noCache: true, trusted: true})
	default:
		c.refuse(ctx, "byop does not know `/"+pl.Command+"`.")
		return nil
	}
	if err != nil {
		c.refuse(context.WithoutCancel(ctx), fmt.Sprintf("`/%s` failed: %s", pl.Command, userMessage(err)))
		return err
	}
	if pl.Command != "destroy" && p.lastBuildFailed(ctx, key, head.SHA) {
		c.refuse(ctx, fmt.Sprintf("`/%s` did not bring the preview up: see the build page.", pl.Command))
		return nil
	}
	c.react(ctx, reactDone)
	return nil
}

// lastBuildFailed tells whether the newest build of sha for the pull
// request ended without a running preview (a superseded or untrusted run
// returns no error but did not deploy either).
func (p *Pipeline) lastBuildFailed(ctx context.Context, key previews.Key, sha string) bool {
	pv, _, err := p.Store.Preview(ctx, key)
	return err != nil || pv.SHA != sha || pv.State != previews.Running
}

// userMessage is the part of an error fit for a PR reply.
func userMessage(err error) string {
	var se *stepError
	if errors.As(err, &se) {
		return se.reason
	}
	if errors.Is(err, asynq.SkipRetry) {
		msg, _, _ := strings.Cut(err.Error(), ": "+asynq.SkipRetry.Error())
		return msg
	}
	return "byop failed; see its log"
}

// commandRun answers one command on its comment.
type commandRun struct {
	p   *Pipeline
	pl  tasks.CommandPayload
	key previews.Key
	log *slog.Logger
}

func (c *commandRun) react(ctx context.Context, content string) {
	if err := c.p.Reporter.React(ctx, c.pl.Owner, c.pl.Repo, c.pl.CommentID, content); err != nil {
		c.log.Warn("reacting to a command", "reaction", content, "err", err)
	}
}

func (c *commandRun) reply(ctx context.Context, body string) {
	if _, err := c.p.Reporter.Reply(ctx, c.pl.Owner, c.pl.Repo, c.pl.PR, "@"+c.pl.User+" "+body); err != nil {
		c.log.Warn("replying to a command", "err", err)
	}
}

// refuse reacts 😕 and replies once with why.
func (c *commandRun) refuse(ctx context.Context, why string) {
	c.log.Info("command refused or failed", "why", why)
	c.react(ctx, reactRefused)
	c.reply(ctx, why)
}
