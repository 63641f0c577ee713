// Package forgetest is a fake GitHub REST API for tests. It serves the
// endpoints byop uses, checks every request the way GitHub would (token,
// strict JSON shapes, field limits) and records what it was sent.
//
// By default it takes one token (Token), a PAT. After EnableApp it acts as
// GitHub does for a GitHub App: the App finds its installation on a
// repository and fetches installation tokens with its JWT, which the fake
// verifies with the App's public key, and the repository endpoints accept
// only unexpired installation tokens of the repository's installation.
// InstallationTokens lists the tokens issued and the requests each
// authenticated.
//
// Requests that break GitHub's rules (no token, an unknown route, a body
// GitHub would reject, editing someone else's comment) are answered with an
// error status and recorded in Errors, which tests assert is empty. Answers
// that depend only on state, such as 404 for a deleted comment, are ordinary
// answers and are not recorded as errors.
package forgetest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/byop-dev/byop/forge"
)

// Comment is an issue comment as the fake holds it.
type Comment struct {
	ID     int64
	Body   string
	Edits  int    // how many times it was edited after creation
	Author string // login of who wrote it
}

// DefaultLogin is the login the fake's token acts as.
const DefaultLogin = "byop-bot"

// Server is a fake GitHub REST API. Its methods are safe for concurrent use.
type Server struct {
	srv   *httptest.Server
	token string
	login string

	mu        sync.Mutex
	nextID    int64
	statuses  map[string][]forge.Status // "owner/repo@sha"
	comments  map[string][]*comment     // "owner/repo#pr", oldest first
	byID      map[int64]*comment
	perms     map[string]string            // "owner/repo/user"
	reactions map[int64][]string           // comment ID -> contents, in order
	pulls     map[string]forge.PullRequest // "owner/repo#n"
	app       *app                         // nil until EnableApp
	errs      []string
	requests  []string
	fail      struct {
		n       int
		status  int
		headers map[string]string
	}
}

type comment struct {
	Comment
	repo    string // "owner/repo", lower case
	pr      int
	created time.Time
	updated time.Time
}

// NewServer starts a fake GitHub API, closed when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		token:     "ghs_" + rand.Text(),
		login:     DefaultLogin,
		nextID:    1000,
		statuses:  map[string][]forge.Status{},
		comments:  map[string][]*comment{},
		byID:      map[int64]*comment{},
		perms:     map[string]string{},
		reactions: map[int64][]string{},
		pulls:     map[string]forge.PullRequest{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// URL returns the API's base URL, to give to forge.New. The API answers both
// at the root and under /api/v3/, as GitHub Enterprise Server does.
func (s *Server) URL() string { return s.srv.URL }

// Token returns the token the fake expects, as "Bearer <token>" or
// "token <token>" in the Authorization header, until EnableApp is called.
func (s *Server) Token() string { return s.token }

// Login returns the login the token acts as: the author of comments byop
// creates.
func (s *Server) Login() string { return s.login }

// Statuses returns the statuses set on owner/repo at sha, in the order received.
func (s *Server) Statuses(owner, repo, sha string) []forge.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.statuses[repoKey(owner, repo)+"@"+strings.ToLower(sha)])
}

// Comments returns the current comments on pull request pr, oldest first.
func (s *Server) Comments(owner, repo string, pr int) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, c := range s.comments[prKey(owner, repo, pr)] {
		out = append(out, c.Comment)
	}
	return out
}

// SetPermission sets user's permission on owner/repo ("admin", "write",
// "read" or "none"). Users never set have "none".
func (s *Server) SetPermission(owner, repo, user, perm string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perms[repoKey(owner, repo)+"/"+strings.ToLower(user)] = perm
}

// Reactions returns the reactions added to a comment, in order.
func (s *Server) Reactions(owner, repo string, commentID int64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.byID[commentID]
	if c == nil || c.repo != repoKey(owner, repo) {
		return nil
	}
	return slices.Clone(s.reactions[commentID])
}

// AddComment seeds a comment by author on pull request pr and returns its ID.
func (s *Server) AddComment(owner, repo string, pr int, author, body string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addComment(repoKey(owner, repo), pr, author, body).ID
}

// DeleteComment removes a comment, as someone deleting it on GitHub would.
func (s *Server) DeleteComment(owner, repo string, commentID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.byID[commentID]
	if c == nil || c.repo != repoKey(owner, repo) {
		return
	}
	delete(s.byID, commentID)
	key := c.repo + "#" + strconv.Itoa(c.pr)
	s.comments[key] = slices.DeleteFunc(s.comments[key], func(x *comment) bool { return x == c })
}

// Errors returns every request the fake rejected, with why.
func (s *Server) Errors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

// Requests returns every request received, as "METHOD /path?query", in order.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// FailNext answers the next n requests, whatever they are, with status and
// headers (e.g. {"Retry-After": "1"}) and a GitHub-style error body.
func (s *Server) FailNext(n int, status int, headers map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail.n, s.fail.status, s.fail.headers = n, status, headers
}

// DefaultWait is how long WaitFor polls before failing the test, unless the
// test's deadline comes sooner.
const DefaultWait = 2 * time.Minute

// WaitFor polls cond until it returns true, failing the test if it does not
// within DefaultWait (or shortly before the test's deadline). Call it from
// the test's goroutine.
func (s *Server) WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timeout := DefaultWait
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := d.Deadline(); ok {
			if left := time.Until(deadline) - 5*time.Second; left < timeout {
				timeout = max(left, time.Second)
			}
		}
	}
	end := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s (requests rejected by fake GitHub: %q)", timeout, what, s.Errors())
		}
		<-tick.C
	}
}

func repoKey(owner, repo string) string { return strings.ToLower(owner + "/" + repo) }

func prKey(owner, repo string, pr int) string { return repoKey(owner, repo) + "#" + strconv.Itoa(pr) }

// addComment needs s.mu held.
func (s *Server) addComment(repo string, pr int, author, body string) *comment {
	s.nextID++
	now := time.Now().UTC().Truncate(time.Second)
	c := &comment{Comment: Comment{ID: s.nextID, Body: body, Author: author}, repo: repo, pr: pr, created: now, updated: now}
	key := repo + "#" + strconv.Itoa(pr)
	s.comments[key] = append(s.comments[key], c)
	s.byID[c.ID] = c
	return c
}

// apiError is an answer other than success. When recorded, the request
// broke GitHub's rules and it is added to Errors.
type apiError struct {
	status   int
	message  string
	recorded bool
}

func reject(status int, format string, args ...any) *apiError {
	return &apiError{status: status, message: fmt.Sprintf(format, args...), recorded: true}
}

func answer(status int, message string) *apiError {
	return &apiError{status: status, message: message}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r.Method+" "+r.URL.RequestURI())

	if s.fail.n > 0 {
		s.fail.n--
		for k, v := range s.fail.headers {
			w.Header().Set(k, v)
		}
		writeJSON(w, s.fail.status, map[string]string{"message": "injected failure: " + http.StatusText(s.fail.status)})
		return
	}

	status, body, aerr := s.route(r)
	if aerr != nil {
		if aerr.recorded {
			s.errs = append(s.errs, fmt.Sprintf("%s %s: %d: %s", r.Method, r.URL.Path, aerr.status, aerr.message))
		}
		writeJSON(w, aerr.status, map[string]string{"message": aerr.message})
		return
	}
	if pb, ok := body.(pagedBody); ok && pb.link != "" {
		w.Header().Set("Link", pb.link)
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// route checks r and dispatches it; it needs s.mu held.
func (s *Server) route(r *http.Request) (int, any, *apiError) {
	seg := strings.Split(strings.Trim(apiPath(r), "/"), "/")
	m := r.Method
	repoRoute := len(seg) >= 4 && seg[0] == "repos" && seg[1] != "" && seg[2] != ""

	// Endpoints for the App itself take its JWT, not a token.
	if seg[0] == "app" || (repoRoute && len(seg) == 4 && seg[3] == "installation") {
		if err := s.checkJWT(r); err != nil {
			return 0, nil, err
		}
		if err := checkUserAgent(r); err != nil {
			return 0, nil, err
		}
		switch {
		case m == http.MethodGet && len(seg) == 1:
			return s.appJSON()
		case m == http.MethodGet && repoRoute:
			return s.findInstallation(seg[1], seg[2])
		case m == http.MethodPost && len(seg) == 4 && seg[1] == "installations" && seg[3] == "access_tokens":
			id, err := strconv.ParseInt(seg[2], 10, 64)
			if err != nil || id <= 0 {
				return 0, nil, reject(http.StatusNotFound, "installation id %q is not a positive integer", seg[2])
			}
			return s.createInstallationToken(r, id)
		}
		return 0, nil, reject(http.StatusNotFound, "no such route")
	}

	var owner, repo string
	if repoRoute {
		owner, repo = seg[1], seg[2]
	}
	if err := s.checkAuth(r, owner, repo); err != nil {
		return 0, nil, err
	}
	if err := checkUserAgent(r); err != nil {
		return 0, nil, err
	}
	if !repoRoute {
		return 0, nil, reject(http.StatusNotFound, "no such route")
	}
	rest := seg[3:]
	switch {
	case m == http.MethodPost && len(rest) == 2 && rest[0] == "statuses":
		return s.createStatus(r, owner, repo, rest[1])
	case len(rest) == 3 && rest[0] == "issues" && rest[2] == "comments" && rest[1] != "comments":
		pr, err := strconv.Atoi(rest[1])
		if err != nil || pr <= 0 {
			return 0, nil, reject(http.StatusNotFound, "issue number %q is not a positive integer", rest[1])
		}
		switch m {
		case http.MethodGet:
			return s.listComments(r, owner, repo, pr)
		case http.MethodPost:
			return s.createComment(r, owner, repo, pr)
		}
	case m == http.MethodPatch && len(rest) == 3 && rest[0] == "issues" && rest[1] == "comments":
		id, err := strconv.ParseInt(rest[2], 10, 64)
		if err != nil {
			return 0, nil, reject(http.StatusNotFound, "comment id %q is not an integer", rest[2])
		}
		return s.editComment(r, owner, repo, id)
	case m == http.MethodPost && len(rest) == 4 && rest[0] == "issues" && rest[1] == "comments" && rest[3] == "reactions":
		id, err := strconv.ParseInt(rest[2], 10, 64)
		if err != nil {
			return 0, nil, reject(http.StatusNotFound, "comment id %q is not an integer", rest[2])
		}
		return s.react(r, owner, repo, id)
	case m == http.MethodGet && len(rest) == 3 && rest[0] == "collaborators" && rest[2] == "permission":
		return s.permission(owner, repo, rest[1])
	case m == http.MethodGet && len(rest) == 2 && rest[0] == "pulls":
		n, err := strconv.Atoi(rest[1])
		if err != nil || n <= 0 {
			return 0, nil, reject(http.StatusNotFound, "pull request number %q is not a positive integer", rest[1])
		}
		return s.pullRequest(owner, repo, n)
	}
	return 0, nil, reject(http.StatusNotFound, "no such route")
}

// apiPath returns r's path without the "/api/v3" of GitHub Enterprise Server.
func apiPath(r *http.Request) string {
	if p, ok := strings.CutPrefix(r.URL.Path, "/api/v3/"); ok {
		return "/" + p
	}
	return r.URL.Path
}

func checkUserAgent(r *http.Request) *apiError {
	if r.Header.Get("User-Agent") == "" {
		return reject(http.StatusForbidden, "no User-Agent header (GitHub requires one)")
	}
	return nil
}

// checkAuth checks the token of a request for owner/repo ("" for other
// routes): the PAT, or once EnableApp was called, an installation token of
// the repository's installation that has not expired.
func (s *Server) checkAuth(r *http.Request, owner, repo string) *apiError {
	if s.tokenInURL(r) {
		return reject(http.StatusUnauthorized, "token sent in the URL")
	}
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	switch {
	case auth == "":
		return reject(http.StatusUnauthorized, "no Authorization header")
	case !ok || (scheme != "Bearer" && scheme != "token"):
		return reject(http.StatusUnauthorized, "Authorization is not \"Bearer <token>\" or \"token <token>\"")
	case s.app != nil:
		return s.checkInstallationToken(r, tok, owner, repo)
	case tok != s.token:
		return reject(http.StatusUnauthorized, "wrong token")
	}
	return nil
}

// decode reads a JSON body strictly into v: only the fields GitHub
// documents, exactly one value.
func decode(r *http.Request, v any) *apiError {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return reject(http.StatusUnsupportedMediaType, "Content-Type %q is not application/json", ct)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return reject(http.StatusBadRequest, "reading body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return reject(http.StatusBadRequest, "body %s does not decode: %v", b, err)
	}
	if dec.More() {
		return reject(http.StatusBadRequest, "body %s has trailing data", b)
	}
	return nil
}

func (s *Server) user(login string) map[string]any {
	typ := "User"
	if login == s.login {
		typ = "Bot"
	}
	return map[string]any{"login": login, "id": len(login)*7919 + 1, "type": typ}
}

func (s *Server) createStatus(r *http.Request, owner, repo, sha string) (int, any, *apiError) {
	var req struct {
		State       *string `json:"state"`
		TargetURL   *string `json:"target_url"`
		Description *string `json:"description"`
		Context     *string `json:"context"`
	}
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if len(sha) != 40 {
		return 0, nil, reject(http.StatusUnprocessableEntity, "sha %q is not 40 hex digits", sha)
	}
	if _, err := hex.DecodeString(sha); err != nil {
		return 0, nil, reject(http.StatusUnprocessableEntity, "sha %q is not 40 hex digits", sha)
	}
	st := forge.Status{SHA: strings.ToLower(sha)}
	if req.State == nil || !forge.State(*req.State).Valid() {
		return 0, nil, reject(http.StatusUnprocessableEntity, "state %v is not pending, success, failure or error", deref(req.State))
	}
	st.State = forge.State(*req.State)
	if req.Context == nil || *req.Context == "" {
		return 0, nil, reject(http.StatusUnprocessableEntity, "context is missing or empty")
	}
	st.Context = *req.Context
	if req.Description != nil {
		if n := utf8.RuneCountInString(*req.Description); n > forge.MaxDescription {
			return 0, nil, reject(http.StatusUnprocessableEntity, "description is %d characters, more than %d", n, forge.MaxDescription)
		}
		st.Description = *req.Description
	}
	if req.TargetURL != nil {
		u, err := url.Parse(*req.TargetURL)
		if err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return 0, nil, reject(http.StatusUnprocessableEntity, "target_url %q is not an absolute http(s) URL", *req.TargetURL)
		}
		st.TargetURL = *req.TargetURL
	}
	key := repoKey(owner, repo) + "@" + st.SHA
	s.statuses[key] = append(s.statuses[key], st)
	s.nextID++
	now := time.Now().UTC().Format(time.RFC3339)
	return http.StatusCreated, map[string]any{
		"id":          s.nextID,
		"url":         s.srv.URL + "/repos/" + owner + "/" + repo + "/statuses/" + sha,
		"state":       st.State,
		"description": st.Description,
		"target_url":  st.TargetURL,
		"context":     st.Context,
		"created_at":  now,
		"updated_at":  now,
		"creator":     s.user(s.login),
	}, nil
}

func deref(p *string) string {
	if p == nil {
		return "(missing)"
	}
	return strconv.Quote(*p)
}

func (s *Server) commentJSON(c *comment, owner, repo string) map[string]any {
	base := s.srv.URL + "/repos/" + owner + "/" + repo
	assoc := "NONE"
	if c.Author != s.login {
		assoc = "CONTRIBUTOR"
	}
	return map[string]any{
		"id":                 c.ID,
		"node_id":            fmt.Sprintf("IC_%d", c.ID),
		"url":                fmt.Sprintf("%s/issues/comments/%d", base, c.ID),
		"html_url":           fmt.Sprintf("https://github.example/%s/%s/pull/%d#issuecomment-%d", owner, repo, c.pr, c.ID),
		"issue_url":          fmt.Sprintf("%s/issues/%d", base, c.pr),
		"body":               c.Body,
		"user":               s.user(c.Author),
		"author_association": assoc,
		"created_at":         c.created.Format(time.RFC3339),
		"updated_at":         c.updated.Format(time.RFC3339),
	}
}

type commentBody struct {
	Body *string `json:"body"`
}

func (b commentBody) check() *apiError {
	if b.Body == nil || strings.TrimSpace(*b.Body) == "" {
		return reject(http.StatusUnprocessableEntity, "comment body is missing or empty")
	}
	if n := utf8.RuneCountInString(*b.Body); n > 65536 {
		return reject(http.StatusUnprocessableEntity, "comment body is %d characters, more than 65536", n)
	}
	return nil
}

func (s *Server) createComment(r *http.Request, owner, repo string, pr int) (int, any, *apiError) {
	var req commentBody
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if err := req.check(); err != nil {
		return 0, nil, err
	}
	c := s.addComment(repoKey(owner, repo), pr, s.login, *req.Body)
	return http.StatusCreated, s.commentJSON(c, owner, repo), nil
}

func (s *Server) editComment(r *http.Request, owner, repo string, id int64) (int, any, *apiError) {
	var req commentBody
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if err := req.check(); err != nil {
		return 0, nil, err
	}
	c := s.byID[id]
	if c == nil || c.repo != repoKey(owner, repo) {
		return 0, nil, answer(http.StatusNotFound, "Not Found")
	}
	if c.Author != s.login {
		return 0, nil, reject(http.StatusForbidden, "comment %d was written by %s, not %s", id, c.Author, s.login)
	}
	c.Body = *req.Body
	c.Edits++
	c.updated = time.Now().UTC().Truncate(time.Second)
	return http.StatusOK, s.commentJSON(c, owner, repo), nil
}

func (s *Server) listComments(r *http.Request, owner, repo string, pr int) (int, any, *apiError) {
	q := r.URL.Query()
	perPage, page := 30, 1
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, nil, reject(http.StatusUnprocessableEntity, "per_page %q is not a positive integer", v)
		}
		perPage = min(n, 100)
	}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, nil, reject(http.StatusUnprocessableEntity, "page %q is not a positive integer", v)
		}
		page = n
	}
	all := s.comments[prKey(owner, repo, pr)]
	last := max(1, (len(all)+perPage-1)/perPage)
	out := []map[string]any{}
	for i := (page - 1) * perPage; i < len(all) && i < page*perPage; i++ {
		out = append(out, s.commentJSON(all[i], owner, repo))
	}
	return http.StatusOK, pagedBody{items: out, link: s.links(r, page, last)}, nil
}

// pagedBody is a list answer with a Link header.
type pagedBody struct {
	items any
	link  string
}

func (p pagedBody) MarshalJSON() ([]byte, error) { return json.Marshal(p.items) }

// links builds GitHub's Link header for page of last.
func (s *Server) links(r *http.Request, page, last int) string {
	at := func(p int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(p))
		return s.srv.URL + r.URL.Path + "?" + q.Encode()
	}
	var parts []string
	if page < last {
		parts = append(parts, fmt.Sprintf("<%s>; rel=\"next\"", at(page+1)), fmt.Sprintf("<%s>; rel=\"last\"", at(last)))
	}
	if page > 1 {
		parts = append(parts, fmt.Sprintf("<%s>; rel=\"prev\"", at(page-1)), fmt.Sprintf("<%s>; rel=\"first\"", at(1)))
	}
	return strings.Join(parts, ", ")
}

var _ json.Marshaler = pagedBody{}

func (s *Server) react(r *http.Request, owner, repo string, id int64) (int, any, *apiError) {
	var req struct {
		Content *string `json:"content"`
	}
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	valid := []string{"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"}
	if req.Content == nil || !slices.Contains(valid, *req.Content) {
		return 0, nil, reject(http.StatusUnprocessableEntity, "reaction content %s is not one of %q", deref(req.Content), valid)
	}
	c := s.byID[id]
	if c == nil || c.repo != repoKey(owner, repo) {
		return 0, nil, answer(http.StatusNotFound, "Not Found")
	}
	status := http.StatusOK // GitHub answers 200 for a reaction already there
	if !slices.Contains(s.reactions[id], *req.Content) {
		s.reactions[id] = append(s.reactions[id], *req.Content)
		status = http.StatusCreated
	}
	s.nextID++
	return status, map[string]any{
		"id":         s.nextID,
		"node_id":    fmt.Sprintf("REA_%d", s.nextID),
		"user":       s.user(s.login),
		"content":    *req.Content,
		"created_at": time.Now().UTC().Format(time.RFC3339),
	}, nil
}

func (s *Server) permission(owner, repo, user string) (int, any, *apiError) {
	perm, ok := s.perms[repoKey(owner, repo)+"/"+strings.ToLower(user)]
	if !ok {
		perm = "none"
	}
	return http.StatusOK, map[string]any{
		"permission": perm,
		"role_name":  perm,
		"user":       s.user(user),
	}, nil
}
