package webhook

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/go-github/v62/github"
	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/tasks"
)

// decision is what a delivery asks of byop: a task to queue, or why nothing.
type decision struct {
	repo  string
	typ   string                                     // the task type, when there is one
	build func(delivery string) (*asynq.Task, error) // makes the task, with the delivery as its ID
	why   string
	pong  bool
}

// code is the HTTP answer to a delivery that queues nothing.
func (d decision) code() int {
	if d.pong {
		return http.StatusOK
	}
	return http.StatusAccepted
}

func ignore(repo, why string) decision { return decision{repo: repo, why: "ignored: " + why} }

// route decides what a parsed delivery, received at seq (nanoseconds),
// asks for. It is pure: no I/O.
func route(event string, parsed any, seq int64, opts Options) decision {
	switch ev := parsed.(type) {
	case *github.PingEvent:
		return decision{why: "pong", pong: true}
	case *github.PullRequestEvent:
		return routePullRequest(ev, seq, opts)
	case *github.IssueCommentEvent:
		return routeComment(ev, seq, opts)
	case *github.PushEvent:
		return routePush(ev, opts)
	case *github.InstallationEvent:
		return routeInstallation(ev.GetAction(), ev.Repositories, nil)
	case *github.InstallationRepositoriesEvent:
		return routeInstallation(ev.GetAction(), ev.RepositoriesAdded, ev.RepositoriesRemoved)
	default:
		return ignore("", "event "+event+" needs nothing from byop")
	}
}

func routePullRequest(ev *github.PullRequestEvent, seq int64, opts Options) decision {
	repo := ev.GetRepo()
	full := repo.GetFullName()
	if !opts.Allow(full) {
		return ignore(full, "repository "+full+" is not configured")
	}
	pr := ev.GetPullRequest()
	owner, name, number := repo.GetOwner().GetLogin(), repo.GetName(), ev.GetNumber()
	if number == 0 {
		number = pr.GetNumber()
	}
	switch action := ev.GetAction(); action {
	case "opened", "reopened", "synchronize", "ready_for_review":
		if pr.GetDraft() && !opts.AllowDrafts {
			return ignore(full, "draft pull requests get a preview once ready for review")
		}
		p := tasks.DeployPayload{
			Owner: owner, Repo: name, PR: number,
			SHA: pr.GetHead().GetSHA(),
			// The base repository serves every pull request's head under
			// this ref, forks included.
			Ref:       "refs/pull/" + strconv.Itoa(number) + "/head",
			CloneURL:  repo.GetCloneURL(),
			SourceURL: repo.GetHTMLURL(),
			HeadRepo:  pr.GetHead().GetRepo().GetFullName(),
			Author:    pr.GetUser().GetLogin(),
			Seq:       seq,
		}
		return decision{
			repo: full,
			typ:  tasks.TypePreviewDeploy,
			build: func(delivery string) (*asynq.Task, error) {
				return tasks.NewPreviewDeployTask(p, delivery, opts.BuildTimeout)
			},
		}
	case "closed":
		p := tasks.TeardownPayload{Owner: owner, Repo: name, PR: number, Seq: seq}
		return decision{
			repo: full,
			typ:  tasks.TypePreviewTeardown,
			build: func(delivery string) (*asynq.Task, error) {
				return tasks.NewPreviewTeardownTask(p, delivery)
			},
		}
	default:
		return ignore(full, fmt.Sprintf("pull_request %s needs nothing from byop", action))
	}
}

func routeComment(ev *github.IssueCommentEvent, seq int64, opts Options) decision {
	repo := ev.GetRepo()
	full := repo.GetFullName()
	switch {
	case !opts.Allow(full):
		return ignore(full, "repository "+full+" is not configured")
	case ev.GetAction() != "created":
		return ignore(full, "only new comments carry commands")
	case !ev.GetIssue().IsPullRequest():
		return ignore(full, "comment on an issue, not a pull request")
	case ev.GetComment().GetUser().GetType() == "Bot" || strings.EqualFold(ev.GetComment().GetUser().GetLogin(), opts.BotLogin):
		return ignore(full, "comment by a bot")
	}
	cmd, ok := ParseComment(ev.GetComment().GetBody())
	if !ok {
		return ignore(full, "no command in the comment")
	}
	p := tasks.CommandPayload{
		Owner: repo.GetOwner().GetLogin(), Repo: repo.GetName(), PR: ev.GetIssue().GetNumber(),
		CommentID: ev.GetComment().GetID(), User: ev.GetComment().GetUser().GetLogin(),
		Command: cmd.Name, Unknown: cmd.Unknown,
		CloneURL: repo.GetCloneURL(), SourceURL: repo.GetHTMLURL(), Seq: seq,
	}
	return decision{repo: full, typ: tasks.TypePreviewCommand, build: func(delivery string) (*asynq.Task, error) {
		return tasks.NewPreviewCommandTask(p, delivery, opts.BuildTimeout)
	}}
}

// zeroSHA is a push's "after" when it deletes the ref.
const zeroSHA = "0000000000000000000000000000000000000000"

func routePush(ev *github.PushEvent, opts Options) decision {
	repo := ev.GetRepo()
	full := repo.GetFullName()
	switch {
	case !opts.Allow(full):
		return ignore(full, "repository "+full+" is not configured")
	case ev.GetDeleted() || ev.GetAfter() == zeroSHA:
		return ignore(full, "the push deletes "+ev.GetRef())
	case ev.GetRef() != "refs/heads/"+repo.GetDefaultBranch():
		return ignore(full, "push to "+ev.GetRef()+", not the default branch")
	}
	p := tasks.BuildPayload{
		Owner: repo.GetOwner().GetLogin(), Repo: repo.GetName(), SHA: ev.GetAfter(), Ref: ev.GetRef(),
		CloneURL: repo.GetCloneURL(), SourceURL: repo.GetHTMLURL(),
	}
	if p.Owner == "" {
		p.Owner = repo.GetOwner().GetName()
	}
	return decision{repo: full, typ: tasks.TypeImageBuild, build: func(delivery string) (*asynq.Task, error) {
		return tasks.NewImageBuildTask(p, delivery, opts.BuildTimeout)
	}}
}

func routeInstallation(action string, added, removed []*github.Repository) decision {
	names := func(rs []*github.Repository) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.GetFullName())
		}
		return out
	}
	var p tasks.InstallPayload
	switch action {
	case "created", "unsuspend", "added":
		p.Added, p.Removed = names(added), names(removed)
	case "deleted", "suspend":
		p.Removed = names(added)
	case "removed":
		p.Removed = names(removed)
	default:
		return ignore("", "installation "+action+" changes no repository")
	}
	if len(p.Added)+len(p.Removed) == 0 {
		return ignore("", "installation "+action+" names no repository")
	}
	return decision{typ: tasks.TypeInstallSync, build: func(delivery string) (*asynq.Task, error) {
		return tasks.NewInstallSyncTask(p, delivery)
	}}
}
