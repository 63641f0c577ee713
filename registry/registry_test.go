package registry

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const revision = "0123456789abcdef0123456789abcdef01234567"

// startRegistry runs an in-process registry and returns its host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// testImage is a random image with the given labels and exposed ports.
func testImage(t *testing.T, labels map[string]string, exposed ...string) v1.Image {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Labels = labels
	cf.Config.ExposedPorts = map[string]struct{}{}
	for _, p := range exposed {
		cf.Config.ExposedPorts[p] = struct{}{}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// push writes img to ref and returns its manifest digest.
func push(t *testing.T, ref string, img v1.Image) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func TestInspectReadsDigestLabelsAndTCPPortsInOrder(t *testing.T) {
	host := startRegistry(t)
	img := testImage(t, map[string]string{RevisionLabel: revision, "app": "web"},
		"9090/tcp", "80/tcp", "53/udp", "8080", "443/TCP")
	ref := host + "/owner/repo:" + revision
	digest := push(t, ref, img)
	configDigest, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}

	got, err := New(WithInsecure(true)).Inspect(context.Background(), ref)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if got.Digest != digest {
		t.Errorf("Digest = %s, want %s", got.Digest, digest)
	}
	if want := host + "/owner/repo@" + digest; got.Ref != want {
		t.Errorf("Ref = %s, want %s", got.Ref, want)
	}
	if got.ConfigDigest != configDigest.String() {
		t.Errorf("ConfigDigest = %s, want %s", got.ConfigDigest, configDigest)
	}
	if got.Labels[RevisionLabel] != revision || got.Labels["app"] != "web" || len(got.Labels) != 2 {
		t.Errorf("Labels = %v", got.Labels)
	}
	if want := []int{80, 443, 8080, 9090}; !slices.Equal(got.Ports, want) {
		t.Errorf("Ports = %v, want %v (TCP only, ascending)", got.Ports, want)
	}
}

func TestInspectOfIndexGivesIndexDigestAndPlatformImage(t *testing.T) {
	host := startRegistry(t)
	amd64 := testImage(t, map[string]string{"arch": "amd64"}, "8080/tcp")
	arm64 := testImage(t, map[string]string{"arch": "arm64"}, "9090/tcp")
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	ref, err := name.ParseReference(host+"/owner/multi:latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	idxDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}

	got, err := New(WithInsecure(true)).Inspect(context.Background(), ref.String())
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if got.Digest != idxDigest.String() {
		t.Errorf("Digest = %s, want the index digest %s", got.Digest, idxDigest)
	}
	if got.Labels["arch"] != "amd64" || !slices.Equal(got.Ports, []int{8080}) {
		t.Errorf("got labels %v ports %v, want the linux/amd64 image's", got.Labels, got.Ports)
	}
}

func TestVerify(t *testing.T) {
	host := startRegistry(t)
	ref := host + "/owner/repo:" + revision
	digest := push(t, ref, testImage(t, map[string]string{RevisionLabel: revision}, "8080/tcp"))
	unlabelled := host + "/owner/repo:unlabelled"
	unlabelledDigest := push(t, unlabelled, testImage(t, nil))
	otherDigest := "sha256:" + strings.Repeat("0", 64)

	tests := []struct {
		name     string
		ref      string
		digest   string
		revision string
		wantErr  error
	}{
		{name: "matching digest and revision pass", ref: ref, digest: digest, revision: revision},
		{name: "another digest fails", ref: ref, digest: otherDigest, revision: revision, wantErr: ErrDigestMismatch},
		{name: "another revision fails", ref: ref, digest: digest, revision: strings.Repeat("f", 40), wantErr: ErrRevisionMismatch},
		{name: "missing revision label fails", ref: unlabelled, digest: unlabelledDigest, revision: revision, wantErr: ErrRevisionMismatch},
	}
	c := New(WithInsecure(true))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := c.Verify(context.Background(), tt.ref, tt.digest, tt.revision)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify error = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "verifying "+tt.ref) {
				t.Errorf("error %q does not say what was verified", err)
			}
			if img.Digest == "" {
				t.Errorf("Verify returned no image")
			}
		})
	}
}

func TestInspectOfMissingImageSaysWhatWasInspected(t *testing.T) {
	host := startRegistry(t)
	ref := host + "/owner/repo:nothere"
	_, err := New(WithInsecure(true)).Inspect(context.Background(), ref)
	if err == nil || !strings.HasPrefix(err.Error(), "inspecting "+ref+": ") {
		t.Fatalf("Inspect error = %v, want one starting with %q", err, "inspecting "+ref)
	}
}

func TestInspectStopsWhenContextIsCanceled(t *testing.T) {
	host := startRegistry(t)
	ref := host + "/owner/repo:x"
	push(t, ref, testImage(t, nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := New(WithInsecure(true)).Inspect(ctx, ref)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Inspect error = %v, want context.Canceled", err)
	}
}

func TestDeleteRemovesTheManifest(t *testing.T) {
	tests := []struct {
		name string
		ref  func(host, digest string) string
	}{
		{name: "by digest", ref: func(host, digest string) string { return host + "/owner/repo@" + digest }},
		{name: "by tag", ref: func(host, digest string) string { return host + "/owner/repo:" + revision }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := startRegistry(t)
			digest := push(t, host+"/owner/repo:"+revision, testImage(t, nil))
			c := New(WithInsecure(true))
			ctx := context.Background()
			if err := c.Delete(ctx, tt.ref(host, digest)); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := c.Inspect(ctx, host+"/owner/repo@"+digest); err == nil {
				t.Fatalf("manifest %s still there after Delete", digest)
			}
		})
	}
}

func TestTCPPorts(t *testing.T) {
	tests := []struct {
		name    string
		exposed []string
		want    []int
		wantErr bool
	}{
		{name: "none gives none", exposed: nil, want: nil},
		{name: "bare port means tcp", exposed: []string{"3000"}, want: []int{3000}},
		{name: "udp and sctp are left out", exposed: []string{"53/udp", "132/sctp", "22/tcp"}, want: []int{22}},
		{name: "sorted ascending without repeats", exposed: []string{"8080/tcp", "8080", "80/tcp"}, want: []int{80, 8080}},
		{name: "non-numeric port is an error", exposed: []string{"http/tcp"}, wantErr: true},
		{name: "out of range port is an error", exposed: []string{"70000/tcp"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := map[string]struct{}{}
			for _, p := range tt.exposed {
				m[p] = struct{}{}
			}
			got, err := tcpPorts(m)
			if (err != nil) != tt.wantErr {
				t.Fatalf("tcpPorts(%v) error = %v, wantErr %v", tt.exposed, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("tcpPorts(%v) = %v, want %v", tt.exposed, got, tt.want)
			}
		})
	}
}
