package pipeline

import (
	"fmt"
	"strings"

	"github.com/byop-dev/byop/previews"
)

type commentKind int

const (
	commentBuilding commentKind = iota
	commentRunning
	commentFailed
	commentWaiting
	commentClosed
	commentDestroyed
)

// commentBody is the text of byop's one comment on a pull request. It says
// what runs, what is being built and where the log is. (forge adds the
// hidden marker that finds the comment again.)
func commentBody(kind commentKind, sha, logURL string, b previews.Build, pv previews.Preview) string {
	var s strings.Builder
	s.WriteString("### byop preview\n\n")
	switch kind {
	case commentBuilding:
		fmt.Fprintf(&s, "⏳ **Building** `%s` — [build log](%s)\n", short(sha), logURL)
	case commentRunning:
		fmt.Fprintf(&s, "✅ **Live**: %s\n\nServing `%s` — [build log](%s)\n", pv.URL, sha, logURL)
	case commentFailed:
		fmt.Fprintf(&s, "❌ **%s** for `%s`: %s — [build log](%s)\n", failWord(b.State), short(sha), b.Reason, logURL)
	case commentWaiting:
		fmt.Fprintf(&s, "✋ `%s` is **waiting for `/ok-to-test`** from a maintainer: byop builds pull requests from forks and outside contributors only once someone with write access has looked at them.\n", short(sha))
	case commentClosed:
		s.WriteString("🧹 **Closed**, preview removed.\n")
		return s.String()
	case commentDestroyed:
		s.WriteString("🧹 **Destroyed**: the preview is removed. It comes back on the next push or `/redeploy`.\n")
		return s.String()
	}
	if kind != commentRunning && pv.State == previews.Running {
		fmt.Fprintf(&s, "\nThe preview of `%s` is still live: %s\n", short(pv.SHA), pv.URL)
	}
	return s.String()
}

func failWord(s previews.State) string {
	if s == previews.Cancelled {
		return "Cancelled"
	}
	return "Failed"
}
