package deployers

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DefaultRemoteDir is where a remote host keeps byop's compose files.
const DefaultRemoteDir = "/var/lib/byop/compose"

// ErrImageMismatch: the image on the host is not the one in the registry.
var ErrImageMismatch = errors.New("image on the host does not match the registry")

// Host is one preview host that byop reaches over SSH.
type Host struct {
	// Name identifies the host in the pool, logs and errors.
	Name string
	SSH  SSHConfig
	// Dir is where the host keeps compose files (default DefaultRemoteDir).
	Dir string
	// PublishIP is the host address previews' ports are published on, which
	// byop's router then connects to. Empty: 127.0.0.1 on the host, which
	// byop reaches through the SSH connection (a local port forwarded to it).
	PublishIP string
	// StreamImages says the host cannot reach the registry: byop streams
	// each image through the SSH connection into docker load instead of
	// letting the host pull it.
	StreamImages bool
	// MaxPreviews is how many previews the pool places on the host (at least 1).
	MaxPreviews int
}

// RegistryAccess is how byop and the hosts read images from the registry.
type RegistryAccess struct {
	// Insecure talks plain HTTP to the registry.
	Insecure bool
	// Auth are the registry credentials (nil: anonymous). A host that pulls
	// gets them through docker login's stdin, never on a command line.
	Auth authn.Authenticator
}

// RemoteOptions configure a Remote.
type RemoteOptions struct {
	Log           *slog.Logger  // default: discard
	HealthTimeout time.Duration // default DefaultHealthTimeout
	// ComposeCommand is the compose command on the host; empty: detected.
	ComposeCommand []string
	Registry       RegistryAccess
}

// Remote runs previews on one host over SSH, the way Local runs them here:
// the same compose file, the same docker and compose commands, run in an SSH
// session on the host instead of a local process. One SSH connection is
// reused by every call.
type Remote struct {
	host    Host
	conn    *sshConn
	e       *engine
	tunnels *tunnels // nil when the router connects to PublishIP directly
}

// NewRemote returns a Remote for h. It does not connect yet: the first call
// does, and fails with ErrHostKey if the host's key is not the known one.
func NewRemote(h Host, o RemoteOptions) (*Remote, error) {
	if h.Name == "" {
		h.Name = h.SSH.Addr
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.HealthTimeout == 0 {
		o.HealthTimeout = DefaultHealthTimeout
	}
	if o.HealthTimeout < 0 {
		return nil, fmt.Errorf("host %s: health timeout %v is negative", h.Name, o.HealthTimeout)
	}
	if h.Dir == "" {
		h.Dir = DefaultRemoteDir
	}
	if !path.IsAbs(h.Dir) {
		return nil, fmt.Errorf("host %s: compose directory %q is not absolute", h.Name, h.Dir)
	}
	bindIP := loopback
	if h.PublishIP != "" {
		ip := net.ParseIP(h.PublishIP)
		if ip == nil {
			return nil, fmt.Errorf("host %s: publish address %q is not an IP address", h.Name, h.PublishIP)
		}
		bindIP = ip.String()
	}
	log := o.Log.With("host", h.Name)
	conn, err := newSSHConn(h.SSH, log)
	if err != nil {
		return nil, err
	}
	run := sshRunner{conn: conn}
	docker := dockerCLI{run: run, bin: "docker"}
	r := &Remote{host: h, conn: conn}
	r.e = &engine{
		log:           log,
		healthTimeout: o.HealthTimeout,
		run:           run,
		docker:        docker,
		files:         remoteFiles{dir: h.Dir, run: run},
		images:        newRemoteImages(run, docker, h.StreamImages, o.Registry, log),
		bindIP:        bindIP,
		// The app must answer on the host itself: probes go through SSH.
		http:       probeClient(conn.DialContext),
		composeCmd: slices.Clone(o.ComposeCommand),
		composeOK:  len(o.ComposeCommand) > 0,
	}
	if h.PublishIP == "" {
		r.tunnels = newTunnels(conn.DialContext, log)
		r.e.expose = r.tunnels.expose
	}
	return r, nil
}

// Host returns the host's settings.
func (r *Remote) Host() Host { return r.host }

// Deploy starts s.Revision on the host beside the revisions that run there,
// and returns where byop's router reaches it once it answers from the host
// and the container that answers carries s.Revision. See Local.Deploy.
func (r *Remote) Deploy(ctx context.Context, s Spec) (Endpoint, error) {
	ep, err := r.e.deploy(ctx, s)
	if err != nil {
		return Endpoint{}, fmt.Errorf("on host %s: %w", r.host.Name, err)
	}
	return ep, nil
}

// Retire removes the project's other revisions on the host. See Local.Retire.
func (r *Remote) Retire(ctx context.Context, project, keepRevision string) error {
	if err := r.e.retire(ctx, project, keepRevision); err != nil {
		return fmt.Errorf("on host %s: %w", r.host.Name, err)
	}
	r.pruneTunnels(ctx)
	return nil
}

// Teardown removes the project from the host. See Local.Teardown.
func (r *Remote) Teardown(ctx context.Context, project string) error {
	if err := r.e.teardown(ctx, project); err != nil {
		return fmt.Errorf("on host %s: %w", r.host.Name, err)
	}
	r.pruneTunnels(ctx)
	return nil
}

// List returns the revisions that run on the host, with the endpoints
// byop's router reaches them at. See Local.List.
func (r *Remote) List(ctx context.Context) ([]Running, error) {
	rs, err := r.e.list(ctx)
	if err != nil {
		return nil, fmt.Errorf("on host %s: %w", r.host.Name, err)
	}
	return rs, nil
}

// Close closes the forwarded ports and the SSH connection.
func (r *Remote) Close() error {
	if r.tunnels != nil {
		r.tunnels.close()
	}
	return r.conn.Close()
}

// pruneTunnels closes forwarded ports whose container is gone.
func (r *Remote) pruneTunnels(ctx context.Context) {
	if r.tunnels == nil {
		return
	}
	rs, err := r.e.list(ctx)
	if err != nil {
		r.e.log.Warn("listing previews to close unused forwards", "err", err)
		return
	}
	// List forwards what runs: the local addresses it returns stay open.
	keep := map[string]bool{}
	for _, x := range rs {
		keep[x.Endpoint.URL.Host] = true
	}
	r.tunnels.prune(keep)
}

// remoteFiles keeps compose files in a directory of the host, written
// through the SSH session's stdin.
type remoteFiles struct {
	dir string
	run inputRunner
}

func (f remoteFiles) path(project string) string {
	return path.Join(f.dir, project+".compose.yml")
}

func (f remoteFiles) read(ctx context.Context, project string) ([]byte, error) {
	p := f.path(project)
	// test -e tells "missing" from "unreadable" without parsing messages.
	if _, err := f.run.Run(ctx, "test", "-e", p); err != nil {
		var st interface{ ExitStatus() int }
		if errors.As(err, &st) && st.ExitStatus() == 1 {
			return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
		}
		return nil, err
	}
	return f.run.Run(ctx, "cat", "--", p)
}

func (f remoteFiles) write(ctx context.Context, project string, b []byte) error {
	p := f.path(project)
	tmp := p + ".tmp"
	if _, err := f.run.Run(ctx, "mkdir", "-p", "-m", "700", "--", f.dir); err != nil {
		return err
	}
	// tee writes its stdin to the file (and to stdout, which is dropped).
	if _, err := f.run.RunInput(ctx, strings.NewReader(string(b)), "tee", "--", tmp); err != nil {
		return err
	}
	_, err := f.run.Run(ctx, "mv", "-f", "--", tmp, p)
	return err
}

func (f remoteFiles) remove(ctx context.Context, project string) error {
	_, err := f.run.Run(ctx, "rm", "-f", "--", f.path(project))
	return err
}

// remoteImages brings images to a host: the host pulls them, or byop streams
// them through SSH into docker load. Either way the image on the host must
// then be the registry's, by content.
type remoteImages struct {
	run    inputRunner
	docker dockerCLI
	stream bool
	reg    RegistryAccess
	log    *slog.Logger

	mu       sync.Mutex
	loggedIn map[string]bool // registries the host's docker is logged in to
}

func newRemoteImages(run inputRunner, docker dockerCLI, stream bool, reg RegistryAccess, log *slog.Logger) *remoteImages {
	if reg.Auth == nil {
		reg.Auth = authn.Anonymous
	}
	return &remoteImages{run: run, docker: docker, stream: stream, reg: reg, log: log, loggedIn: map[string]bool{}}
}

func (ri *remoteImages) remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(ri.reg.Auth)}
}

func (ri *remoteImages) ensure(ctx context.Context, s Spec) (string, error) {
	var opts []name.Option
	if ri.reg.Insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewDigest(s.Image, opts...)
	if err != nil {
		return "", fmt.Errorf("reading image reference %s: %w", s.Image, err)
	}
	img, err := remote.Image(ref, ri.remoteOptions(ctx)...)
	if err != nil {
		return "", fmt.Errorf("reading %s from the registry: %w", s.Image, err)
	}
	want, err := img.ConfigName()
	if err != nil {
		return "", fmt.Errorf("reading the config digest of %s: %w", s.Image, err)
	}
	if ri.stream {
		// A loaded image has no repository digest: it is run by a tag
		// that names the commit, checked against the config digest.
		tag, err := name.NewTag(ref.Context().String()+":"+s.Revision, opts...)
		if err != nil {
			return "", fmt.Errorf("naming the streamed image: %w", err)
		}
		if ri.matches(ctx, tag.String(), want, ref.DigestStr()) == nil {
			return tag.String(), nil
		}
		if err := ri.load(ctx, tag, img); err != nil {
			return "", err
		}
		return tag.String(), ri.matches(ctx, tag.String(), want, ref.DigestStr())
	}
	if ri.matches(ctx, s.Image, want, ref.DigestStr()) == nil {
		return s.Image, nil
	}
	if err := ri.login(ctx, ref.Context().Registry); err != nil {
		return "", err
	}
	if err := ri.docker.pull(ctx, s.Image); err != nil {
		return "", err
	}
	return s.Image, ri.matches(ctx, s.Image, want, ref.DigestStr())
}

// matches checks that the host's image ref is the registry's image: its ID
// is the config digest (Docker's own image store), or the manifest digest
// (the containerd image store, whose IDs are manifest digests).
func (ri *remoteImages) matches(ctx context.Context, ref string, config v1.Hash, manifest string) error {
	out, err := ri.run.Run(ctx, ri.docker.bin, "image", "inspect", "--format", "{{.Id}}", "--", ref)
	if err != nil {
		return fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	id := strings.TrimSpace(string(out))
	if id != config.String() && id != manifest {
		return fmt.Errorf("%w: %s has ID %s on the host, the registry's config digest is %s", ErrImageMismatch, ref, id, config)
	}
	return nil
}

// load streams img as a docker tarball through the SSH session into docker
// load: no file on either side.
func (ri *remoteImages) load(ctx context.Context, tag name.Tag, img v1.Image) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	wrote := make(chan error, 1)
	go func() {
		err := tarball.Write(tag, img, pw)
		pw.CloseWithError(err)
		wrote <- err
	}()
	start := time.Now()
	_, err := ri.run.RunInput(ctx, pr, ri.docker.bin, "load", "--quiet")
	// Unblock the writer if docker load stopped reading.
	pr.CloseWithError(errors.New("docker load ended"))
	werr := <-wrote
	if werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		if werr != nil && !errors.Is(err, werr) {
			err = fmt.Errorf("%w (reading from the registry: %w)", err, werr)
		}
		return fmt.Errorf("streaming %s into docker load: %w", tag, err)
	}
	ri.log.Info("streamed image to the host", "image", tag.String(), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// login logs the host's docker in to registry, once, with the password on
// stdin. Anonymous access needs no login.
func (ri *remoteImages) login(ctx context.Context, registry name.Registry) error {
	host := registry.RegistryStr()
	ri.mu.Lock()
	defer ri.mu.Unlock()
	if ri.loggedIn[host] {
		return nil
	}
	cfg, err := authn.Authorization(ctx, ri.reg.Auth)
	if err != nil {
		return fmt.Errorf("reading credentials for %s: %w", host, err)
	}
	user, pass := cfg.Username, cfg.Password
	if user == "" && pass == "" && cfg.Auth != "" {
		b, err := base64.StdEncoding.DecodeString(cfg.Auth)
		if err != nil {
			return fmt.Errorf("reading credentials for %s: bad auth field", host)
		}
		user, pass, _ = strings.Cut(string(b), ":")
	}
	switch {
	case user == "" && pass == "" && cfg.IdentityToken == "" && cfg.RegistryToken == "":
		ri.loggedIn[host] = true // anonymous
		return nil
	case user == "" || pass == "":
		return fmt.Errorf("logging in to %s: docker login needs a username and password", host)
	}
	if _, err := ri.run.RunInput(ctx, strings.NewReader(pass), ri.docker.bin, "login", "--username", user, "--password-stdin", "--", host); err != nil {
		return fmt.Errorf("logging in to %s on the host: %w", host, err)
	}
	ri.loggedIn[host] = true
	return nil
}

// tunnels forwards local ports to ports on the host, through SSH, so that
// byop's router reaches previews published on the host's loopback.
type tunnels struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	log  *slog.Logger

	mu     sync.Mutex
	byHost map[string]*tunnel // host-side address -> forward
	closed bool
}

type tunnel struct {
	ln     net.Listener
	remote string
}

func newTunnels(dial func(ctx context.Context, network, addr string) (net.Conn, error), log *slog.Logger) *tunnels {
	return &tunnels{dial: dial, log: log, byHost: map[string]*tunnel{}}
}

// expose returns a local URL forwarded to hostURL's address on the host,
// opening the forward on first use.
func (t *tunnels) expose(_ context.Context, hostURL *url.URL) (*url.URL, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("forwards closed")
	}
	tn, ok := t.byHost[hostURL.Host]
	if !ok {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("opening a local port for %s: %w", hostURL.Host, err)
		}
		tn = &tunnel{ln: ln, remote: hostURL.Host}
		t.byHost[hostURL.Host] = tn
		go t.serve(tn)
	}
	u := *hostURL
	u.Host = tn.ln.Addr().String()
	return &u, nil
}

func (t *tunnels) serve(tn *tunnel) {
	for {
		c, err := tn.ln.Accept()
		if err != nil {
			return
		}
		go t.forward(c, tn.remote)
	}
}

func (t *tunnels) forward(c net.Conn, remote string) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	rc, err := t.dial(ctx, "tcp", remote)
	cancel()
	if err != nil {
		t.log.Warn("forwarding to the host", "to", remote, "err", err)
		return
	}
	defer rc.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go pipe(rc, c)
	go pipe(c, rc)
	<-done
	<-done
}

// prune closes the forwards whose local address is not in keep.
func (t *tunnels) prune(keep map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr, tn := range t.byHost {
		if !keep[tn.ln.Addr().String()] {
			tn.ln.Close()
			delete(t.byHost, addr)
		}
	}
}

func (t *tunnels) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for addr, tn := range t.byHost {
		tn.ln.Close()
		delete(t.byHost, addr)
	}
}
