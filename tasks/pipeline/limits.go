package pipeline

import (
	"context"
	"sync"
)

// limiter bounds the builds running at once, in all and per repository.
// The zero value is ready; the bounds are given at each acquire so that
// settings need no constructor.
type limiter struct {
	mu     sync.Mutex
	global chan struct{}
	repos  map[string]chan struct{}
}

// acquire waits for a slot (0 means no bound) and returns its release.
func (l *limiter) acquire(ctx context.Context, repo string, max, perRepo int) (release func(), err error) {
	l.mu.Lock()
	if l.global == nil && max > 0 {
		l.global = make(chan struct{}, max)
	}
	if l.repos == nil {
		l.repos = make(map[string]chan struct{})
	}
	var repoSlot chan struct{}
	if perRepo > 0 {
		repoSlot = l.repos[repo]
		if repoSlot == nil {
			repoSlot = make(chan struct{}, perRepo)
			l.repos[repo] = repoSlot
		}
	}
	global := l.global
	l.mu.Unlock()

	var held []chan struct{}
	release = func() {
		for _, c := range held {
			<-c
		}
	}
	for _, c := range []chan struct{}{repoSlot, global} {
		if c == nil {
			continue
		}
		select {
		case c <- struct{}{}:
			held = append(held, c)
		case <-ctx.Done():
			release()
			return nil, ctx.Err()
		}
	}
	return release, nil
}
