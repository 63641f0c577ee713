package buildkit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/byop-dev/byop/buildkit"
	"github.com/byop-dev/byop/internal/testenv"
	"github.com/byop-dev/byop/registry"
)

// lines collects build log lines; safe for concurrent use.
type lines struct {
	mu  sync.Mutex
	all []string
	ch  chan string // every line is also sent here when not nil, without blocking
}

func (l *lines) log(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, line)
	if l.ch != nil {
		select {
		case l.ch <- line:
		default:
		}
	}
}

func (l *lines) contains(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.all, func(s string) bool { return strings.Contains(s, sub) })
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func newClient(t *testing.T) *buildkit.Client {
	t.Helper()
	addr := testenv.BuildKit(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := buildkit.New(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	return c
}

// buildContext writes a build context with the given files.
func buildContext(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBuildPushesTheImageWithLabelsAndPorts(t *testing.T) {
	c := newClient(t)
	reg := testenv.Registry(t)
	base := testenv.BaseImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	sha := randomHex(t, 20)
	repo := reg + "/test/" + randomHex(t, 6)
	dir := buildContext(t, map[string]string{
		"deploy/app.Dockerfile": "FROM " + base + "\nCOPY hello.txt /srv/hello.txt\nEXPOSE 8080\nEXPOSE 9090/tcp 53/udp\n",
		"hello.txt":             "hello " + sha + "\n",
	})
	var log lines
	spec := buildkit.Spec{
		ContextDir: dir,
		Dockerfile: "deploy/app.Dockerfile",
		Image:      repo + ":" + sha,
		Labels: map[string]string{
			registry.RevisionLabel:            sha,
			"org.opencontainers.image.source": "https://github.com/test/repo",
		},
		CacheRef: repo + ":buildcache",
		Insecure: true,
		Log:      log.log,
	}
	res, err := c.Build(ctx, spec)
	t.Logf("build log:\n%s", &log)
	if err != nil {
		t.Fatalf("Build: %v\nlog:\n%s", err, &log)
	}
	if !strings.HasPrefix(res.Digest, "sha256:") {
		t.Fatalf("Digest = %q", res.Digest)
	}

	img, err := registry.New(registry.WithInsecure(true)).Verify(ctx, spec.Image, res.Digest, sha)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if img.Labels["org.opencontainers.image.source"] != "https://github.com/test/repo" {
		t.Errorf("Labels = %v, want the source label", img.Labels)
	}
	if want := []int{8080, 9090}; !slices.Equal(img.Ports, want) {
		t.Errorf("Ports = %v, want %v", img.Ports, want)
	}
	if !log.contains("COPY hello.txt /srv/hello.txt") {
		t.Errorf("log has no line for the COPY step:\n%s", &log)
	}

	cacheRef, err := name.ParseReference(spec.CacheRef, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Head(cacheRef, remote.WithContext(ctx)); err != nil {
		t.Errorf("build cache was not exported to %s: %v", spec.CacheRef, err)
	}
}

func TestBuildWithAFailingRunNamesTheStep(t *testing.T) {
	c := newClient(t)
	reg := testenv.Registry(t)
	base := testenv.BaseImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	marker := randomHex(t, 8)
	dir := buildContext(t, map[string]string{
		"Dockerfile": "FROM " + base + "\nRUN echo about to fail " + marker + " && exit 3\n",
	})
	var log lines
	_, err := c.Build(ctx, buildkit.Spec{
		ContextDir: dir,
		Image:      reg + "/test/" + randomHex(t, 6) + ":" + randomHex(t, 20),
		Insecure:   true,
		Log:        log.log,
	})
	t.Logf("build log:\n%s", &log)
	var be *buildkit.BuildError
	if !errors.As(err, &be) {
		t.Fatalf("Build error = %v (%T), want a *buildkit.BuildError", err, err)
	}
	if !strings.Contains(be.Step, "RUN echo about to fail") {
		t.Errorf("Step = %q, want the RUN step", be.Step)
	}
	msg := err.Error()
	if !strings.Contains(msg, "RUN echo about to fail") || !strings.Contains(msg, "exit code: 3") {
		t.Errorf("error %q does not name the step and its exit code", msg)
	}
	if n := len([]rune(msg)); n > 140 {
		t.Errorf("error is %d characters, too long for a commit status: %q", n, msg)
	}
	if !log.contains("about to fail " + marker) {
		t.Errorf("log lacks the step's output:\n%s", &log)
	}
	if !log.contains("ERROR") {
		t.Errorf("log lacks the error:\n%s", &log)
	}
}

func TestBuildWithoutDockerfileSaysSo(t *testing.T) {
	c := newClient(t)
	reg := testenv.Registry(t)
	dir := buildContext(t, map[string]string{"main.go": "package main\n"})
	_, err := c.Build(context.Background(), buildkit.Spec{
		ContextDir: dir,
		Image:      reg + "/test/" + randomHex(t, 6) + ":" + randomHex(t, 20),
		Insecure:   true,
	})
	if err == nil || err.Error() != "no Dockerfile at Dockerfile in the repository" {
		t.Fatalf("Build error = %v, want %q", err, "no Dockerfile at Dockerfile in the repository")
	}
}

func TestBuildStopsWhenContextIsCanceled(t *testing.T) {
	c := newClient(t)
	reg := testenv.Registry(t)
	base := testenv.BaseImage(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dir := buildContext(t, map[string]string{
		"Dockerfile": "FROM " + base + "\nRUN echo sleeping " + randomHex(t, 8) + " && sleep 300\n",
	})
	log := lines{ch: make(chan string, 100)}
	done := make(chan error, 1)
	go func() {
		_, err := c.Build(ctx, buildkit.Spec{
			ContextDir: dir,
			Image:      reg + "/test/" + randomHex(t, 6) + ":" + randomHex(t, 20),
			NoCache:    true,
			Insecure:   true,
			Log:        log.log,
		})
		done <- err
	}()

	// Wait until the long step prints its output (not its name), then cancel.
	timeout := time.After(2 * time.Minute)
	for running := false; !running; {
		select {
		case line := <-log.ch:
			running = strings.Contains(line, "sleeping") && !strings.Contains(line, "RUN")
		case err := <-done:
			t.Fatalf("Build returned before it was canceled: %v\nlog:\n%s", err, &log)
		case <-timeout:
			t.Fatalf("the sleep step did not start:\n%s", &log)
		}
	}
	canceled := time.Now()
	cancel()

	select {
	case err := <-done:
		t.Logf("build log:\n%s\nerror: %v", &log, err)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Build error = %v, want context.Canceled", err)
		}
		if d := time.Since(canceled); d > 20*time.Second {
			t.Errorf("Build took %s to stop after cancel", d)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("Build still running 60s after cancel:\n%s", &log)
	}
}
