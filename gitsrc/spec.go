// Package gitsrc brings exactly one commit of a repository into a work
// directory, with go-git, keeping a per-repository cache so that later
// fetches of the same repository transfer only what is new.
package gitsrc

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/byop-dev/byop/config"
)

// ErrInvalidSpec is wrapped by every error from Spec.Validate: retrying
// cannot help.
var ErrInvalidSpec = errors.New("invalid fetch spec")

// ErrCommitNotFound is wrapped when the host would not serve the commit:
// neither by its sha nor within reach of Spec.Ref (a force-pushed branch,
// a deleted pull request, a sha the host does not know).
var ErrCommitNotFound = errors.New("commit not found")

// Spec names one commit of one repository.
type Spec struct {
	// CloneURL is the repository's http(s) URL, e.g.
	// https://github.com/o/r.git. It never contains credentials.
	CloneURL string
	// SHA is the full 40-hex id of the commit to check out.
	SHA string
	// Ref optionally names a ref that carries the commit (refs/pull/7/head,
	// refs/heads/x). It is fetched when the host refuses to serve a bare sha.
	Ref string
	// Token, when set, is sent as HTTP basic auth (user "x-access-token").
	Token config.Secret
}

// Validate checks the sha, the URL and the ref. Its errors wrap
// ErrInvalidSpec and never repeat credentials found in the URL.
func (s Spec) Validate() error {
	if !isFullSHA(s.SHA) {
		return fmt.Errorf("%w: SHA %q is not a full 40-hex lowercase commit id", ErrInvalidSpec, s.SHA)
	}
	if strings.Trim(s.SHA, "0") == "" {
		return fmt.Errorf("%w: SHA is the zero id", ErrInvalidSpec)
	}
	if err := validateCloneURL(s.CloneURL); err != nil {
		return err
	}
	if s.Ref != "" {
		if !strings.HasPrefix(s.Ref, "refs/") || plumbing.ReferenceName(s.Ref).Validate() != nil ||
			strings.ContainsAny(s.Ref, "*:") {
			return fmt.Errorf("%w: Ref %q is not a full ref name such as refs/pull/7/head", ErrInvalidSpec, s.Ref)
		}
	}
	return nil
}

func isFullSHA(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func validateCloneURL(raw string) error {
	if raw == "" {
		return fmt.Errorf("%w: CloneURL is empty", ErrInvalidSpec)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, which may hold a password.
		return fmt.Errorf("%w: CloneURL is not a valid URL", ErrInvalidSpec)
	}
	if u.User != nil {
		return fmt.Errorf("%w: CloneURL must not carry credentials; pass a Token", ErrInvalidSpec)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: CloneURL %q is not http or https", ErrInvalidSpec, raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%w: CloneURL %q has no host", ErrInvalidSpec, raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		// A query may hold a token: do not repeat it.
		return fmt.Errorf("%w: CloneURL must not have a query or fragment", ErrInvalidSpec)
	}
	if strings.Trim(u.Path, "/") == "" {
		return fmt.Errorf("%w: CloneURL %q names no repository", ErrInvalidSpec, raw)
	}
	return nil
}
