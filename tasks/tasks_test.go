package tasks

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

var good = DeployPayload{Owner: "acme", Repo: "web", PR: 7, SHA: strings.Repeat("a", 40), CloneURL: "https://github.com/acme/web.git"}

func TestNewPreviewDeployTaskRefusesIncompletePayloads(t *testing.T) {
	tests := []struct {
		name   string
		change func(*DeployPayload)
		id     string
		want   string
	}{
		{"short sha", func(p *DeployPayload) { p.SHA = "abc123" }, "d", "40 hex"},
		{"upper-case sha", func(p *DeployPayload) { p.SHA = strings.Repeat("A", 40) }, "d", "40 hex"},
		{"no PR number", func(p *DeployPayload) { p.PR = 0 }, "d", "pull request"},
		{"no clone URL", func(p *DeployPayload) { p.CloneURL = "" }, "d", "clone URL"},
		{"no task ID", func(p *DeployPayload) {}, "", "no ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := good
			tt.change(&p)
			if _, err := NewPreviewDeployTask(p, tt.id, time.Minute); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one about %s", err, tt.want)
			}
		})
	}
}

func TestDecodeRoundTripsAndRefusesGarbage(t *testing.T) {
	task, err := NewPreviewDeployTask(good, "delivery-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if task.Type() != TypePreviewDeploy {
		t.Errorf("type %s", task.Type())
	}
	got, err := Decode[DeployPayload](task)
	if err != nil || got != good {
		t.Errorf("Decode = %+v, %v; want %+v", got, err, good)
	}
	for _, payload := range []string{"{", `{"owner":"acme"}`, `[]`} {
		_, err := Decode[DeployPayload](asynq.NewTask(TypePreviewDeploy, []byte(payload)))
		if !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("Decode(%s) = %v, want SkipRetry", payload, err)
		}
	}
	if _, err := Decode[TeardownPayload](asynq.NewTask(TypePreviewTeardown, []byte(`{"owner":"a","repo":"b","pr":0}`))); !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("teardown without PR: %v", err)
	}
}

func TestTeardownOutranksDeploys(t *testing.T) {
	q := Queues()
	if q[QueueTeardown] <= q[QueueDefault] {
		t.Errorf("queues %v: teardown must have the higher priority", q)
	}
}
