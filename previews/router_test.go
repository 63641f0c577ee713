package previews

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func upstream(t *testing.T, body string) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body+" host="+r.Host+" path="+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

func get(t *testing.T, h http.Handler, host, path string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("GET", "http://"+host+path, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestRouterRoutesByHost(t *testing.T) {
	r := NewRouter(slog.New(slog.DiscardHandler))
	r.Set("pr-1.web.acme.localhost", upstream(t, "one"))
	r.Set("PR-2.web.acme.localhost", upstream(t, "two"))

	tests := []struct {
		name, host, want string
		code             int
	}{
		{"first preview", "pr-1.web.acme.localhost:8081", "one host=pr-1.web.acme.localhost:8081 path=/x", 200},
		{"host is case-insensitive", "pr-2.WEB.acme.localhost", "two host=pr-2.WEB.acme.localhost path=/x", 200},
		{"unknown host", "pr-3.web.acme.localhost", "No preview here", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, r, tt.host, "/x")
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Errorf("got %d %q, want %d containing %q", code, body, tt.code, tt.want)
			}
		})
	}
}

func TestRouterSwitchAndRemove(t *testing.T) {
	r := NewRouter(slog.New(slog.DiscardHandler))
	host := "pr-1.web.acme.localhost"
	r.Set(host, upstream(t, "old"))
	r.Set(host, upstream(t, "new"))
	if _, body := get(t, r, host, "/"); !strings.HasPrefix(body, "new") {
		t.Errorf("after switch got %q, want the new upstream", body)
	}
	r.Remove(host)
	if code, _ := get(t, r, host, "/"); code != 404 {
		t.Errorf("after Remove got %d, want 404", code)
	}
}

func TestRouterUpstreamDown(t *testing.T) {
	r := NewRouter(slog.New(slog.DiscardHandler))
	// Port 1 on loopback refuses connections.
	r.Set("pr-1.a.b.localhost", &url.URL{Scheme: "http", Host: "127.0.0.1:1"})
	code, body := get(t, r, "pr-1.a.b.localhost", "/")
	if code != http.StatusBadGateway || !strings.Contains(body, "not answering") {
		t.Errorf("got %d %q, want 502 with a page", code, body)
	}
}
