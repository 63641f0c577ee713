package previews

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "byop.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

const sha1 = "0123456789abcdef0123456789abcdef01234567"

func TestStoreBuildLifecycle(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	key := Key{"acme", "web", 7}
	b, err := s.StartBuild(ctx, "delivery-1", key, sha1)
	if err != nil {
		t.Fatal(err)
	}
	if b.State != Pending || b.Key != key || b.SHA != sha1 {
		t.Fatalf("new build = %+v", b)
	}
	if err := s.AppendLog(ctx, b.ID, []string{"step 1", "step 2"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetBuildState(ctx, b.ID, Failed, "RUN make: exit 2"); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Build(ctx, b.ID)
	if got.State != Failed || got.Reason != "RUN make: exit 2" {
		t.Errorf("after failure: %+v", got)
	}

	// The same task running again (asynq re-runs a task whose worker died)
	// starts the same build afresh.
	again, err := s.StartBuild(ctx, "delivery-1", key, sha1)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != b.ID || again.State != Pending || again.Reason != "" {
		t.Errorf("re-run = %+v, want build %d reset to pending", again, b.ID)
	}
	if lines, _ := s.Log(ctx, b.ID, 0); len(lines) != 0 {
		t.Errorf("re-run kept %d old log lines", len(lines))
	}

	if _, err := s.Build(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing build: err = %v, want ErrNotFound", err)
	}
}

func TestStoreLogAppendsInOrder(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	b, _ := s.StartBuild(ctx, "d", Key{"a", "b", 1}, sha1)
	s.AppendLog(ctx, b.ID, []string{"one", "two"})
	s.AppendLog(ctx, b.ID, []string{"three"})
	lines, err := s.Log(ctx, b.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range lines {
		got = append(got, fmt.Sprintf("%d:%s", l.Seq, l.Line))
	}
	if fmt.Sprint(got) != "[1:one 2:two 3:three]" {
		t.Errorf("log = %v", got)
	}
	after, _ := s.Log(ctx, b.ID, 2)
	if len(after) != 1 || after[0].Line != "three" {
		t.Errorf("log after 2 = %+v", after)
	}
}

func TestBuildLogBatchesAndFlushesOnClose(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	b, _ := s.StartBuild(ctx, "d", Key{"a", "b", 1}, sha1)
	l := s.NewBuildLog(b.ID)
	for i := range 500 {
		l.Line(fmt.Sprintf("line %d\n", i))
	}
	l.Line("two\nlines")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines, _ := s.Log(ctx, b.ID, 0)
	if len(lines) != 502 || lines[0].Line != "line 0" || lines[501].Line != "lines" {
		t.Errorf("got %d lines, first %q", len(lines), lines[0].Line)
	}
}

func TestStorePreviewsAndReports(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	key := Key{"acme", "web", 7}
	if _, ok, err := s.Preview(ctx, key); ok || err != nil {
		t.Fatalf("unknown preview: ok=%v err=%v", ok, err)
	}
	p := Preview{Key: key, SHA: sha1, State: Running, URL: "http://pr-7.web.acme.localhost:8081/", Upstream: "http://127.0.0.1:4000", CommentID: 42}
	if err := s.SavePreview(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.State = Closed
	s.SavePreview(ctx, p)
	got, ok, err := s.Preview(ctx, key)
	if !ok || err != nil || got.State != Closed || got.CommentID != 42 || got.Upstream != p.Upstream {
		t.Errorf("preview = %+v ok=%v err=%v", got, ok, err)
	}
	all, _ := s.Previews(ctx)
	if len(all) != 1 {
		t.Errorf("Previews() has %d, want 1", len(all))
	}

	s.AddReport(ctx, Report{Owner: "acme", Repo: "web", SHA: sha1, Context: "byop/build", State: "pending", Description: "queued"})
	s.AddReport(ctx, Report{Owner: "acme", Repo: "web", SHA: sha1, Context: "byop/build", State: "success", Description: "built"})
	reps, _ := s.Reports(ctx, "acme", "web", sha1)
	if len(reps) != 2 || reps[0].State != "pending" || reps[1].State != "success" {
		t.Errorf("reports = %+v", reps)
	}
}

func TestStoreReopensWithSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "byop.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.StartBuild(ctx, "d", Key{"a", "b", 1}, sha1)
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer s.Close()
	if got, err := s.Build(ctx, b.ID); err != nil || got.SHA != sha1 {
		t.Errorf("after reopen: %+v %v", got, err)
	}
}
