package buildkit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/errdefs"
	digest "github.com/opencontainers/go-digest"
)

// writeFiles creates files (path -> content) under a new temp dir.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSolveOptChecksTheDockerfile(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		dockerfile string
		wantErr    string
	}{
		{name: "default Dockerfile at the root", files: map[string]string{"Dockerfile": "FROM x"}},
		{name: "Dockerfile in a subdirectory", files: map[string]string{"deploy/web.Dockerfile": "FROM x"}, dockerfile: "deploy/web.Dockerfile"},
		{name: "missing default Dockerfile", files: map[string]string{"main.go": ""}, wantErr: "no Dockerfile at Dockerfile in the repository"},
		{name: "missing Dockerfile in a subdirectory", files: map[string]string{"main.go": ""}, dockerfile: "./deploy/Dockerfile", wantErr: "no Dockerfile at deploy/Dockerfile in the repository"},
		{name: "directory named Dockerfile", files: map[string]string{"Dockerfile/x": ""}, wantErr: "no Dockerfile at Dockerfile in the repository"},
		{name: "path leaving the repository", files: map[string]string{"Dockerfile": ""}, dockerfile: "../Dockerfile", wantErr: `dockerfile path "../Dockerfile" is outside the repository`},
		{name: "absolute path", files: map[string]string{"Dockerfile": ""}, dockerfile: "/etc/passwd", wantErr: `dockerfile path "/etc/passwd" is outside the repository`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			_, err := solveOpt(Spec{ContextDir: dir, Dockerfile: tt.dockerfile, Image: "127.0.0.1:5000/o/r:x"})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("solveOpt: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("solveOpt error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestSolveOptRefusesASymlinkedDockerfileOutsideTheRepository(t *testing.T) {
	outside := writeFiles(t, map[string]string{"Dockerfile": "FROM x"})
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(outside, "Dockerfile"), filepath.Join(dir, "Dockerfile")); err != nil {
		t.Fatal(err)
	}
	if _, err := solveOpt(Spec{ContextDir: dir, Image: "r/x:y"}); err == nil {
		t.Fatal("solveOpt accepted a Dockerfile symlinked outside the context")
	}
}

func TestSolveOptAttributes(t *testing.T) {
	dir := writeFiles(t, map[string]string{"docker/Dockerfile.prod": "FROM x"})
	base := Spec{
		ContextDir: dir,
		Dockerfile: "docker/Dockerfile.prod",
		Image:      "127.0.0.1:5000/owner/repo:abc",
		Labels:     map[string]string{"org.opencontainers.image.revision": "abc"},
	}

	t.Run("frontend, mounts, labels and push", func(t *testing.T) {
		opt, err := solveOpt(base)
		if err != nil {
			t.Fatal(err)
		}
		if opt.Frontend != "dockerfile.v0" {
			t.Errorf("Frontend = %q", opt.Frontend)
		}
		wantAttrs := map[string]string{"filename": "Dockerfile.prod", "label:org.opencontainers.image.revision": "abc"}
		if fmt.Sprint(opt.FrontendAttrs) != fmt.Sprint(wantAttrs) {
			t.Errorf("FrontendAttrs = %v, want %v", opt.FrontendAttrs, wantAttrs)
		}
		if opt.LocalMounts["context"] == nil || opt.LocalMounts["dockerfile"] == nil {
			t.Errorf("LocalMounts = %v, want context and dockerfile", opt.LocalMounts)
		}
		if len(opt.Exports) != 1 || opt.Exports[0].Type != client.ExporterImage {
			t.Fatalf("Exports = %+v, want one image export", opt.Exports)
		}
		wantPush := map[string]string{"name": base.Image, "push": "true"}
		if fmt.Sprint(opt.Exports[0].Attrs) != fmt.Sprint(wantPush) {
			t.Errorf("export attrs = %v, want %v", opt.Exports[0].Attrs, wantPush)
		}
		if opt.CacheImports != nil || opt.CacheExports != nil {
			t.Errorf("cache set without CacheRef: %+v %+v", opt.CacheImports, opt.CacheExports)
		}
	})

	t.Run("insecure registry with cache", func(t *testing.T) {
		s := base
		s.Insecure = true
		s.CacheRef = "127.0.0.1:5000/owner/repo:buildcache"
		opt, err := solveOpt(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := opt.Exports[0].Attrs["registry.insecure"]; got != "true" {
			t.Errorf("push registry.insecure = %q, want true", got)
		}
		wantImport := "[{registry map[ref:" + s.CacheRef + " registry.insecure:true]}]"
		if got := fmt.Sprint(opt.CacheImports); got != wantImport {
			t.Errorf("CacheImports = %s, want %s", got, wantImport)
		}
		wantExport := "[{registry map[mode:max ref:" + s.CacheRef + " registry.insecure:true]}]"
		if got := fmt.Sprint(opt.CacheExports); got != wantExport {
			t.Errorf("CacheExports = %s, want %s", got, wantExport)
		}
	})

	t.Run("no-cache skips the cache import but still exports", func(t *testing.T) {
		s := base
		s.NoCache = true
		s.CacheRef = "r/cache:x"
		opt, err := solveOpt(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := opt.FrontendAttrs["no-cache"]; !ok {
			t.Errorf("FrontendAttrs = %v, want no-cache", opt.FrontendAttrs)
		}
		if opt.CacheImports != nil || len(opt.CacheExports) != 1 {
			t.Errorf("CacheImports = %v, CacheExports = %v", opt.CacheImports, opt.CacheExports)
		}
	})
}

var (
	t0       = time.Unix(1700000000, 0)
	t1       = t0.Add(time.Second)
	dgstFrom = digest.FromString("from")
	dgstCopy = digest.FromString("copy")
	dgstRun  = digest.FromString("run")
)

// failedRun is the status stream of a build whose RUN step fails.
func failedRun() []*client.SolveStatus {
	return []*client.SolveStatus{
		{Vertexes: []*client.Vertex{
			{Digest: dgstFrom, Name: "[1/3] FROM 127.0.0.1:5000/byop/busybox:1.35.0", Started: &t0},
			{Digest: dgstCopy, Name: "[2/3] COPY . /app"},
		}},
		{Vertexes: []*client.Vertex{
			{Digest: dgstFrom, Name: "[1/3] FROM 127.0.0.1:5000/byop/busybox:1.35.0", Started: &t0, Completed: &t1, Cached: true},
			{Digest: dgstCopy, Name: "[2/3] COPY . /app", Started: &t0},
		}},
		{Vertexes: []*client.Vertex{
			{Digest: dgstCopy, Name: "[2/3] COPY . /app", Started: &t0, Completed: &t1},
			{Digest: dgstRun, Name: "[3/3] RUN make", Started: &t1},
		}},
		{Logs: []*client.VertexLog{
			{Vertex: dgstRun, Stream: 1, Data: []byte("compiling\nlink")},
			{Vertex: dgstRun, Stream: 2, Data: []byte("make: *** [all] Error 2\n")},
		}},
		{Logs: []*client.VertexLog{
			{Vertex: dgstRun, Stream: 1, Data: []byte("ing\r\nhalf a line")},
		}},
		{Vertexes: []*client.Vertex{
			{Digest: dgstRun, Name: "[3/3] RUN make", Started: &t1, Completed: &t1,
				Error: `process "/bin/sh -c make" did not complete successfully: exit code: 2`},
		}},
	}
}

func TestPrinterTurnsStatusIntoLines(t *testing.T) {
	var lines []string
	p := newPrinter(func(l string) { lines = append(lines, l) })
	for _, st := range failedRun() {
		p.write(st)
	}
	p.flush()
	want := []string{
		"#1 [1/3] FROM 127.0.0.1:5000/byop/busybox:1.35.0",
		"#1 CACHED",
		"#2 [2/3] COPY . /app",
		"#2 DONE",
		"#3 [3/3] RUN make",
		"#3 compiling",
		"#3 make: *** [all] Error 2",
		"#3 linking",
		"#3 half a line",
		`#3 ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2`,
	}
	if !slices.Equal(lines, want) {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestPrinterRepeatsNothingWhenStatusIsResent(t *testing.T) {
	var lines []string
	p := newPrinter(func(l string) { lines = append(lines, l) })
	st := &client.SolveStatus{Vertexes: []*client.Vertex{{Digest: dgstCopy, Name: "[2/3] COPY . /app", Started: &t0, Completed: &t1}}}
	p.write(st)
	p.write(st)
	p.flush()
	if want := []string{"#1 [2/3] COPY . /app", "#1 DONE"}; !slices.Equal(lines, want) {
		t.Errorf("lines = %q, want %q", lines, want)
	}
}

func TestBuildErrorNamesTheFailingStep(t *testing.T) {
	solveErr := errors.New(`process "/bin/sh -c make" did not complete successfully: exit code: 2`)
	long := strings.Repeat("x", 200)
	tests := []struct {
		name      string
		status    []*client.SolveStatus
		err       error
		wantStep  string
		wantError string
	}{
		{
			name:      "vertex and exit code from the error",
			status:    failedRun(),
			err:       errdefs.WrapVertex(&gatewaypb.ExitError{ExitCode: 2, Err: solveErr}, dgstRun),
			wantStep:  "[3/3] RUN make",
			wantError: "build failed at [3/3] RUN make: exit code: 2",
		},
		{
			name:      "failing vertex from the status when the error names none",
			status:    failedRun(),
			err:       errors.New("failed to solve: " + solveErr.Error()),
			wantStep:  "[3/3] RUN make",
			wantError: `build failed at [3/3] RUN make: process "/bin/sh -c make" did not complete successfully: exit code: 2`,
		},
		{
			name: "the last failing step is blamed, not an earlier soft error",
			status: append([]*client.SolveStatus{{Vertexes: []*client.Vertex{{
				Digest: digest.FromString("cache"), Name: "importing cache manifest from r/cache:x", Started: &t0, Completed: &t0,
				Error: "failed to configure registry cache importer: r/cache:x: not found",
			}}}}, failedRun()...),
			err:       errors.New("failed to solve: exit code: 2"),
			wantStep:  "[3/3] RUN make",
			wantError: `build failed at [3/3] RUN make: process "/bin/sh -c make" did not complete successfully: exit code: 2`,
		},
		{
			name:      "no step to blame",
			err:       errors.New("failed to solve: dockerfile parse error on line 1: unknown instruction: FORM"),
			wantError: "build failed: dockerfile parse error on line 1: unknown instruction: FORM",
		},
		{
			name: "long messages are cut to fit a commit status",
			status: []*client.SolveStatus{{Vertexes: []*client.Vertex{
				{Digest: dgstRun, Name: "[3/3] RUN " + long, Started: &t0, Error: "first part " + long + " the cause"},
			}}},
			err:       errors.New("boom"),
			wantStep:  "[3/3] RUN " + strings.Repeat("x", 49) + "…",
			wantError: "build failed at [3/3] RUN " + strings.Repeat("x", 49) + "…: …" + strings.Repeat("x", 51) + " the cause",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPrinter(func(string) {})
			for _, st := range tt.status {
				p.write(st)
			}
			be := p.buildError(tt.err)
			if be.Step != tt.wantStep {
				t.Errorf("Step = %q, want %q", be.Step, tt.wantStep)
			}
			if be.Error() != tt.wantError {
				t.Errorf("Error() = %q\nwant      %q", be.Error(), tt.wantError)
			}
			if n := len([]rune(be.Error())); n > maxErrorLen {
				t.Errorf("Error() is %d characters, more than %d", n, maxErrorLen)
			}
			if !errors.Is(be, tt.err) {
				t.Errorf("BuildError does not wrap the solve error")
			}
		})
	}
}
