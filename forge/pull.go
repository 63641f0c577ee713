package forge

import (
	"context"
	"fmt"
	"net/http"
)

// PullRequest is what byop needs to know about a pull request.
type PullRequest struct {
	Number   int
	State    string // "open" or "closed"
	Draft    bool
	HeadSHA  string
	HeadRef  string
	HeadRepo string // "owner/name" of the head repository (a fork's, for fork PRs); "" if the fork was deleted
	BaseRepo string // "owner/name"
	Author   string // login of the PR's author
}

// PullRequest looks up pull request number on owner/repo. When GitHub
// answers that there is no such pull request, IsNotFound(err) is true.
func (c *Client) PullRequest(ctx context.Context, owner, repo string, number int) (PullRequest, error) {
	pr, _, err := c.gh.PullRequests.Get(ctx, owner, repo, number)
	if err != nil {
		return PullRequest{}, fmt.Errorf("getting pull request %s/%s#%d: %w", owner, repo, number, err)
	}
	return PullRequest{
		Number:   pr.GetNumber(),
		State:    pr.GetState(),
		Draft:    pr.GetDraft(),
		HeadSHA:  pr.GetHead().GetSHA(),
		HeadRef:  pr.GetHead().GetRef(),
		HeadRepo: pr.GetHead().GetRepo().GetFullName(),
		BaseRepo: pr.GetBase().GetRepo().GetFullName(),
		Author:   pr.GetUser().GetLogin(),
	}, nil
}

// IsNotFound reports whether err is GitHub's 404 answer: the repository,
// pull request or comment does not exist or the token may not see it.
func IsNotFound(err error) bool { return isStatus(err, http.StatusNotFound) }
