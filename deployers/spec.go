// Package deployers runs previews somewhere: on this host with docker
// compose (Local), and later on other hosts.
package deployers

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Labels byop puts on everything it runs, besides the caller's own.
const (
	// LabelProject names the compose project a container, network or volume
	// belongs to; List finds byop's previews by it.
	LabelProject = "byop.project"
	// LabelRevision is the commit a container runs.
	LabelRevision = "byop.revision"
	// LabelPort is the container port the app listens on.
	LabelPort = "byop.port"
)

// RevisionLabel is the image label that must name the commit an image was
// built from.
const RevisionLabel = "org.opencontainers.image.revision"

var (
	// ErrRevisionMismatch: the image's revision label is not the commit asked for.
	ErrRevisionMismatch = errors.New("image revision label does not match the commit")
	// ErrNoAnswer: the app did not answer HTTP within the health timeout.
	ErrNoAnswer = errors.New("app did not answer")
)

// Spec is one revision of a preview to run.
type Spec struct {
	Project  string            // compose project, already sanitised: byop-<owner>-<repo>-pr-<n>
	Image    string            // repository@sha256:digest — pulled, never built
	Revision string            // full commit sha; the image's org.opencontainers.image.revision label must equal it
	Port     int               // container port the app listens on
	Labels   map[string]string // put on every container, network and volume (repo, PR number, sha)
}

// Endpoint is where the router sends traffic for a preview,
// e.g. http://127.0.0.1:49153.
type Endpoint struct{ URL *url.URL }

// Running is a revision of a preview that runs now.
type Running struct {
	Project  string
	Revision string
	Endpoint Endpoint
	// Labels are the container's labels without Docker Compose's own; they
	// hold the Spec's labels (and any the image itself carries).
	Labels map[string]string
}

var (
	projectRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,99}$`)
	revisionRe = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)
	digestRe   = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	repoRe     = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*$`)
	labelKeyRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$`)
)

func validateProject(p string) error {
	if !projectRe.MatchString(p) {
		return fmt.Errorf("invalid project name %q: want lowercase letters, digits, '-' and '_'", p)
	}
	return nil
}

func validateRevision(r string) error {
	if !revisionRe.MatchString(r) {
		return fmt.Errorf("invalid revision %q: want a full lowercase hex commit sha", r)
	}
	return nil
}

func validateImage(img string) error {
	repo, dgst, ok := strings.Cut(img, "@")
	if !ok || !digestRe.MatchString(dgst) {
		return fmt.Errorf("invalid image %q: want repository@sha256:<digest>", img)
	}
	if !repoRe.MatchString(repo) || strings.Contains(repo, "//") {
		return fmt.Errorf("invalid image repository %q", repo)
	}
	return nil
}

func (s Spec) validate() error {
	if err := validateProject(s.Project); err != nil {
		return err
	}
	if err := validateImage(s.Image); err != nil {
		return err
	}
	if err := validateRevision(s.Revision); err != nil {
		return err
	}
	if s.Port < 1 || s.Port > 65535 {
		return fmt.Errorf("invalid port %d", s.Port)
	}
	for k := range s.Labels {
		if !labelKeyRe.MatchString(k) {
			return fmt.Errorf("invalid label key %q", k)
		}
		switch k {
		case LabelProject, LabelRevision, LabelPort:
			return fmt.Errorf("label %q is set by the deployer", k)
		}
		if strings.HasPrefix(k, "com.docker.") {
			return fmt.Errorf("label %q is reserved for Docker", k)
		}
	}
	return nil
}

// serviceName is the compose service that runs one revision of a preview.
func serviceName(revision string) string {
	if len(revision) > 12 {
		revision = revision[:12]
	}
	return "app-" + revision
}
