package buildkit

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
)

// printer turns the SolveStatus stream of one build into log lines, in the
// spirit of `buildctl --progress=plain` but without timings, so that the
// same stream always gives the same lines:
//
//	#2 [1/3] FROM 127.0.0.1:5000/byop/busybox:1.35.0
//	#2 DONE
//	#4 [2/3] RUN make
//	#4 make: *** No rule to make target
//	#4 ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2
//
// Steps are numbered in the order they first appear. It is not safe for
// concurrent use.
type printer struct {
	log    func(string)
	steps  map[digest.Digest]*step
	order  []*step
	failed *step // last step reported with an error other than a cancel
}

type step struct {
	id      int
	name    string
	started bool
	cached  bool
	done    bool
	err     string
	partial map[int][]byte // unterminated output, per stream
}

func newPrinter(log func(string)) *printer {
	return &printer{log: log, steps: map[digest.Digest]*step{}}
}

func (p *printer) step(d digest.Digest) *step {
	s, ok := p.steps[d]
	if !ok {
		s = &step{id: len(p.order) + 1, partial: map[int][]byte{}}
		p.steps[d] = s
		p.order = append(p.order, s)
	}
	return s
}

func (p *printer) line(s *step, text string) {
	p.log("#" + strconv.Itoa(s.id) + " " + text)
}

func (p *printer) write(st *client.SolveStatus) {
	for _, v := range st.Vertexes {
		s := p.step(v.Digest)
		if s.name == "" {
			s.name = v.Name
		}
		if v.Started != nil && !s.started {
			s.started = true
			p.line(s, s.name)
		}
		if v.Cached && !s.cached {
			if !s.started {
				s.started = true
				p.line(s, s.name)
			}
			s.cached = true
			p.line(s, "CACHED")
		}
		if v.Error != "" && s.err == "" {
			p.flushStep(s)
			s.err = v.Error
			s.done = true
			if !isCancel(v.Error) {
				p.failed = s
			}
			p.line(s, "ERROR: "+v.Error)
			continue
		}
		if v.Completed != nil && !s.done && s.err == "" {
			p.flushStep(s)
			s.done = true
			if !s.cached {
				p.line(s, "DONE")
			}
		}
	}
	for _, w := range st.Warnings {
		p.line(p.step(w.Vertex), "WARNING: "+string(bytes.TrimSpace(w.Short)))
	}
	for _, l := range st.Logs {
		p.output(p.step(l.Vertex), l.Stream, l.Data)
	}
}

// output logs the complete lines of data and keeps the rest for later.
func (p *printer) output(s *step, stream int, data []byte) {
	buf := append(s.partial[stream], data...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		p.line(s, strings.TrimRight(string(buf[:i]), "\r"))
		buf = buf[i+1:]
	}
	if len(buf) == 0 {
		delete(s.partial, stream)
		return
	}
	s.partial[stream] = append([]byte(nil), buf...)
}

// flushStep logs the unterminated output of a step, stdout first.
func (p *printer) flushStep(s *step) {
	for _, stream := range []int{1, 2} {
		if b, ok := s.partial[stream]; ok {
			p.line(s, strings.TrimRight(string(b), "\r"))
			delete(s.partial, stream)
		}
	}
	for stream, b := range s.partial { // unknown streams; rare
		p.line(s, strings.TrimRight(string(b), "\r"))
		delete(s.partial, stream)
	}
}

// flush logs whatever output is still pending, in step order.
func (p *printer) flush() {
	for _, s := range p.order {
		p.flushStep(s)
	}
}

// stepName returns the name of the step with digest d, if it was seen.
func (p *printer) stepName(d digest.Digest) (string, bool) {
	s, ok := p.steps[d]
	if !ok || s.name == "" {
		return "", false
	}
	return s.name, true
}

func isCancel(msg string) bool {
	return strings.Contains(msg, "context canceled")
}
