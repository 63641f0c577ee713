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
}

// Validate reports a payload the pipeline cannot act on.
func (p TeardownPayload) Validate() error {
	if p.Owner == "" || p.Repo == "" || p.PR <= 0 {
		return fmt.Errorf("incomplete teardown payload %+v", p)
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
