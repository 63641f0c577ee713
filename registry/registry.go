// Package registry reads back and removes images in OCI registries with
// go-containerregistry: the digest a reference points to, the image's
// labels and exposed ports, and deletes for teardown.
package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RevisionLabel is the OCI label that holds the commit an image was built from.
const RevisionLabel = "org.opencontainers.image.revision"

// ErrDigestMismatch and ErrRevisionMismatch are wrapped by Verify's errors.
var (
	ErrDigestMismatch   = errors.New("digest mismatch")
	ErrRevisionMismatch = errors.New("revision label mismatch")
)

// Image describes an image in a registry.
type Image struct {
	Ref          string // repository@digest
	Digest       string // manifest digest
	ConfigDigest string // config blob digest (docker image ID after load)
	Labels       map[string]string
	Ports        []int // exposed TCP ports from the config, ascending
}

// Client talks to OCI registries.
type Client struct {
	insecure bool
	auth     authn.Authenticator
	keychain authn.Keychain
	remote   []remote.Option
}

// Option configures a Client.
type Option func(*Client)

// WithInsecure lets the client talk plain HTTP to registries.
func WithInsecure(insecure bool) Option {
	return func(c *Client) { c.insecure = insecure }
}

// WithAuth authenticates every request with a.
func WithAuth(a authn.Authenticator) Option {
	return func(c *Client) { c.auth, c.keychain = a, nil }
}

// WithKeychain looks up credentials for each registry in k.
func WithKeychain(k authn.Keychain) Option {
	return func(c *Client) { c.keychain, c.auth = k, nil }
}

// WithRemoteOptions adds options to every go-containerregistry call
// (transport, platform, ...).
func WithRemoteOptions(opts ...remote.Option) Option {
	return func(c *Client) { c.remote = append(c.remote, opts...) }
}

// New returns a Client. Without WithAuth or WithKeychain it is anonymous.
func New(opts ...Option) *Client {
	c := &Client{auth: authn.Anonymous}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

func (c *Client) options(ctx context.Context) []remote.Option {
	opts := []remote.Option{remote.WithContext(ctx)}
	if c.keychain != nil {
		opts = append(opts, remote.WithAuthFromKeychain(c.keychain))
	} else {
		opts = append(opts, remote.WithAuth(c.auth))
	}
	return append(opts, c.remote...)
}

func (c *Client) parse(ref string) (name.Reference, error) {
	var opts []name.Option
	if c.insecure {
		opts = append(opts, name.Insecure)
	}
	return name.ParseReference(ref, opts...)
}

// Inspect reads the manifest and config that ref points to. For an index,
// Digest is the index's and the rest comes from the image for the client's
// platform (linux/amd64 unless set with WithRemoteOptions).
func (c *Client) Inspect(ctx context.Context, ref string) (Image, error) {
	r, err := c.parse(ref)
	if err != nil {
		return Image{}, fmt.Errorf("inspecting %s: %w", ref, err)
	}
	desc, err := remote.Get(r, c.options(ctx)...)
	if err != nil {
		return Image{}, fmt.Errorf("inspecting %s: %w", ref, err)
	}
	img, err := desc.Image()
	if err != nil {
		return Image{}, fmt.Errorf("inspecting %s: %w", ref, err)
	}
	configDigest, err := img.ConfigName()
	if err != nil {
		return Image{}, fmt.Errorf("inspecting %s: reading config digest: %w", ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("inspecting %s: reading config: %w", ref, err)
	}
	ports, err := tcpPorts(cfg.Config.ExposedPorts)
	if err != nil {
		return Image{}, fmt.Errorf("inspecting %s: %w", ref, err)
	}
	labels := map[string]string{}
	for k, v := range cfg.Config.Labels {
		labels[k] = v
	}
	return Image{
		Ref:          r.Context().Digest(desc.Digest.String()).String(),
		Digest:       desc.Digest.String(),
		ConfigDigest: configDigest.String(),
		Labels:       labels,
		Ports:        ports,
	}, nil
}

// Verify inspects ref and checks that it points to digest and carries the
// revision label. The image is returned even when a check fails.
func (c *Client) Verify(ctx context.Context, ref, digest, revision string) (Image, error) {
	img, err := c.Inspect(ctx, ref)
	if err != nil {
		return Image{}, err
	}
	if img.Digest != digest {
		return img, fmt.Errorf("verifying %s: %w: registry has %s, expected %s", ref, ErrDigestMismatch, img.Digest, digest)
	}
	if got := img.Labels[RevisionLabel]; got != revision {
		return img, fmt.Errorf("verifying %s: %w: label %s is %q, expected %q", ref, ErrRevisionMismatch, RevisionLabel, got, revision)
	}
	return img, nil
}

// Delete deletes the manifest that ref points to. A tag is first resolved
// to its digest, since registries delete manifests by digest.
func (c *Client) Delete(ctx context.Context, ref string) error {
	r, err := c.parse(ref)
	if err != nil {
		return fmt.Errorf("deleting %s: %w", ref, err)
	}
	if _, ok := r.(name.Digest); !ok {
		desc, err := remote.Head(r, c.options(ctx)...)
		if err != nil {
			return fmt.Errorf("deleting %s: resolving tag: %w", ref, err)
		}
		r = r.Context().Digest(desc.Digest.String())
	}
	if err := remote.Delete(r, c.options(ctx)...); err != nil {
		return fmt.Errorf("deleting %s: %w", ref, err)
	}
	return nil
}

// tcpPorts returns the TCP ports of an image config's ExposedPorts
// ("8080/tcp", or "8080" which means TCP), ascending and without repeats.
func tcpPorts(exposed map[string]struct{}) ([]int, error) {
	var ports []int
	for p := range exposed {
		num, proto, _ := strings.Cut(p, "/")
		if proto != "" && !strings.EqualFold(proto, "tcp") {
			continue
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("invalid exposed port %q", p)
		}
		ports = append(ports, n)
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}
