package deployers_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/byop-dev/byop/deployers"
	"github.com/byop-dev/byop/internal/sshtest"
	"github.com/byop-dev/byop/internal/testenv"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/ssh"
)

// remoteFixture is a Remote to a real sshd on loopback whose "VPS" is this
// machine's Docker, and a fresh project torn down after the test.
type remoteFixture struct {
	srv     *sshtest.Server
	remote  *deployers.Remote
	dir     string // compose directory on the host
	project string
}

func newRemoteFixture(t *testing.T, configure func(*deployers.Host, *sshtest.Server)) remoteFixture {
	t.Helper()
	testenv.Docker(t)
	testenv.Registry(t)
	testenv.BaseImage(t)
	srv := sshtest.Start(t, testenv.SSHD(t))
	signer, err := deployers.LoadSigner(srv.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	h := deployers.Host{
		Name: "test-vps",
		SSH:  deployers.SSHConfig{Addr: srv.Addr, User: srv.User, Signer: signer, KnownHostsFile: srv.KnownHostsFile},
		Dir:  filepath.Join(t.TempDir(), "compose"),
	}
	if configure != nil {
		configure(&h, srv)
	}
	r, err := deployers.NewRemote(h, deployers.RemoteOptions{HealthTimeout: 30 * time.Second, Registry: deployers.RegistryAccess{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	f := remoteFixture{srv: srv, remote: r, dir: h.Dir, project: "byop-test-" + randomHex(t, 4) + "-pr-2"}
	t.Cleanup(func() {
		// Through docker directly: a host whose key is refused cannot be
		// cleaned through byop, and must have nothing to clean.
		if cs := containersOf(t, deployers.LabelProject+"="+f.project); len(cs) > 0 {
			docker(t, append([]string{"rm", "-f", "-v"}, cs...)...)
		}
		if ns := docker(t, "network", "ls", "-q", "--filter", "label="+deployers.LabelProject+"="+f.project); len(ns) > 0 {
			docker(t, append([]string{"network", "rm"}, ns...)...)
		}
		r.Close()
	})
	return f
}

func (f remoteFixture) spec(image, revision string) deployers.Spec {
	return testSpec(f.project, image, revision)
}

func TestRemoteDeploysOverSSHThenRetiresAndTearsDown(t *testing.T) {
	for _, tt := range []struct {
		name      string
		configure func(*deployers.Host, *sshtest.Server)
	}{
		{"pull, known_hosts, forwarded through SSH", nil},
		{"streamed tarball, pinned fingerprint, forwarded through SSH", func(h *deployers.Host, s *sshtest.Server) {
			h.StreamImages = true
			h.SSH.KnownHostsFile = ""
			h.SSH.HostKeyFingerprint = ssh.FingerprintSHA256(s.HostKey)
		}},
		{"pull, published on the host's address", func(h *deployers.Host, _ *sshtest.Server) {
			h.PublishIP = "127.0.0.1"
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			testRemote(t, newRemoteFixture(t, tt.configure), tt.configure != nil && strings.HasPrefix(tt.name, "streamed"))
			t.Logf("took %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

func testRemote(t *testing.T, f remoteFixture, streamed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	revA, revB := randomHex(t, 20), randomHex(t, 20)
	imgA := testImage{revisionLabel: revA, index: "remote A\n"}.push(t, ctx)
	imgB := testImage{revisionLabel: revB, index: "remote B\n"}.push(t, ctx)
	projectLabel := deployers.LabelProject + "=" + f.project

	epA, err := f.remote.Deploy(ctx, f.spec(imgA, revA))
	if err != nil {
		t.Fatalf("deploying A: %v", err)
	}
	if body, err := get(ctx, epA.URL.String()); err != nil || body != "remote A\n" {
		t.Fatalf("GET A at %s = %q, %v; want A's page", epA.URL, body, err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, f.project+".compose.yml")); err != nil {
		t.Errorf("compose file on the host: %v", err)
	}

	t.Run("the image on the host is the registry's", func(t *testing.T) {
		ref, err := name.NewDigest(imgA, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(ref)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := img.ConfigName()
		run := imgA
		if streamed {
			run = ref.Context().String() + ":" + revA
			// Loaded, not pulled: docker knows no registry digest for it.
			if digests := docker(t, "image", "inspect", "--format", "{{len .RepoDigests}}", run); digests[0] != "0" {
				t.Errorf("streamed image has %s repo digests, want none (was it pulled?)", digests[0])
			}
		}
		if id := docker(t, "image", "inspect", "--format", "{{.Id}}", run); id[0] != cfg.String() {
			t.Errorf("image ID on the host = %s, want the config digest %s", id[0], cfg)
		}
		live := docker(t, "ps", "-q", "--filter", "label="+projectLabel, "--filter", "label="+deployers.LabelRevision+"="+revA)
		if len(live) != 1 {
			t.Fatalf("live containers of A = %v", live)
		}
		if img := docker(t, "inspect", "--format", "{{.Config.Image}}", live[0]); img[0] != run {
			t.Errorf("container runs %s, want %s", img[0], run)
		}
	})

	epB, err := f.remote.Deploy(ctx, f.spec(imgB, revB))
	if err != nil {
		t.Fatalf("deploying B: %v", err)
	}
	for _, c := range []struct{ url, want string }{{epA.URL.String(), "remote A\n"}, {epB.URL.String(), "remote B\n"}} {
		if body, err := get(ctx, c.url); err != nil || body != c.want {
			t.Errorf("GET %s = %q, %v; want %q (both revisions answer)", c.url, body, err, c.want)
		}
	}

	t.Run("List reports both with the endpoints Deploy returned", func(t *testing.T) {
		running, err := f.remote.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, r := range running {
			if r.Project == f.project {
				got[r.Revision] = r.Endpoint.URL.String()
			}
		}
		if got[revA] != epA.URL.String() || got[revB] != epB.URL.String() || len(got) != 2 {
			t.Errorf("List() = %v, want A at %s and B at %s", got, epA.URL, epB.URL)
		}
	})

	retireThenTearDown(t, ctx, f.remote, f.project, f.dir, revA, revB, epB, "remote B\n")
}

func TestRemoteRefusesAHostWhoseKeyIsNotTheKnownOne(t *testing.T) {
	other, _ := sshtest.NewKey(t)
	for _, tt := range []struct {
		name      string
		configure func(*deployers.Host, *sshtest.Server)
		want      string
	}{
		{"host not in known_hosts", func(h *deployers.Host, s *sshtest.Server) {
			h.SSH.KnownHostsFile = s.KnownHosts(t, nil)
		}, "is not in"},
		{"host key changed", func(h *deployers.Host, s *sshtest.Server) {
			h.SSH.KnownHostsFile = s.KnownHosts(t, other.PublicKey())
		}, "changed"},
		{"pinned fingerprint differs", func(h *deployers.Host, _ *sshtest.Server) {
			h.SSH.KnownHostsFile = ""
			h.SSH.HostKeyFingerprint = ssh.FingerprintSHA256(other.PublicKey())
		}, "pinned is"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			f := newRemoteFixture(t, tt.configure)
			rev := randomHex(t, 20)
			img := testImage{revisionLabel: rev, index: "never\n"}.push(t, ctx)
			_, err := f.remote.Deploy(ctx, f.spec(img, rev))
			if !errors.Is(err, deployers.ErrHostKey) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Deploy() = %v, want ErrHostKey saying %q", err, tt.want)
			}
			t.Logf("refused as expected: %v", err)
			if cs := containersOf(t, deployers.LabelProject+"="+f.project); len(cs) != 0 {
				t.Errorf("containers created on a refused host: %v", cs)
			}
			if _, err := os.Stat(f.dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("compose directory made on a refused host: %v", err)
			}
			if strings.Contains(f.srv.Log(), "Accepted publickey") {
				t.Errorf("byop authenticated to a host it refused:\n%s", f.srv.Log())
			}
		})
	}
}

func TestPoolDeploysAPreviewOnARemoteHostAndTearsItDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	testenv.Docker(t)
	testenv.Registry(t)
	srv := sshtest.Start(t, testenv.SSHD(t))
	h := deployers.Host{
		Name:        "vps-a",
		SSH:         deployers.SSHConfig{Addr: srv.Addr, User: srv.User, Signer: srv.Signer, KnownHostsFile: srv.KnownHostsFile},
		Dir:         filepath.Join(t.TempDir(), "compose"),
		MaxPreviews: 2,
	}
	pool, err := deployers.NewPool([]deployers.Host{h}, deployers.PoolOptions{
		Remote: deployers.RemoteOptions{HealthTimeout: 30 * time.Second, Registry: deployers.RegistryAccess{Insecure: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	project := "byop-test-" + randomHex(t, 4) + "-pr-3"
	t.Cleanup(func() {
		if cs := containersOf(t, deployers.LabelProject+"="+project); len(cs) > 0 {
			docker(t, append([]string{"rm", "-f", "-v"}, cs...)...)
		}
	})
	rev := randomHex(t, 20)
	img := testImage{revisionLabel: rev, index: "pooled\n"}.push(t, ctx)
	ep, err := pool.Deploy(ctx, deployers.Spec{Project: project, Image: img, Revision: rev, Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if body, err := get(ctx, ep.URL.String()); err != nil || body != "pooled\n" {
		t.Fatalf("GET %s = %q, %v", ep.URL, body, err)
	}
	if host, _ := pool.HostOf(project); host != "vps-a" {
		t.Errorf("placed on %q", host)
	}
	if err := pool.Retire(ctx, project, rev); err != nil {
		t.Fatal(err)
	}
	if err := pool.Teardown(ctx, project); err != nil {
		t.Fatal(err)
	}
	if cs := containersOf(t, deployers.LabelProject+"="+project); len(cs) != 0 {
		t.Errorf("containers after teardown: %v", cs)
	}
	if _, ok := pool.HostOf(project); ok {
		t.Error("the pool still places the torn-down preview")
	}
}
