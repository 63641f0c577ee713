package previews

import (
	"context"
	"strings"
	"sync"
	"time"
)

// BuildLog collects one build's log lines and writes them to the store in
// batches, so that a chatty build costs a transaction every flush interval
// rather than one per line. Line is safe from several goroutines.
type BuildLog struct {
	store *Store
	id    int64

	mu      sync.Mutex
	pending []string
	err     error

	stop chan struct{}
	done chan struct{}
}

// buildLogFlushEvery is how long a line may wait before it shows on the log page.
const buildLogFlushEvery = 250 * time.Millisecond

// NewBuildLog starts collecting the log of build id. Close it to write the
// rest.
func (s *Store) NewBuildLog(id int64) *BuildLog {
	l := &BuildLog{store: s, id: id, stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l
}

func (l *BuildLog) run() {
	defer close(l.done)
	t := time.NewTicker(buildLogFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.flush()
		case <-l.stop:
			l.flush()
			return
		}
	}
}

// Line adds one line (a trailing newline is dropped; embedded newlines split it).
func (l *BuildLog) Line(line string) {
	line = strings.TrimRight(line, "\r\n")
	l.mu.Lock()
	l.pending = append(l.pending, strings.Split(line, "\n")...)
	l.mu.Unlock()
}

func (l *BuildLog) flush() {
	l.mu.Lock()
	lines := l.pending
	l.pending = nil
	l.mu.Unlock()
	if len(lines) == 0 {
		return
	}
	// The log outlives the task's context: a cancelled build still keeps
	// the lines that tell why.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.store.AppendLog(ctx, l.id, lines); err != nil {
		l.mu.Lock()
		if l.err == nil {
			l.err = err
		}
		l.mu.Unlock()
	}
}

// Close writes the lines still waiting and reports the first write error.
func (l *BuildLog) Close() error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
