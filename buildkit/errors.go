package buildkit

import (
	"errors"
	"strconv"
	"strings"

	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/errdefs"
	digest "github.com/opencontainers/go-digest"
)

// ErrNoDockerfile is returned when the repository has no Dockerfile where
// the build looks for it.
var ErrNoDockerfile = errors.New("no Dockerfile")

// Limits that keep a BuildError's message within a commit status
// description (140 characters).
const (
	maxErrorLen = 140
	maxStepLen  = 60
)

// BuildError is a failed build: the step that failed and why, in short.
// The full error is in Err (and was sent to the build log).
type BuildError struct {
	Step   string // e.g. "[2/3] RUN make"; "" when no step is to blame
	Reason string // e.g. "exit code: 2"
	Err    error
}

func (e *BuildError) Error() string {
	if e.Step == "" {
		return "build failed: " + e.Reason
	}
	return "build failed at " + e.Step + ": " + e.Reason
}

func (e *BuildError) Unwrap() error { return e.Err }

// buildError explains err, returned by a solve whose progress p printed.
func (p *printer) buildError(err error) *BuildError {
	be := &BuildError{Err: err}

	var failed *step
	var ve *errdefs.VertexError
	if errors.As(err, &ve) && ve.Vertex != nil {
		if s, ok := p.steps[digest.Digest(ve.Digest)]; ok {
			failed = s
		}
	}
	if failed == nil {
		failed = p.failed
	}
	if failed != nil {
		be.Step = failed.name
	}

	var exit *gatewaypb.ExitError
	switch {
	case errors.As(err, &exit):
		be.Reason = "exit code: " + strconv.FormatUint(uint64(exit.ExitCode), 10)
	case failed != nil && failed.err != "":
		be.Reason = failed.err
	default:
		be.Reason = err.Error()
	}
	be.Reason = strings.TrimPrefix(be.Reason, "failed to solve: ")
	be.Step = shortenEnd(oneLine(be.Step), maxStepLen)
	be.Reason = oneLine(be.Reason)
	if room := maxErrorLen - len([]rune(be.Error())) + len([]rune(be.Reason)); room > 0 {
		be.Reason = shortenStart(be.Reason, room)
	}
	return be
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// shortenEnd cuts the end of s to keep at most n runes, marking the cut
// with "…".
func shortenEnd(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// shortenStart cuts the start of s to keep at most n runes, marking the
// cut with "…": the end of an error chain is its cause.
func shortenStart(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n+1:])
}
