package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// fakeBusybox writes an executable that answers `--list` like busybox does.
func fakeBusybox(t *testing.T, applets ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "busybox")
	script := "#!/bin/sh\nprintf '%s\\n' " + strings.Join(applets, " ") + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

type entry struct {
	typ  byte
	mode int64
	link string
	body string
}

func layerEntries(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("image has %d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got[hdr.Name] = entry{typ: hdr.Typeflag, mode: hdr.Mode, link: hdr.Linkname, body: string(body)}
	}
	return got
}

func TestPushedImageHasBusyboxAppletsAndUsers(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	bb := fakeBusybox(t, "sh", "ls", "wget", "busybox")
	refStr := host + "/byop/busybox:1.35.0"

	var out bytes.Buffer
	if err := run(context.Background(), []string{"-busybox", bb, "-version", "1.35.0", "-insecure", refStr}, &out); err != nil {
		t.Fatalf("run: %v", err)
	}
	ref, err := name.ParseReference(refStr, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pulling pushed image: %v", err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), digest.String()) {
		t.Errorf("output %q does not name the pushed digest %s", out.String(), digest)
	}

	got := layerEntries(t, img)
	binary, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want func(e entry) bool
	}{
		{"busybox binary is executable", "bin/busybox", func(e entry) bool { return e.typ == tar.TypeReg && e.mode == 0o755 && e.body == string(binary) }},
		{"sh links to busybox", "bin/sh", func(e entry) bool { return e.typ == tar.TypeSymlink && e.link == "busybox" }},
		{"wget links to busybox", "bin/wget", func(e entry) bool { return e.typ == tar.TypeSymlink && e.link == "busybox" }},
		{"tmp is sticky and world-writable", "tmp/", func(e entry) bool { return e.typ == tar.TypeDir && e.mode == 0o1777 }},
		{"www exists for static servers", "www/", func(e entry) bool { return e.typ == tar.TypeDir }},
		{"passwd has root and nobody", "etc/passwd", func(e entry) bool {
			return strings.HasPrefix(e.body, "root:x:0:0:") && strings.Contains(e.body, "\nnobody:x:65534:65534:")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := got[tt.path]
			if !ok {
				t.Fatalf("%s missing from layer", tt.path)
			}
			if !tt.want(e) {
				t.Errorf("%s = %+v", tt.path, e)
			}
		})
	}
	if e, ok := got["bin/busybox"]; ok && e.typ == tar.TypeSymlink {
		t.Error("busybox listed as its own applet became a symlink")
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Config.Cmd) != 1 || cfg.Config.Cmd[0] != "sh" {
		t.Errorf("Cmd = %q, want [sh]", cfg.Config.Cmd)
	}
	if len(cfg.Config.Env) != 1 || !strings.HasPrefix(cfg.Config.Env[0], "PATH=") || !strings.Contains(cfg.Config.Env[0], ":/bin") {
		t.Errorf("Env = %q, want a PATH with /bin", cfg.Config.Env)
	}
	if v := cfg.Config.Labels["org.opencontainers.image.version"]; v != "1.35.0" {
		t.Errorf("version label = %q, want 1.35.0", v)
	}
}

func TestSameBinaryGivesSameDigest(t *testing.T) {
	digestOf := func() v1.Hash {
		img, err := build([]byte("binary"), []string{"sh", "ls"}, "1.35.0")
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if a, b := digestOf(), digestOf(); a != b {
		t.Errorf("two builds of the same input differ: %s != %s", a, b)
	}
}

func TestRejectsMissingReference(t *testing.T) {
	err := run(context.Background(), []string{"-busybox", "/nonexistent"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "reference") {
		t.Errorf("run without a reference: err = %v, want one about the reference", err)
	}
}
