package deployers

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

const (
	revA = "0123456789abcdef0123456789abcdef01234567"
	revB = "fedcba9876543210fedcba9876543210fedcba98"
	dgst = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
)

func testSpec() Spec {
	return Spec{
		Project:  "byop-acme-web-pr-7",
		Image:    "127.0.0.1:5000/acme/web@" + dgst,
		Revision: revA,
		Port:     8080,
		Labels:   map[string]string{"byop.repo": "acme/web", "byop.pr": "7", "byop.sha": revA},
	}
}

// renderMap renders the compose file for specs and reads it back as plain
// YAML, the way compose sees it.
func renderMap(t *testing.T, specs ...Spec) map[string]any {
	t.Helper()
	var f composeFile
	for _, s := range specs {
		f = withRevision(f, s)
	}
	b, err := marshalCompose(f)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("rendered compose file is not YAML: %v\n%s", err, b)
	}
	return doc
}

func TestComposeFileRunsImageByDigestOnLoopbackWithLabels(t *testing.T) {
	s := testSpec()
	doc := renderMap(t, s)

	if _, ok := doc["version"]; ok {
		t.Errorf("compose file has a version key")
	}
	services := doc["services"].(map[string]any)
	if len(services) != 1 {
		t.Fatalf("services = %v, want one", services)
	}
	svc, ok := services["app-0123456789ab"].(map[string]any)
	if !ok {
		t.Fatalf("no service app-0123456789ab in %v", services)
	}
	if _, ok := svc["build"]; ok {
		t.Errorf("service has a build key")
	}
	if svc["image"] != s.Image {
		t.Errorf("image = %v, want %v", svc["image"], s.Image)
	}
	if got, want := svc["ports"], []any{"127.0.0.1::8080/tcp"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ports = %v, want %v", got, want)
	}
	wantLabels := map[string]any{
		"byop.repo": "acme/web", "byop.pr": "7", "byop.sha": revA,
		LabelProject: s.Project, LabelRevision: revA, LabelPort: "8080",
	}
	if got := svc["labels"]; !reflect.DeepEqual(got, wantLabels) {
		t.Errorf("service labels = %v, want %v", got, wantLabels)
	}
	net := doc["networks"].(map[string]any)["default"].(map[string]any)
	wantNet := map[string]any{"byop.repo": "acme/web", "byop.pr": "7", "byop.sha": revA, LabelProject: s.Project}
	if got := net["labels"]; !reflect.DeepEqual(got, wantNet) {
		t.Errorf("network labels = %v, want %v", got, wantNet)
	}
	if s.Labels[LabelProject] != "" {
		t.Errorf("rendering changed the Spec's labels: %v", s.Labels)
	}
}

func TestComposeFileKeepsOtherRevisionsAndTheFirstNetwork(t *testing.T) {
	a := testSpec()
	b := testSpec()
	b.Revision = revB
	b.Image = "127.0.0.1:5000/acme/web@sha256:" + strings.Repeat("b", 64)
	b.Labels = map[string]string{"byop.sha": revB}

	doc := renderMap(t, a, b)
	services := doc["services"].(map[string]any)
	if len(services) != 2 || services["app-0123456789ab"] == nil || services["app-fedcba987654"] == nil {
		t.Fatalf("services = %v, want both revisions", services)
	}
	if got := services["app-fedcba987654"].(map[string]any)["image"]; got != b.Image {
		t.Errorf("second revision's image = %v", got)
	}
	net := doc["networks"].(map[string]any)["default"].(map[string]any)["labels"].(map[string]any)
	if net["byop.sha"] != revA {
		t.Errorf("network labels changed with the second revision: %v", net)
	}
}

func TestComposeFileEscapesDollarAndReadsItBack(t *testing.T) {
	s := testSpec()
	s.Labels = map[string]string{"byop.branch": "feature/${HOME}$x"}
	f := withRevision(composeFile{}, s)
	b, err := marshalCompose(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "feature/$${HOME}$$x") {
		t.Errorf("dollar not escaped for compose:\n%s", b)
	}
	back, err := unmarshalCompose(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, f) {
		t.Errorf("read back %+v, want %+v", back, f)
	}
}

func TestServiceNameIsAppAndShortRevision(t *testing.T) {
	for rev, want := range map[string]string{
		revA:                    "app-0123456789ab",
		strings.Repeat("c", 64): "app-cccccccccccc",
	} {
		if got := serviceName(rev); got != want {
			t.Errorf("serviceName(%q) = %q, want %q", rev, got, want)
		}
	}
}

func TestSpecValidation(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Spec)
		ok     bool
	}{
		{"accepts a sanitised spec", func(*Spec) {}, true},
		{"accepts a sha256 commit", func(s *Spec) { s.Revision = strings.Repeat("e", 64) }, true},
		{"accepts no labels", func(s *Spec) { s.Labels = nil }, true},
		{"rejects an uppercase project", func(s *Spec) { s.Project = "Byop-x" }, false},
		{"rejects a project with a slash", func(s *Spec) { s.Project = "byop/x" }, false},
		{"rejects a project starting with a dash", func(s *Spec) { s.Project = "-p" }, false},
		{"rejects an image by tag", func(s *Spec) { s.Image = "127.0.0.1:5000/acme/web:latest" }, false},
		{"rejects an image starting with a dash", func(s *Spec) { s.Image = "-q@" + dgst }, false},
		{"rejects a short digest", func(s *Spec) { s.Image = "acme/web@sha256:abc" }, false},
		{"rejects an abbreviated revision", func(s *Spec) { s.Revision = "0123456" }, false},
		{"rejects an uppercase revision", func(s *Spec) { s.Revision = strings.ToUpper(revA) }, false},
		{"rejects port 0", func(s *Spec) { s.Port = 0 }, false},
		{"rejects a port above 65535", func(s *Spec) { s.Port = 70000 }, false},
		{"rejects overriding the revision label", func(s *Spec) { s.Labels = map[string]string{LabelRevision: revB} }, false},
		{"rejects compose's labels", func(s *Spec) { s.Labels = map[string]string{"com.docker.compose.project": "x"} }, false},
		{"rejects a label key with a space", func(s *Spec) { s.Labels = map[string]string{"a b": "x"} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testSpec()
			tt.modify(&s)
			err := s.validate()
			if (err == nil) != tt.ok {
				t.Errorf("validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// fakeRunner records every argument vector and answers through respond.
type fakeRunner struct {
	mu      sync.Mutex
	calls   [][]string
	respond func(argv []string) ([]byte, error)
}

func (f *fakeRunner) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	argv := append([]string{name}, args...)
	f.mu.Lock()
	f.calls = append(f.calls, argv)
	f.mu.Unlock()
	if f.respond == nil {
		return nil, nil
	}
	return f.respond(argv)
}

func (f *fakeRunner) recorded() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.calls...)
}

func failing(argv []string, stderr string) error {
	return &commandError{Argv: argv, Stderr: stderr, Err: errors.New("exit status 1")}
}

func TestDetectCompose(t *testing.T) {
	tests := []struct {
		name      string
		works     map[string]bool // joined argv that succeed
		want      []string
		wantCalls [][]string
	}{
		{
			name:      "prefers the docker compose plugin",
			works:     map[string]bool{"docker compose version": true, "docker-compose version": true},
			want:      []string{"docker", "compose"},
			wantCalls: [][]string{{"docker", "compose", "version"}},
		},
		{
			name:      "falls back to docker-compose",
			works:     map[string]bool{"docker-compose version": true},
			want:      []string{"docker-compose"},
			wantCalls: [][]string{{"docker", "compose", "version"}, {"docker-compose", "version"}},
		},
		{
			name:      "fails when neither works",
			works:     map[string]bool{},
			wantCalls: [][]string{{"docker", "compose", "version"}, {"docker-compose", "version"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &fakeRunner{respond: func(argv []string) ([]byte, error) {
				if tt.works[strings.Join(argv, " ")] {
					return []byte("v"), nil
				}
				return nil, failing(argv, "unknown command")
			}}
			got, err := detectCompose(context.Background(), r, "docker")
			if tt.want == nil {
				if err == nil {
					t.Fatalf("detectCompose() = %v, want an error", got)
				}
			} else if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("detectCompose() = %v, %v; want %v", got, err, tt.want)
			}
			if calls := r.recorded(); !reflect.DeepEqual(calls, tt.wantCalls) {
				t.Errorf("calls = %q, want %q", calls, tt.wantCalls)
			}
		})
	}
}
