package pipeline

import (
	"context"
	"errors"
	"sync"
)

// superseded is the cause of a deploy's cancellation by a newer head.
type superseded struct{ by string }

func (s superseded) Error() string { return "superseded by " + short(s.by) }

// errClosed is the cause of a deploy's cancellation by a teardown.
var errClosed = errors.New("the preview was removed")

// heads knows the newest work asked for each pull request, and cancels the
// older work still in flight. Work is ordered by the time its delivery
// arrived (Seq), not by when a worker picked it up.
type heads struct {
	mu sync.Mutex
	m  map[string]*head
}

type head struct {
	seq    int64
	sha    string
	cancel context.CancelCauseFunc // of the work in flight; nil when none
}

// claim makes (seq, sha) the newest work for key and cancels older work in
// flight. If newer work was already seen, it returns that work's sha and
// claims nothing. release must be called when the work ends.
func (h *heads) claim(ctx context.Context, key string, seq int64, sha string) (_ context.Context, release func(), newer string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = make(map[string]*head)
	}
	cur := h.m[key]
	if cur != nil && cur.seq > seq {
		return ctx, func() {}, cur.sha
	}
	if cur != nil && cur.cancel != nil {
		cur.cancel(superseded{by: sha})
	}
	ctx, cancel := context.WithCancelCause(ctx)
	me := &head{seq: seq, sha: sha, cancel: cancel}
	h.m[key] = me
	return ctx, func() {
		cancel(nil)
		h.mu.Lock()
		me.cancel = nil
		h.mu.Unlock()
	}, ""
}

// end cancels the work in flight for key with cause, and makes work older
// than seq superseded from now on.
func (h *heads) end(key string, seq int64, cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = make(map[string]*head)
	}
	cur := h.m[key]
	if cur != nil && cur.cancel != nil {
		cur.cancel(cause)
	}
	if cur == nil || cur.seq < seq {
		h.m[key] = &head{seq: seq, sha: "", cancel: nil}
	}
}
