package webhook

import (
	"crypto/rand"
	"net"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/internal/testenv"
	"github.com/byop-dev/byop/tasks"
)

// With real Redis: a delivery becomes one task whose ID is the delivery
// ID, and the same delivery sent again is not queued twice.
func TestRedeliveryQueuedOnceInRedis(t *testing.T) {
	addr := testenv.Redis(t)
	opt := asynq.RedisClientOpt{Addr: addr, DB: 9}
	client := asynq.NewClient(opt)
	defer client.Close()
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	t.Cleanup(func() { insp.DeleteAllPendingTasks(tasks.QueueDefault) })

	h := newHandler(t, client)
	d := signed("pull_request", load(t, "octokit/pull_request/opened.payload.json"))
	d.id = "delivery-" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + rand.Text()[:10]

	first, second := d.send(h), d.send(h)
	if first.Code != 202 || !strings.Contains(first.Body.String(), "queued") {
		t.Fatalf("first: %d %s", first.Code, first.Body)
	}
	if second.Code != 202 || !strings.Contains(second.Body.String(), "already queued") {
		t.Fatalf("redelivery: %d %s, want 202 already queued", second.Code, second.Body)
	}
	info, err := insp.GetTaskInfo(tasks.QueueDefault, d.id)
	if err != nil {
		t.Fatalf("task %s not in Redis: %v", d.id, err)
	}
	if info.Type != tasks.TypePreviewDeploy || info.Retention != tasks.Retention {
		t.Errorf("task %+v, want a deploy task kept %v", info, tasks.Retention)
	}
	pending, _ := insp.ListPendingTasks(tasks.QueueDefault)
	n := 0
	for _, p := range pending {
		if p.ID == d.id {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d tasks with ID %s, want 1", n, d.id)
	}
}

// Redis that does not answer gives 503 (GitHub may redeliver), not a hang.
func TestRedisDownIs503(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: addr})
	defer client.Close()
	rec := signed("pull_request", load(t, "octokit/pull_request/opened.payload.json")).send(newHandler(t, client))
	if rec.Code != 503 {
		t.Errorf("got %d %s, want 503", rec.Code, rec.Body)
	}
}
