package webhook

import (
	"fmt"
	"net/http"
	"strconv"

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

// route decides what a parsed delivery asks for. It is pure: no I/O.
func route(event string, parsed any, opts Options) decision {
	switch ev := parsed.(type) {
	case *github.PingEvent:
		return decision{why: "pong", pong: true}
	case *github.PullRequestEvent:
		return routePullRequest(ev, opts)
	default:
		return ignore("", "event "+event+" needs nothing from byop")
	}
}

func routePullRequest(ev *github.PullRequestEvent, opts Options) decision {
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
	case "opened", "reopened", "synchronize":
		p := tasks.DeployPayload{
			Owner: owner, Repo: name, PR: number,
			SHA: pr.GetHead().GetSHA(),
			// The base repository serves every pull request's head under
			// this ref, forks included.
			Ref:       "refs/pull/" + strconv.Itoa(number) + "/head",
			CloneURL:  repo.GetCloneURL(),
			SourceURL: repo.GetHTMLURL(),
		}
		return decision{
			repo: full,
			typ:  tasks.TypePreviewDeploy,
			build: func(delivery string) (*asynq.Task, error) {
				return tasks.NewPreviewDeployTask(p, delivery, opts.BuildTimeout)
			},
		}
	case "closed":
		p := tasks.TeardownPayload{Owner: owner, Repo: name, PR: number}
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
