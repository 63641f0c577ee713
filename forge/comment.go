package forge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/google/go-github/v62/github"
)

// Marker starts the body of byop's sticky preview comment, so the comment
// can be found again after a restart. It is hidden when GitHub renders it.
const Marker = "<!-- byop:preview -->"

// UpsertComment makes body the content of byop's one preview comment on pull
// request pr and returns that comment's ID. It edits knownID when non-zero
// and still there; otherwise it edits the first comment on the PR that starts
// with Marker (written by the client's login, when WithLogin was given);
// otherwise it creates the comment. The body gets Marker prepended.
//
// Calls for one PR must not run concurrently: the caller serialises them.
func (c *Client) UpsertComment(ctx context.Context, owner, repo string, pr int, knownID int64, body string) (int64, error) {
	if !strings.HasPrefix(body, Marker) {
		body = Marker + "\n" + body
	}
	where := fmt.Sprintf("%s/%s#%d", owner, repo, pr)

	if knownID != 0 {
		err := c.editComment(ctx, owner, repo, knownID, body)
		switch {
		case err == nil:
			return knownID, nil
		case !isStatus(err, http.StatusNotFound):
			return 0, fmt.Errorf("updating preview comment %d on %s: %w", knownID, where, err)
		}
		c.log.LogAttrs(ctx, slog.LevelInfo, "preview comment is gone, looking for another",
			slog.String("pr", where), slog.Int64("comment", knownID))
	}

	candidates, err := c.markedComments(ctx, owner, repo, pr)
	if err != nil {
		return 0, fmt.Errorf("looking for the preview comment on %s: %w", where, err)
	}
	for _, id := range candidates {
		if id == knownID {
			continue // already found to be gone
		}
		err := c.editComment(ctx, owner, repo, id, body)
		switch {
		case err == nil:
			return id, nil
		case isStatus(err, http.StatusNotFound), isStatus(err, http.StatusForbidden):
			// Deleted meanwhile, or not ours to edit: try the next one.
			c.log.LogAttrs(ctx, slog.LevelWarn, "cannot edit marked comment, skipping it",
				slog.String("pr", where), slog.Int64("comment", id), slog.Any("error", err))
		default:
			return 0, fmt.Errorf("updating preview comment %d on %s: %w", id, where, err)
		}
	}

	created, _, err := c.gh.Issues.CreateComment(ctx, owner, repo, pr, &github.IssueComment{Body: github.String(body)})
	if err != nil {
		return 0, fmt.Errorf("creating preview comment on %s: %w", where, err)
	}
	return created.GetID(), nil
}

func (c *Client) editComment(ctx context.Context, owner, repo string, id int64, body string) error {
	_, _, err := c.gh.Issues.EditComment(ctx, owner, repo, id, &github.IssueComment{Body: github.String(body)})
	return err
}

// markedComments lists, oldest first, the IDs of the PR's comments that
// start with Marker (and are by c.login, when set).
func (c *Client) markedComments(ctx context.Context, owner, repo string, pr int) ([]int64, error) {
	var ids []int64
	opts := &github.IssueListCommentsOptions{ListOptions: github.ListOptions{PerPage: 100}}
	for {
		page, resp, err := c.gh.Issues.ListComments(ctx, owner, repo, pr, opts)
		if err != nil {
			return nil, fmt.Errorf("listing comments (page %d): %w", max(opts.Page, 1), err)
		}
		for _, cm := range page {
			if !strings.HasPrefix(cm.GetBody(), Marker) {
				continue
			}
			if c.login != "" && !strings.EqualFold(cm.GetUser().GetLogin(), c.login) {
				continue
			}
			ids = append(ids, cm.GetID())
		}
		if resp.NextPage == 0 {
			return ids, nil
		}
		opts.Page = resp.NextPage
	}
}

// Reply adds a plain comment (no marker) to pull request pr and returns its ID.
func (c *Client) Reply(ctx context.Context, owner, repo string, pr int, body string) (int64, error) {
	created, _, err := c.gh.Issues.CreateComment(ctx, owner, repo, pr, &github.IssueComment{Body: github.String(body)})
	if err != nil {
		return 0, fmt.Errorf("replying on %s/%s#%d: %w", owner, repo, pr, err)
	}
	return created.GetID(), nil
}

// React adds a reaction ("+1", "-1", "laugh", "confused", "heart", "hooray",
// "rocket" or "eyes") to an issue or pull request comment.
func (c *Client) React(ctx context.Context, owner, repo string, commentID int64, content string) error {
	if _, _, err := c.gh.Reactions.CreateIssueCommentReaction(ctx, owner, repo, commentID, content); err != nil {
		return fmt.Errorf("reacting %q to comment %d on %s/%s: %w", content, commentID, owner, repo, err)
	}
	return nil
}

// Permission returns user's permission on owner/repo as GitHub reports it:
// "admin", "write", "read" or "none".
func (c *Client) Permission(ctx context.Context, owner, repo, user string) (string, error) {
	lvl, _, err := c.gh.Repositories.GetPermissionLevel(ctx, owner, repo, user)
	if err != nil {
		return "", fmt.Errorf("getting %s's permission on %s/%s: %w", user, owner, repo, err)
	}
	return lvl.GetPermission(), nil
}

// isStatus reports whether err is GitHub's answer with the given HTTP status.
func isStatus(err error, code int) bool {
	var er *github.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == code
}
