package deployers_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/byop-dev/byop/deployers"
	"github.com/byop-dev/byop/internal/testenv"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testImage describes an image built for a test without BuildKit: the base
// image plus one layer with /www/index.html.
type testImage struct {
	revisionLabel string   // org.opencontainers.image.revision
	index         string   // content of /www/index.html
	cmd           []string // default: busybox httpd on 8080 serving /www
}

// push builds img onto testenv.BaseImage, pushes it to testenv.Registry and
// returns its repository@digest reference.
func (img testImage) push(t *testing.T, ctx context.Context) string {
	t.Helper()
	baseRef, err := name.ParseReference(testenv.BaseImage(t), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	base, err := remote.Image(baseRef, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("reading base image %s: %v", baseRef, err)
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "www/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "www/index.html", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(img.index))},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tw.Write([]byte(img.index)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	withLayer, err := mutate.Append(base, mutate.Addendum{Layer: layer})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := withLayer.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Cmd = img.cmd
	if cfg.Cmd == nil {
		cfg.Cmd = []string{"busybox", "httpd", "-f", "-p", "8080", "-h", "/www"}
	}
	cfg.Entrypoint = nil
	cfg.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
	cfg.Labels = map[string]string{"org.opencontainers.image.revision": img.revisionLabel}
	final, err := mutate.Config(withLayer, cfg)
	if err != nil {
		t.Fatal(err)
	}

	repo := testenv.Registry(t) + "/byop-test/deployers-" + randomHex(t, 4)
	tag, err := name.NewTag(repo+":test", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, final, remote.WithContext(ctx)); err != nil {
		t.Fatalf("pushing %s: %v", tag, err)
	}
	d, err := final.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref := repo + "@" + d.String()
	t.Cleanup(func() { _ = exec.Command("docker", "image", "rm", "-f", ref).Run() })
	return ref
}

// get returns the body served at u, or an error if nothing answers.
func get(ctx context.Context, u string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// docker runs the docker CLI and returns the fields it printed.
func docker(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("docker", args...).Output()
	if err != nil {
		t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return strings.Fields(string(out))
}

// containersOf lists the containers (running or not) with every label.
func containersOf(t *testing.T, labels ...string) []string {
	t.Helper()
	args := []string{"ps", "-a", "-q"}
	for _, l := range labels {
		args = append(args, "--filter", "label="+l)
	}
	return docker(t, args...)
}

type fixture struct {
	local   *deployers.Local
	dir     string
	project string
	compose []string
}

// composeCommands returns the compose commands this host has: the tests run
// with each, as byop runs with whichever it finds.
func composeCommands(t *testing.T) [][]string {
	t.Helper()
	testenv.Docker(t)
	var out [][]string
	for _, argv := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		if exec.Command(argv[0], append(argv[1:], "version")...).Run() == nil {
			out = append(out, argv)
		}
	}
	if len(out) == 0 {
		t.Fatal("neither docker compose nor docker-compose works")
	}
	return out
}

// newFixture returns a Local using the compose command (nil: detected) and
// a fresh project that is torn down after the test.
func newFixture(t *testing.T, compose []string, opts ...deployers.LocalOption) fixture {
	t.Helper()
	testenv.Docker(t)
	testenv.Registry(t)
	testenv.BaseImage(t)
	dir := t.TempDir()
	if compose != nil {
		opts = append(opts, deployers.WithComposeCommand(compose...))
	}
	l, err := deployers.NewLocal(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{local: l, dir: dir, project: "byop-test-" + randomHex(t, 4) + "-pr-1", compose: compose}
	t.Cleanup(func() {
		if err := l.Teardown(context.Background(), f.project); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return f
}

func (f fixture) spec(image, revision string) deployers.Spec {
	return testSpec(f.project, image, revision)
}

// testSpec is a preview of the test app (port 8080) at revision.
func testSpec(project, image, revision string) deployers.Spec {
	return deployers.Spec{
		Project:  project,
		Image:    image,
		Revision: revision,
		Port:     8080,
		Labels:   map[string]string{"byop.repo": "acme/web", "byop.pr": "1", "byop.sha": revision},
	}
}

func TestLocalDeploysRevisionsBesideEachOtherThenRetiresAndTearsDown(t *testing.T) {
	for _, compose := range composeCommands(t) {
		t.Run(strings.Join(compose, " "), func(t *testing.T) { testDeployRetireTeardown(t, compose) })
	}
}

func testDeployRetireTeardown(t *testing.T, compose []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := newFixture(t, compose, deployers.WithHealthTimeout(30*time.Second))
	revA, revB := randomHex(t, 20), randomHex(t, 20)
	imgA := testImage{revisionLabel: revA, index: "revision A\n"}.push(t, ctx)
	imgB := testImage{revisionLabel: revB, index: "revision B\n"}.push(t, ctx)
	projectLabel := deployers.LabelProject + "=" + f.project

	epA, err := f.local.Deploy(ctx, f.spec(imgA, revA))
	if err != nil {
		t.Fatalf("deploying A: %v", err)
	}
	if body, err := get(ctx, epA.URL.String()); err != nil || body != "revision A\n" {
		t.Fatalf("GET A = %q, %v; want A's page", body, err)
	}
	if h := epA.URL.Hostname(); h != "127.0.0.1" {
		t.Errorf("A published on %s, want 127.0.0.1", h)
	}

	t.Run("deploying the running revision again starts nothing", func(t *testing.T) {
		again, err := f.local.Deploy(ctx, f.spec(imgA, revA))
		if err != nil {
			t.Fatal(err)
		}
		if again.URL.String() != epA.URL.String() {
			t.Errorf("endpoint = %s, want %s", again.URL, epA.URL)
		}
		if cs := containersOf(t, projectLabel); len(cs) != 1 {
			t.Errorf("containers = %v, want one", cs)
		}
	})

	epB, err := f.local.Deploy(ctx, f.spec(imgB, revB))
	if err != nil {
		t.Fatalf("deploying B: %v", err)
	}
	if epB.URL.String() == epA.URL.String() {
		t.Fatalf("A and B share endpoint %s", epA.URL)
	}
	for _, c := range []struct{ url, want string }{{epA.URL.String(), "revision A\n"}, {epB.URL.String(), "revision B\n"}} {
		if body, err := get(ctx, c.url); err != nil || body != c.want {
			t.Errorf("GET %s = %q, %v; want %q (both revisions answer)", c.url, body, err, c.want)
		}
	}

	t.Run("labels are on every container and network", func(t *testing.T) {
		for _, rev := range []string{revA, revB} {
			cs := containersOf(t, projectLabel, deployers.LabelRevision+"="+rev, "byop.repo=acme/web", "byop.pr=1", "byop.sha="+rev)
			if len(cs) != 1 {
				t.Errorf("containers of %s with all labels = %v, want one", rev[:7], cs)
			}
		}
		if ns := docker(t, "network", "ls", "-q", "--filter", "label="+projectLabel, "--filter", "label=byop.repo=acme/web"); len(ns) != 1 {
			t.Errorf("labelled networks = %v, want one", ns)
		}
	})

	t.Run("List reports both revisions", func(t *testing.T) {
		running, err := f.local.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, r := range running {
			if r.Project == f.project {
				got[r.Revision] = r.Endpoint.URL.String()
				if r.Labels["byop.pr"] != "1" {
					t.Errorf("%s labels = %v, want the Spec's", r.Revision[:7], r.Labels)
				}
			}
		}
		want := map[string]string{revA: epA.URL.String(), revB: epB.URL.String()}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("List() for the project = %v, want %v", got, want)
		}
	})

	t.Run("a revision that never answers is removed and the old one keeps serving", func(t *testing.T) {
		revC := randomHex(t, 20)
		imgC := testImage{revisionLabel: revC, index: "never served\n", cmd: []string{"sleep", "3600"}}.push(t, ctx)
		impatient, err := deployers.NewLocal(f.dir, deployers.WithHealthTimeout(2*time.Second), deployers.WithComposeCommand(f.compose...))
		if err != nil {
			t.Fatal(err)
		}
		_, err = impatient.Deploy(ctx, f.spec(imgC, revC))
		if !errors.Is(err, deployers.ErrNoAnswer) || !strings.Contains(err.Error(), "port 8080") {
			t.Fatalf("Deploy(never listens) = %v, want ErrNoAnswer naming port 8080", err)
		}
		t.Logf("refused as expected: %v", err)
		if cs := containersOf(t, projectLabel, deployers.LabelRevision+"="+revC); len(cs) != 0 {
			t.Errorf("containers of the failed revision left: %v", cs)
		}
		if body, err := get(ctx, epB.URL.String()); err != nil || body != "revision B\n" {
			t.Errorf("GET B after failed deploy = %q, %v", body, err)
		}
	})

	t.Run("an image of another revision is refused before anything starts", func(t *testing.T) {
		claimed := randomHex(t, 20)
		imgX := testImage{revisionLabel: randomHex(t, 20), index: "wrong\n"}.push(t, ctx)
		_, err := f.local.Deploy(ctx, f.spec(imgX, claimed))
		if !errors.Is(err, deployers.ErrRevisionMismatch) {
			t.Fatalf("Deploy(wrong label) = %v, want ErrRevisionMismatch", err)
		}
		t.Logf("refused as expected: %v", err)
		if cs := containersOf(t, projectLabel, deployers.LabelRevision+"="+claimed); len(cs) != 0 {
			t.Errorf("containers started for the refused image: %v", cs)
		}
	})

	// busybox httpd as PID 1 ignores SIGTERM: Retire must kill, not stop.
	retireThenTearDown(t, ctx, f.local, f.project, f.dir, revA, revB, epB, "revision B\n")
}

// retireThenTearDown retires revision A of a project whose revisions A
// and B run, checks that B still serves wantB, then tears the project
// down twice and checks that nothing of it is left.
func retireThenTearDown(t *testing.T, ctx context.Context, r interface {
	Retire(ctx context.Context, project, keep string) error
	Teardown(ctx context.Context, project string) error
}, project, dir, revA, revB string, epB deployers.Endpoint, wantB string) {
	t.Helper()
	projectLabel := deployers.LabelProject + "=" + project
	if err := r.Retire(ctx, project, revB); err != nil {
		t.Fatalf("retiring A: %v", err)
	}
	if cs := containersOf(t, projectLabel, deployers.LabelRevision+"="+revA); len(cs) != 0 {
		t.Errorf("A's containers still there after Retire: %v", cs)
	}
	if body, err := get(ctx, epB.URL.String()); err != nil || body != wantB {
		t.Errorf("GET B after retiring A = %q, %v", body, err)
	}
	for i := range 2 {
		if err := r.Teardown(ctx, project); err != nil {
			t.Fatalf("teardown %d: %v", i+1, err)
		}
	}
	if cs := containersOf(t, projectLabel); len(cs) != 0 {
		t.Errorf("containers left after teardown: %v", cs)
	}
	for _, kind := range []string{"network", "volume"} {
		if left := docker(t, kind, "ls", "-q", "--filter", "label="+projectLabel); len(left) != 0 {
			t.Errorf("%ss left after teardown: %v", kind, left)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, project+".compose.yml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("compose file left after teardown: %v", err)
	}
	if _, err := get(ctx, epB.URL.String()); err == nil {
		t.Errorf("B still answers at %s after teardown", epB.URL)
	}
}

func TestLocalRefusesAMislabelledImageOnAnEmptyProject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t, nil)
	claimed := randomHex(t, 20)
	img := testImage{revisionLabel: randomHex(t, 20), index: "x\n"}.push(t, ctx)
	_, err := f.local.Deploy(ctx, f.spec(img, claimed))
	if !errors.Is(err, deployers.ErrRevisionMismatch) {
		t.Fatalf("Deploy() = %v, want ErrRevisionMismatch", err)
	}
	if cs := containersOf(t, deployers.LabelProject+"="+f.project); len(cs) != 0 {
		t.Errorf("containers started: %v", cs)
	}
	if ns := docker(t, "network", "ls", "-q", "--filter", "label="+deployers.LabelProject+"="+f.project); len(ns) != 0 {
		t.Errorf("networks created: %v", ns)
	}
}

func TestLocalTeardownOfANeverDeployedProjectIsFine(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.local.Teardown(context.Background(), f.project); err != nil {
		t.Fatal(err)
	}
}
