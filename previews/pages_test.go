package previews

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPages(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	key := Key{"acme", "web", 7}
	b, _ := s.StartBuild(ctx, "d1", key, sha1)
	s.AppendLog(ctx, b.ID, []string{"#1 [1/2] FROM busybox", "<script>alert(1)</script>"})
	s.SetBuildState(ctx, b.ID, Failed, "build failed at [2/2] RUN make: exit code: 2")
	s.AddReport(ctx, Report{Owner: "acme", Repo: "web", SHA: sha1, Context: "byop/build", State: "failure", Description: "Build failed"})
	s.SavePreview(ctx, Preview{Key: key, SHA: "fedcba9876543210fedcba9876543210fedcba98", State: Running, URL: "http://pr-7.web.acme.localhost:8081/"})

	mux := http.NewServeMux()
	NewPages(s, slog.New(slog.DiscardHandler)).Register(mux)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}

	tests := []struct {
		name, path string
		code       int
		want       []string
		not        []string
	}{
		{"index lists previews and builds", "/", 200, []string{"acme/web#7", "http://pr-7.web.acme.localhost:8081/", "/builds/1"}, nil},
		{"build page shows reason, statuses, log and the live preview", "/builds/1", 200,
			[]string{"exit code: 2", "byop/build", "Build failed", "#1 [1/2] FROM busybox", "&lt;script&gt;", "fedcba9"}, []string{"<script>alert"}},
		{"raw log", "/builds/1/log", 200, []string{"#1 [1/2] FROM busybox\n<script>alert(1)</script>\n"}, nil},
		{"unknown build", "/builds/99", 404, []string{"no such build"}, nil},
		{"bad id", "/builds/x", 404, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(tt.path)
			if code != tt.code {
				t.Errorf("%s: %d, want %d", tt.path, code, tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("%s lacks %q:\n%s", tt.path, w, body)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(body, w) {
					t.Errorf("%s contains %q", tt.path, w)
				}
			}
		})
	}
}
