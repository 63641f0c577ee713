// Package tasks names byop's asynq tasks and builds and reads their
// payloads. It is what the webhook receiver and the worker share, and it
// imports nothing of the pipeline: the handlers live in tasks/pipeline.
package tasks

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/hibiken/asynq"
)

// Task types, domain:action.
const (
	TypePreviewDeploy   = "preview:deploy"
	TypePreviewTeardown = "preview:teardown"
	TypePreviewCommand  = "preview:command"
	TypeImageBuild      = "image:build"
	TypeInstallSync     = "installation:sync"
)

// Queues. Teardown has its own queue of higher priority, so that closing a
// pull request frees its preview before anything else runs.
const (
	QueueDefault  = "default"
	QueueTeardown = "teardown"
)

// Queues maps each queue to its priority, for asynq.Config.Queues.
func Queues() map[string]int { return map[string]int{QueueTeardown: 6, QueueDefault: 3} }

// Retention keeps a finished task's ID in Redis this long, so that GitHub
// redelivering the same delivery (possible for 3 days) is not run twice.
const Retention = 72 * time.Hour

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// DeployPayload asks for one commit of a pull request to be built and
// deployed as its preview.
type DeployPayload struct {
	Owner     string `json:"owner"`
	Repo      string `json:"repo"`
	PR        int    `json:"pr"`
	SHA       string `json:"sha"`
	Ref       string `json:"ref,omitempty"`
	CloneURL  string `json:"clone_url"`
	SourceURL string `json:"source_url,omitempty"`
	// HeadRepo is the "owner/name" the head commit comes from: a fork's
	// for a pull request from a fork.
	HeadRepo string `json:"head_repo,omitempty"`
	// Author is the login of the pull request's author.
	Author string `json:"author,omitempty"`
	// Seq orders the work asked for one pull request: the time the
	// delivery arrived, in nanoseconds. A deploy older than one already
	// seen for the same pull request is superseded.
	Seq int64 `json:"seq"`
}

// Validate reports a payload the pipeline cannot act on.
func (p DeployPayload) Validate() error {
	switch {
	case p.Owner == "" || p.Repo == "":
		return fmt.Errorf("no repository")
	case p.PR <= 0:
		return fmt.Errorf("pull request number %d", p.PR)
	case !shaRE.MatchString(p.SHA):
		return fmt.Errorf("head sha %q is not 40 hex digits", p.SHA)
	case p.CloneURL == "":
		return fmt.Errorf("no clone URL")
	}
	return nil
}

// TeardownPayload asks for a pull request's preview to be removed.
type TeardownPayload struct {
	Owner string `json:"owner"`
	Repo  string `json:"repo"`
	PR    int    `json:"pr"`
	// Seq orders it among the pull request's work, as DeployPayload.Seq.
	Seq int64 `json:"seq"`
}

// Validate reports a payload the pipeline cannot act on.
func (p TeardownPayload) Validate() error {
	if p.Owner == "" || p.Repo == "" || p.PR <= 0 {
		return fmt.Errorf("incomplete teardown payload %+v", p)
	}
	return nil
}

// CommandPayload is a slash command from a pull-request comment.
type CommandPayload struct {
	Owner     string `json:"owner"`
	Repo      string `json:"repo"`
	PR        int    `json:"pr"`
	CommentID int64  `json:"comment_id"`
	User      string `json:"user"`
	Command   string `json:"command"`
	// Unknown is the word the user gave when byop did not know it.
	Unknown   string `json:"unknown,omitempty"`
	CloneURL  string `json:"clone_url"`
	SourceURL string `json:"source_url,omitempty"`
	Seq       int64  `json:"seq"`
}

// Validate reports a payload the pipeline cannot act on.
func (p CommandPayload) Validate() error {
	if p.Owner == "" || p.Repo == "" || p.PR <= 0 || p.Command == "" || p.User == "" || p.CommentID == 0 {
		return fmt.Errorf("incomplete command payload %+v", p)
	}
	return nil
}

// BuildPayload asks for one commit of a branch to be built and pushed,
// without a preview (a push to the default branch).
type BuildPayload struct {
	Owner     string `json:"owner"`
	Repo      string `json:"repo"`
	SHA       string `json:"sha"`
	Ref       string `json:"ref"`
	CloneURL  string `json:"clone_url"`
	SourceURL string `json:"source_url,omitempty"`
}

// Validate reports a payload the pipeline cannot act on.
func (p BuildPayload) Validate() error {
	if p.Owner == "" || p.Repo == "" || p.CloneURL == "" || !shaRE.MatchString(p.SHA) {
		return fmt.Errorf("incomplete build payload %+v", p)
	}
	return nil
}

// InstallPayload records repositories a GitHub App installation added or
// removed, so that they are allowed (or no longer) without a restart.
type InstallPayload struct {
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
}

// Validate reports a payload the pipeline cannot act on.
func (p InstallPayload) Validate() error {
	if len(p.Added)+len(p.Removed) == 0 {
		return fmt.Errorf("installation payload names no repository")
	}
	return nil
}

// NewPreviewDeployTask returns the task for p. id (the webhook delivery ID)
// becomes the task ID, so the same delivery is queued once.
func NewPreviewDeployTask(p DeployPayload, id string, timeout time.Duration) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("deploy task: %w", err)
	}
	return newTask(TypePreviewDeploy, p, id, QueueDefault, timeout, 2)
}

// NewPreviewTeardownTask returns the task that removes p's preview.
func NewPreviewTeardownTask(p TeardownPayload, id string) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("teardown task: %w", err)
	}
	return newTask(TypePreviewTeardown, p, id, QueueTeardown, 5*time.Minute, 5)
}

// NewPreviewCommandTask returns the task that carries out a slash command.
func NewPreviewCommandTask(p CommandPayload, id string, timeout time.Duration) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("command task: %w", err)
	}
	return newTask(TypePreviewCommand, p, id, QueueDefault, timeout, 1)
}

// NewImageBuildTask returns the task that builds and pushes a branch's commit.
func NewImageBuildTask(p BuildPayload, id string, timeout time.Duration) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("build task: %w", err)
	}
	return newTask(TypeImageBuild, p, id, QueueDefault, timeout, 2)
}

// NewInstallSyncTask returns the task that records installed repositories.
func NewInstallSyncTask(p InstallPayload, id string) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("installation task: %w", err)
	}
	return newTask(TypeInstallSync, p, id, QueueDefault, time.Minute, 5)
}

func newTask(typ string, payload any, id, queue string, timeout time.Duration, retries int) (*asynq.Task, error) {
	if id == "" {
		return nil, fmt.Errorf("%s task: no ID", typ)
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encoding %s payload: %w", typ, err)
	}
	return asynq.NewTask(typ, b,
		asynq.TaskID(id),
		asynq.Queue(queue),
		asynq.Timeout(timeout),
		asynq.MaxRetry(retries),
		asynq.Retention(Retention),
	), nil
}

// Decode reads a task's payload. A payload that cannot be read or makes no
// sense is an error wrapping asynq.SkipRetry: running it again cannot help.
func Decode[T interface{ Validate() error }](t *asynq.Task) (T, error) {
	var p T
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("decoding %s payload: %v: %w", t.Type(), err, asynq.SkipRetry)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%s payload: %v: %w", t.Type(), err, asynq.SkipRetry)
	}
	return p, nil
}
