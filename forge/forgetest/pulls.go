package forgetest

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/byop-dev/byop/forge"
)

// SetPullRequest makes pull request pr.Number on owner/repo exist as pr.
// An empty BaseRepo is owner/repo; an empty State is "open".
func (s *Server) SetPullRequest(owner, repo string, pr forge.PullRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pr.BaseRepo == "" {
		pr.BaseRepo = owner + "/" + repo
	}
	if pr.State == "" {
		pr.State = "open"
	}
	s.pulls[prKey(owner, repo, pr.Number)] = pr
}

// pullRequest answers GET /repos/{owner}/{repo}/pulls/{n}.
func (s *Server) pullRequest(owner, repo string, n int) (int, any, *apiError) {
	pr, ok := s.pulls[prKey(owner, repo, n)]
	if !ok {
		return 0, nil, answer(http.StatusNotFound, "Not Found")
	}
	now := time.Now().UTC().Format(time.RFC3339)
	id := int64(n)*104729 + int64(len(owner+repo))
	return http.StatusOK, map[string]any{
		"id":         id,
		"node_id":    "PR_" + strconv.FormatInt(id, 10),
		"number":     pr.Number,
		"state":      pr.State,
		"draft":      pr.Draft,
		"locked":     false,
		"title":      fmt.Sprintf("Pull request %d", pr.Number),
		"body":       nil,
		"user":       s.user(pr.Author),
		"url":        fmt.Sprintf("%s/repos/%s/%s/pulls/%d", s.srv.URL, owner, repo, n),
		"html_url":   fmt.Sprintf("https://github.example/%s/%s/pull/%d", owner, repo, n),
		"merged":     false,
		"created_at": now,
		"updated_at": now,
		"head":       s.branchJSON(pr.HeadRepo, pr.HeadRef, pr.HeadSHA, pr.BaseRepo),
		"base":       s.branchJSON(pr.BaseRepo, "main", strings.Repeat("0", 40), pr.BaseRepo),
	}, nil
}

// branchJSON is a pull request's head or base. A head whose fork was
// deleted has a null repo, as on GitHub.
func (s *Server) branchJSON(fullName, ref, sha, base string) map[string]any {
	b := map[string]any{"ref": ref, "sha": sha, "label": "unknown:" + ref, "user": nil, "repo": nil}
	owner, name, ok := strings.Cut(fullName, "/")
	if !ok {
		return b
	}
	b["label"] = owner + ":" + ref
	b["user"] = s.user(owner)
	b["repo"] = map[string]any{
		"id":             len(fullName)*6151 + 1,
		"name":           name,
		"full_name":      fullName,
		"owner":          s.user(owner),
		"private":        false,
		"fork":           !strings.EqualFold(fullName, base),
		"html_url":       "https://github.example/" + fullName,
		"clone_url":      "https://github.example/" + fullName + ".git",
		"default_branch": "main",
	}
	return b
}
