package pipeline

import (
	"context"
	"sync"
)

// keyedLock serialises work per key (one pull request): at most one deploy
// or teardown of a preview runs at a time, so two racing deliveries never
// leave two previews or two comments. The zero value is ready to use.
type keyedLock struct {
	mu    sync.Mutex
	slots map[string]*slot
}

type slot struct {
	ch   chan struct{} // holds one token while the key is locked
	refs int
}

// lock waits for key, or for ctx to end.
func (l *keyedLock) lock(ctx context.Context, key string) (unlock func(), err error) {
	l.mu.Lock()
	if l.slots == nil {
		l.slots = make(map[string]*slot)
	}
	s, ok := l.slots[key]
	if !ok {
		s = &slot{ch: make(chan struct{}, 1)}
		l.slots[key] = s
	}
	s.refs++
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		s.refs--
		if s.refs == 0 {
			delete(l.slots, key)
		}
		l.mu.Unlock()
	}
	select {
	case s.ch <- struct{}{}:
		return func() { <-s.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
