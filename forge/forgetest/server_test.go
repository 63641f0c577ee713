package forgetest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/byop-dev/byop/forge/forgetest"
)

const sha = "0123456789abcdef0123456789abcdef01234567"

// do sends a raw request to the fake, authenticated unless auth is "-".
func do(t *testing.T, s *forgetest.Server, method, path, auth, body string) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	switch auth {
	case "":
		req.Header.Set("Authorization", "Bearer "+s.Token())
	case "-":
	default:
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestRejectsWhatGitHubWould(t *testing.T) {
	statuses := "/repos/acme/app/statuses/" + sha
	tests := []struct {
		name, method, path, auth, body string
		wantCode                       int
		wantErr                        string
	}{
		{"no token", "POST", statuses, "-", `{"state":"pending","context":"c"}`, 401, "no Authorization header"},
		{"wrong token", "POST", statuses, "Bearer nope", `{"state":"pending","context":"c"}`, 401, "wrong token"},
		{"token in a basic header", "POST", statuses, "Basic abc", `{"state":"pending","context":"c"}`, 401, "is not"},
		{"unknown route", "GET", "/user/repos", "", "", 404, "no such route"},
		{"wrong method", "DELETE", statuses, "", "", 404, "no such route"},
		{"unknown state", "POST", statuses, "", `{"state":"done","context":"c"}`, 422, `state "done"`},
		{"missing state", "POST", statuses, "", `{"context":"c"}`, 422, "state (missing)"},
		{"empty context", "POST", statuses, "", `{"state":"pending","context":""}`, 422, "context is missing"},
		{"long description", "POST", statuses, "", `{"state":"pending","context":"c","description":"` + strings.Repeat("é", 141) + `"}`, 422, "141 characters"},
		{"relative target_url", "POST", statuses, "", `{"state":"pending","context":"c","target_url":"/logs"}`, 422, "target_url"},
		{"non-http target_url", "POST", statuses, "", `{"state":"pending","context":"c","target_url":"javascript:alert(1)"}`, 422, "target_url"},
		{"short sha", "POST", "/repos/acme/app/statuses/abc123", "", `{"state":"pending","context":"c"}`, 422, "40 hex"},
		{"unknown field", "POST", statuses, "", `{"state":"pending","context":"c","colour":"red"}`, 400, "unknown field"},
		{"two JSON values", "POST", statuses, "", `{"state":"pending","context":"c"}{}`, 400, "trailing data"},
		{"empty comment", "POST", "/repos/acme/app/issues/3/comments", "", `{"body":"  "}`, 422, "body is missing or empty"},
		{"comment without body", "POST", "/repos/acme/app/issues/3/comments", "", `{}`, 422, "body is missing or empty"},
		{"bad reaction", "POST", "/repos/acme/app/issues/comments/1001/reactions", "", `{"content":"thumbsup"}`, 422, "reaction content"},
		{"bad page", "GET", "/repos/acme/app/issues/3/comments?page=0", "", "", 422, "page"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := forgetest.NewServer(t)
			resp := do(t, s, tt.method, tt.path, tt.auth, tt.body)
			if resp.StatusCode != tt.wantCode {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantCode)
			}
			errs := s.Errors()
			if len(errs) != 1 || !strings.Contains(errs[0], tt.wantErr) {
				t.Errorf("Errors() = %q, want one containing %q", errs, tt.wantErr)
			}
			if got := s.Statuses("acme", "app", sha); len(got) != 0 {
				t.Errorf("recorded statuses %+v from a rejected request", got)
			}
		})
	}
}

func TestAcceptsTokenSchemesAndEnterprisePaths(t *testing.T) {
	s := forgetest.NewServer(t)
	body := `{"state":"success","context":"byop/build","description":"ok","target_url":"https://x.example/1"}`
	for _, tc := range []struct{ path, auth string }{
		{"/repos/acme/app/statuses/" + sha, "token " + s.Token()},
		{"/api/v3/repos/acme/app/statuses/" + sha, "Bearer " + s.Token()},
	} {
		if resp := do(t, s, "POST", tc.path, tc.auth, body); resp.StatusCode != http.StatusCreated {
			t.Errorf("POST %s with %q: status %d, want 201", tc.path, strings.Fields(tc.auth)[0], resp.StatusCode)
		}
	}
	if got := s.Statuses("ACME", "App", strings.ToUpper(sha)); len(got) != 2 {
		t.Errorf("statuses = %+v, want two (owner, repo and sha case-insensitive)", got)
	}
	if errs := s.Errors(); len(errs) != 0 {
		t.Errorf("Errors() = %q", errs)
	}
}

func TestEditingCommentsFollowsGitHub(t *testing.T) {
	s := forgetest.NewServer(t)
	theirs := s.AddComment("acme", "app", 3, "alice", "hello")
	mine := s.AddComment("acme", "app", 3, s.Login(), "mine")

	if resp := do(t, s, "PATCH", fmt.Sprintf("/repos/acme/app/issues/comments/%d", mine), "", `{"body":"edited"}`); resp.StatusCode != 200 {
		t.Errorf("editing own comment: status %d", resp.StatusCode)
	}
	if resp := do(t, s, "PATCH", "/repos/acme/app/issues/comments/999999", "", `{"body":"x"}`); resp.StatusCode != 404 {
		t.Errorf("editing a missing comment: status %d, want 404", resp.StatusCode)
	}
	if resp := do(t, s, "PATCH", fmt.Sprintf("/repos/other/app/issues/comments/%d", mine), "", `{"body":"x"}`); resp.StatusCode != 404 {
		t.Errorf("editing a comment through another repo: status %d, want 404", resp.StatusCode)
	}
	if errs := s.Errors(); len(errs) != 0 {
		t.Errorf("a 404 for a missing comment is an answer, not a rejected request: %q", errs)
	}
	if resp := do(t, s, "PATCH", fmt.Sprintf("/repos/acme/app/issues/comments/%d", theirs), "", `{"body":"hijack"}`); resp.StatusCode != 403 {
		t.Errorf("editing alice's comment: status %d, want 403", resp.StatusCode)
	}
	if errs := s.Errors(); len(errs) != 1 || !strings.Contains(errs[0], "written by alice") {
		t.Errorf("Errors() = %q, want the edit of alice's comment", errs)
	}
	got := s.Comments("acme", "app", 3)
	if len(got) != 2 || got[0].Body != "hello" || got[0].Edits != 0 || got[1].Body != "edited" || got[1].Edits != 1 {
		t.Errorf("comments = %+v", got)
	}
}

func TestListsCommentsInPages(t *testing.T) {
	s := forgetest.NewServer(t)
	for i := range 5 {
		s.AddComment("acme", "app", 3, "alice", fmt.Sprint("c", i))
	}
	var bodies []string
	next := "/repos/acme/app/issues/3/comments?per_page=2"
	var links []string
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		resp := do(t, s, "GET", next, "", "")
		var page []struct {
			Body string `json:"body"`
			User struct {
				Login string `json:"login"`
			} `json:"user"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
			t.Fatal(err)
		}
		for _, c := range page {
			bodies = append(bodies, c.Body+"/"+c.User.Login)
		}
		link := resp.Header.Get("Link")
		links = append(links, link)
		next = ""
		for _, part := range strings.Split(link, ",") {
			if u, ok := strings.CutSuffix(strings.TrimSpace(part), `>; rel="next"`); ok {
				next = strings.TrimPrefix(strings.TrimPrefix(u, "<"), s.URL())
			}
		}
	}
	if got := strings.Join(bodies, " "); got != "c0/alice c1/alice c2/alice c3/alice c4/alice" {
		t.Errorf("bodies = %s", got)
	}
	if len(links) != 3 || !strings.Contains(links[0], `page=3&per_page=2>; rel="last"`) || !strings.Contains(links[2], `page=2&per_page=2>; rel="prev"`) {
		t.Errorf("Link headers = %q", links)
	}
}

func TestFailNextAnswersTheNextRequests(t *testing.T) {
	s := forgetest.NewServer(t)
	s.FailNext(2, http.StatusTooManyRequests, map[string]string{"Retry-After": "7"})
	path := "/repos/acme/app/collaborators/alice/permission"
	for i, want := range []int{429, 429, 200} {
		resp := do(t, s, "GET", path, "", "")
		if resp.StatusCode != want {
			t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
		if want == 429 && resp.Header.Get("Retry-After") != "7" {
			t.Errorf("request %d: Retry-After %q", i, resp.Header.Get("Retry-After"))
		}
	}
	if got := s.Requests(); len(got) != 3 || got[2] != "GET "+path {
		t.Errorf("Requests() = %q", got)
	}
}

func TestWaitForPollsUntilTrue(t *testing.T) {
	s := forgetest.NewServer(t)
	var done atomic.Bool
	time.AfterFunc(30*time.Millisecond, func() { done.Store(true) })
	start := time.Now()
	s.WaitFor(t, "the flag", done.Load)
	if !done.Load() || time.Since(start) < 20*time.Millisecond {
		t.Errorf("WaitFor returned after %s with the flag %v", time.Since(start), done.Load())
	}
}
