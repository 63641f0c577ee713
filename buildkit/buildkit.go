// Package buildkit builds a source tree into an image with a BuildKit
// daemon and pushes it to a registry.
//
// Builds use the Dockerfile frontend built into buildkitd (no frontend image
// is pulled), send the context and the Dockerfile as local mounts, and push
// the result with the image exporter. Build progress is turned into plain
// log lines; a failed build returns a short error naming the failing step.
package buildkit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/session"
	"github.com/tonistiigi/fsutil"
)

// Spec says what to build and where to push it.
type Spec struct {
	ContextDir string
	Dockerfile string            // path relative to ContextDir; "" means "Dockerfile"
	Image      string            // full reference to push, e.g. 127.0.0.1:5000/owner/repo:<40-hex sha>
	Labels     map[string]string // image labels
	NoCache    bool
	CacheRef   string            // optional registry cache ref, imported and exported (mode=max)
	Insecure   bool              // registry is plain HTTP
	Log        func(line string) // receives build log lines as they come; may be nil
}

// Result is what a successful build pushed.
type Result struct {
	Digest string // manifest digest pushed, "sha256:..."
}

// Client builds images with one buildkitd.
type Client struct {
	bk      *client.Client
	session []session.Attachable
}

// Option configures a Client.
type Option func(*options)

type options struct {
	clientOpts []client.ClientOpt
	session    []session.Attachable
}

// WithClientOpts passes options to the BuildKit client (TLS, dialer, ...).
func WithClientOpts(opts ...client.ClientOpt) Option {
	return func(o *options) { o.clientOpts = append(o.clientOpts, opts...) }
}

// WithSession attaches services to every build session, for example a
// registry auth provider for pushing to a registry that needs credentials.
func WithSession(a ...session.Attachable) Option {
	return func(o *options) { o.session = append(o.session, a...) }
}

// New returns a Client for the buildkitd at addr
// (e.g. unix:///run/buildkit/buildkitd.sock or tcp://host:1234).
// The connection is made lazily; use Ping to check it.
func New(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bk, err := client.New(ctx, addr, o.clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to buildkitd at %s: %w", addr, err)
	}
	return &Client{bk: bk, session: o.session}, nil
}

// Ping checks that buildkitd answers and has at least one worker.
func (c *Client) Ping(ctx context.Context) error {
	workers, err := c.bk.ListWorkers(ctx)
	if err != nil {
		return fmt.Errorf("listing buildkitd workers: %w", err)
	}
	if len(workers) == 0 {
		return errors.New("buildkitd has no workers")
	}
	return nil
}

// Close closes the connection to buildkitd.
func (c *Client) Close() error {
	if err := c.bk.Close(); err != nil {
		return fmt.Errorf("closing buildkit client: %w", err)
	}
	return nil
}

// Build builds s.ContextDir with its Dockerfile and pushes the image to
// s.Image. A failed build returns a *BuildError; the full detail goes to
// s.Log.
func (c *Client) Build(ctx context.Context, s Spec) (Result, error) {
	logf := s.Log
	if logf == nil {
		logf = func(string) {}
	}
	opt, err := solveOpt(s)
	if err != nil {
		return Result{}, err
	}
	opt.Session = c.session

	p := newPrinter(logf)
	ch := make(chan *client.SolveStatus)
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for st := range ch {
			p.write(st)
		}
		p.flush()
	}()

	resp, err := c.bk.Solve(ctx, nil, opt, ch) // closes ch
	<-printed
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			logf("ERROR: build canceled: " + ctxErr.Error())
			return Result{}, fmt.Errorf("building %s: %w", s.Image, context.Cause(ctx))
		}
		berr := p.buildError(err)
		logf("ERROR: " + err.Error())
		return Result{}, berr
	}
	dgst := resp.ExporterResponse[exptypes.ExporterImageDigestKey]
	if dgst == "" {
		return Result{}, fmt.Errorf("building %s: buildkitd returned no image digest", s.Image)
	}
	logf("pushed " + s.Image + "@" + dgst)
	return Result{Digest: dgst}, nil
}

// solveOpt checks the spec and turns it into the options of one solve.
func solveOpt(s Spec) (client.SolveOpt, error) {
	if s.Image == "" {
		return client.SolveOpt{}, errors.New("no image reference to push to")
	}
	dockerfile := s.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	dockerfile = filepath.Clean(filepath.FromSlash(dockerfile))
	if !filepath.IsLocal(dockerfile) {
		return client.SolveOpt{}, fmt.Errorf("dockerfile path %q is outside the repository", s.Dockerfile)
	}
	if err := checkDockerfile(s.ContextDir, dockerfile); err != nil {
		return client.SolveOpt{}, err
	}

	contextFS, err := fsutil.NewFS(s.ContextDir)
	if err != nil {
		return client.SolveOpt{}, fmt.Errorf("opening build context %s: %w", s.ContextDir, err)
	}
	dockerfileDir := filepath.Join(s.ContextDir, filepath.Dir(dockerfile))
	dockerfileFS, err := fsutil.NewFS(dockerfileDir)
	if err != nil {
		return client.SolveOpt{}, fmt.Errorf("opening dockerfile directory %s: %w", dockerfileDir, err)
	}

	attrs := map[string]string{
		"filename": filepath.Base(dockerfile),
	}
	for k, v := range s.Labels {
		attrs["label:"+k] = v
	}
	if s.NoCache {
		attrs["no-cache"] = ""
	}

	push := map[string]string{
		"name": s.Image,
		"push": "true",
	}
	if s.Insecure {
		push["registry.insecure"] = "true"
	}

	opt := client.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: attrs,
		LocalMounts: map[string]fsutil.FS{
			"context":    contextFS,
			"dockerfile": dockerfileFS,
		},
		Exports: []client.ExportEntry{{Type: client.ExporterImage, Attrs: push}},
	}
	if s.CacheRef != "" {
		cache := map[string]string{"ref": s.CacheRef}
		if s.Insecure {
			cache["registry.insecure"] = "true"
		}
		if !s.NoCache {
			opt.CacheImports = []client.CacheOptionsEntry{{Type: "registry", Attrs: cache}}
		}
		export := map[string]string{"mode": "max"}
		for k, v := range cache {
			export[k] = v
		}
		opt.CacheExports = []client.CacheOptionsEntry{{Type: "registry", Attrs: export}}
	}
	return opt, nil
}

// checkDockerfile makes sure dockerfile (a local path) names a regular file
// inside contextDir.
func checkDockerfile(contextDir, dockerfile string) error {
	shown := path.Clean(filepath.ToSlash(dockerfile))
	root, err := os.OpenRoot(contextDir)
	if err != nil {
		return fmt.Errorf("opening build context %s: %w", contextDir, err)
	}
	defer root.Close()
	fi, err := root.Stat(dockerfile)
	switch {
	case errors.Is(err, fs.ErrNotExist), err == nil && !fi.Mode().IsRegular():
		return fmt.Errorf("%w at %s in the repository", ErrNoDockerfile, shown)
	case err != nil:
		return fmt.Errorf("checking Dockerfile %s: %w", shown, err)
	}
	return nil
}
