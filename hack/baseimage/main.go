// Command baseimage builds a minimal busybox base image from a local,
// statically linked busybox binary and pushes it to a registry, so that test
// Dockerfiles have a FROM line that needs nothing from Docker Hub.
//
// The image is one layer: /bin/busybox, a symlink in /bin for every applet
// the binary reports, /tmp, /www, /root and an /etc/passwd and /etc/group
// with root and nobody. Timestamps are fixed, so the same binary always gives
// the same digest.
//
// Usage:
//
//	baseimage -busybox /bin/busybox -version 1.35.0 -insecure 127.0.0.1:5000/byop/busybox:1.35.0
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is the fixed time given to every file and to the image itself.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const imagePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "baseimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("baseimage", flag.ContinueOnError)
	busyboxPath := fs.String("busybox", "/bin/busybox", "statically linked busybox binary to put in the image")
	version := fs.String("version", "", "busybox version, recorded in the image's labels")
	insecure := fs.Bool("insecure", false, "talk plain HTTP to the registry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("want exactly one image reference argument")
	}

	var opts []name.Option
	if *insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(fs.Arg(0), opts...)
	if err != nil {
		return fmt.Errorf("parsing reference %q: %w", fs.Arg(0), err)
	}

	bin, err := os.ReadFile(*busyboxPath)
	if err != nil {
		return fmt.Errorf("reading busybox binary: %w", err)
	}
	applets, err := listApplets(ctx, *busyboxPath)
	if err != nil {
		return err
	}
	img, err := build(bin, applets, *version)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("computing image digest: %w", err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	fmt.Fprintf(stdout, "pushed %s@%s\n", ref, digest)
	return nil
}

// listApplets asks the busybox binary for the applets it was built with.
func listApplets(ctx context.Context, busyboxPath string) ([]string, error) {
	out, err := exec.CommandContext(ctx, busyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets: %w", err)
	}
	return strings.Fields(string(out)), nil
}

// build returns the base image: one layer made by layerTar, a config that
// runs sh with a usual PATH, and labels naming what it is.
func build(busybox []byte, applets []string, version string) (v1.Image, error) {
	tarBytes, err := layerTar(busybox, applets)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("making layer: %w", err)
	}

	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "baseimage: busybox and its applets",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("appending layer: %w", err)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: epoch}
	cfg.OS = "linux"
	cfg.Architecture = runtime.GOARCH
	cfg.Config.Env = []string{"PATH=" + imagePath}
	cfg.Config.Cmd = []string{"sh"}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "busybox",
		"org.opencontainers.image.description": "busybox base image for byop's tests, built from a local static busybox",
		"org.opencontainers.image.version":     version,
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("setting config: %w", err)
	}
	return img, nil
}

// layerTar returns the uncompressed tar of the image's only layer.
func layerTar(busybox []byte, applets []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)

	dirs := []struct {
		name string
		mode int64
	}{
		{"bin/", 0o755},
		{"etc/", 0o755},
		{"root/", 0o700},
		{"tmp/", 0o1777},
		{"www/", 0o755},
	}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, fmt.Errorf("writing directory %s: %w", d.name, err)
		}
	}

	files := []struct {
		name string
		mode int64
		body []byte
	}{
		{"bin/busybox", 0o755, busybox},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{"etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")},
	}
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.body)), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing header of %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, fmt.Errorf("writing %s: %w", f.name, err)
		}
	}

	seen := map[string]bool{"busybox": true}
	sorted := append([]string(nil), applets...)
	sort.Strings(sorted)
	for _, a := range sorted {
		a = path.Base(a)
		if seen[a] || a == "." || a == "/" {
			continue
		}
		seen[a] = true
		hdr := &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing applet link %s: %w", a, err)
		}
	}

	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing layer tar: %w", err)
	}
	return buf.Bytes(), nil
}
