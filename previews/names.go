// Package previews is byop's model of a pull-request preview: its states,
// names and URL, the store of record (builds, their logs, previews and the
// reports byop made), the router that serves preview hosts, and byop's own
// pages.
package previews

import (
	"fmt"
	"strconv"
	"strings"
)

// Key names one pull request's preview.
type Key struct {
	Owner string
	Repo  string
	PR    int
}

func (k Key) String() string {
	if k.PR == 0 {
		return k.FullName()
	}
	return fmt.Sprintf("%s/%s#%d", k.Owner, k.Repo, k.PR)
}

// FullName is "owner/repo".
func (k Key) FullName() string { return k.Owner + "/" + k.Repo }

// Project is the compose project name of the preview:
// byop-<owner>-<repo>-pr-<n>, lower-case letters, digits and dashes only.
func (k Key) Project() string {
	return "byop-" + label(k.Owner, 20) + "-" + label(k.Repo, 30) + "-pr-" + strconv.Itoa(k.PR)
}

// Host is the preview's host name: pr-<n>.<repo>.<owner>.<domain>.
func (k Key) Host(domain string) string {
	return "pr-" + strconv.Itoa(k.PR) + "." + label(k.Repo, 63) + "." + label(k.Owner, 63) + "." + strings.ToLower(domain)
}

// URL is the preview's address. Port 80 (or 0) is left out.
func (k Key) URL(domain string, port int) string {
	host := k.Host(domain)
	if port != 0 && port != 80 {
		host += ":" + strconv.Itoa(port)
	}
	return "http://" + host + "/"
}

// label turns a GitHub name into a DNS label: lower case, runs of anything
// but letters and digits become one dash, no dash at either end, at most max
// characters. GitHub names are never empty, but a name of only symbols
// becomes "x" so that the result is still a valid label.
func label(s string, max int) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
		default:
			dash = true
		}
	}
	out := b.String()
	if len(out) > max {
		out = strings.TrimRight(out[:max], "-")
	}
	if out == "" {
		return "x"
	}
	return out
}

// ImageRepository is where a repository's images go: <prefix>/<owner>/<repo>,
// in the lower case that image references require.
func ImageRepository(prefix, owner, repo string) string {
	return prefix + "/" + label(owner, 100) + "/" + label(repo, 100)
}
