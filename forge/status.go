package forge

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/google/go-github/v62/github"
)

// State is a commit status state.
type State string

// The commit status states GitHub accepts.
const (
	StatePending State = "pending"
	StateSuccess State = "success"
	StateFailure State = "failure"
	StateError   State = "error"
)

// Valid reports whether s is one of the states GitHub accepts.
func (s State) Valid() bool {
	switch s {
	case StatePending, StateSuccess, StateFailure, StateError:
		return true
	}
	return false
}

// MaxDescription is the longest status description GitHub accepts, in characters.
const MaxDescription = 140

// Status is one commit status: a context (e.g. "byop/build") on a commit.
type Status struct {
	SHA, Context string
	State        State
	Description  string // cut to MaxDescription characters before sending
	TargetURL    string // optional
}

// SetStatus sets a commit status on owner/repo at s.SHA.
func (c *Client) SetStatus(ctx context.Context, owner, repo string, s Status) error {
	err := c.setStatus(ctx, owner, repo, s)
	if err != nil {
		return fmt.Errorf("setting status %s on %s: %w", s.Context, short(s.SHA), err)
	}
	return nil
}

func (c *Client) setStatus(ctx context.Context, owner, repo string, s Status) error {
	if s.SHA == "" {
		return errors.New("no commit sha given")
	}
	if s.Context == "" {
		return errors.New("no status context given")
	}
	if !s.State.Valid() {
		return fmt.Errorf("invalid state %q", s.State)
	}
	rs := &github.RepoStatus{
		State:   github.String(string(s.State)),
		Context: github.String(s.Context),
	}
	if s.Description != "" {
		rs.Description = github.String(Truncate(s.Description, MaxDescription))
	}
	if s.TargetURL != "" {
		rs.TargetURL = github.String(s.TargetURL)
	}
	_, _, err := c.gh.Repositories.CreateStatus(ctx, owner, repo, s.SHA, rs)
	return err
}

// Truncate cuts s to at most max characters (runes), ending a cut string
// with an ellipsis.
func Truncate(s string, max int) string {
	if max <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

// short returns the first 12 characters of a commit sha.
func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
