package deployers

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// ErrHostKey is wrapped by every error of a connection refused because the
// host's key is unknown, changed or not the pinned one. Nothing runs on such
// a host.
var ErrHostKey = errors.New("SSH host key not trusted")

// Defaults for SSHConfig.
const (
	DefaultSSHKeepalive   = 15 * time.Second
	DefaultSSHDialTimeout = 15 * time.Second
)

// SSHConfig is how byop reaches one host over SSH. The host's key must be
// known beforehand, from a known_hosts file or a pinned fingerprint: byop
// never trusts a key on first use.
type SSHConfig struct {
	// Addr is host:port (port 22 if left out).
	Addr string
	// User is the login, a user who may run docker.
	User string
	// Signer is byop's private key (see LoadSigner).
	Signer ssh.Signer
	// KnownHostsFile is an OpenSSH known_hosts file listing the host's key.
	KnownHostsFile string
	// HostKeyFingerprint pins the host's key by its SHA256 fingerprint
	// ("SHA256:...", as ssh-keygen -l prints it). byop asks for an ed25519
	// host key first, so pin that one where the host has several.
	HostKeyFingerprint string
	// Keepalive is how often an idle connection is checked (default
	// DefaultSSHKeepalive); a connection that does not answer is dropped and
	// the next command dials again.
	Keepalive time.Duration
	// DialTimeout bounds connecting and the SSH handshake (default
	// DefaultSSHDialTimeout).
	DialTimeout time.Duration
}

// LoadSigner reads an unencrypted OpenSSH, PEM or PKCS#8 private key file.
func LoadSigner(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading SSH key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("reading SSH key %s: %w", path, err)
	}
	return s, nil
}

// hostAddr returns addr with port 22 when it has none.
func hostAddr(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return net.JoinHostPort(addr, "22")
	}
	return addr
}

// hostKeyPolicy returns how the host's key is checked, and the host key
// algorithms to ask for so that the host presents the key byop knows.
func hostKeyPolicy(c SSHConfig) (ssh.HostKeyCallback, []string, error) {
	addr := hostAddr(c.Addr)
	switch {
	case c.HostKeyFingerprint != "" && c.KnownHostsFile != "":
		return nil, nil, errors.New("both a known_hosts file and a pinned host key fingerprint: give one")
	case c.HostKeyFingerprint != "":
		want := c.HostKeyFingerprint
		cb := func(hostname string, _ net.Addr, key ssh.PublicKey) error {
			if got := ssh.FingerprintSHA256(key); got != want {
				return fmt.Errorf("%w: %s presented %s key %s, pinned is %s", ErrHostKey, hostname, key.Type(), got, want)
			}
			return nil
		}
		return cb, preferEd25519, nil
	case c.KnownHostsFile != "":
		kh, err := knownhosts.New(c.KnownHostsFile)
		if err != nil {
			return nil, nil, fmt.Errorf("reading known_hosts: %w", err)
		}
		cb := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			err := kh(hostname, remote, key)
			var ke *knownhosts.KeyError
			var re *knownhosts.RevokedError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &ke) && len(ke.Want) == 0:
				return fmt.Errorf("%w: %s is not in %s (its %s key is %s)", ErrHostKey, hostname, c.KnownHostsFile, key.Type(), ssh.FingerprintSHA256(key))
			case errors.As(err, &ke):
				return fmt.Errorf("%w: the %s key of %s changed: it presented %s, %s lists another", ErrHostKey, key.Type(), hostname, ssh.FingerprintSHA256(key), c.KnownHostsFile)
			case errors.As(err, &re):
				return fmt.Errorf("%w: %s presented a revoked key", ErrHostKey, hostname)
			}
			return fmt.Errorf("%w: %w", ErrHostKey, err)
		}
		return cb, knownAlgorithms(kh, addr), nil
	}
	return nil, nil, errors.New("no known_hosts file and no pinned host key fingerprint: byop does not trust a host key on first use")
}

// preferEd25519 asks a host for its ed25519 key before any other.
var preferEd25519 = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
}

// knownAlgorithms returns the host key algorithms of the keys kh lists for
// addr, so that the host presents one of those: a host with several keys
// might otherwise present another, unlisted one.
func knownAlgorithms(kh ssh.HostKeyCallback, addr string) []string {
	// Asking about a key no one has makes knownhosts list the ones it knows.
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if !errors.As(kh(addr, &net.TCPAddr{IP: net.IPv4zero}, probe.PublicKey()), &ke) {
		return nil
	}
	var algos []string
	for _, k := range ke.Want {
		t := k.Key.Type()
		if t == ssh.KeyAlgoRSA {
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
			continue
		}
		algos = append(algos, t)
	}
	slices.SortStableFunc(algos, func(a, b string) int {
		// Keep ed25519 first when known.
		switch {
		case a == ssh.KeyAlgoED25519 && b != a:
			return -1
		case b == ssh.KeyAlgoED25519 && a != b:
			return 1
		}
		return 0
	})
	return slices.Compact(algos)
}

// sshConn is one SSH connection to a host, reused by every task that runs
// there. It dials on first use, checks the connection with keepalives and
// dials again after a failure.
type sshConn struct {
	addr      string
	cfg       *ssh.ClientConfig
	keepalive time.Duration
	log       *slog.Logger
	dialer    net.Dialer

	mu     sync.Mutex
	client *ssh.Client
	closed bool
}

func newSSHConn(c SSHConfig, log *slog.Logger) (*sshConn, error) {
	if c.Addr == "" || c.User == "" || c.Signer == nil {
		return nil, errors.New("SSH host needs an address, a user and a key")
	}
	cb, algos, err := hostKeyPolicy(c)
	if err != nil {
		return nil, fmt.Errorf("SSH host %s: %w", c.Addr, err)
	}
	if c.Keepalive <= 0 {
		c.Keepalive = DefaultSSHKeepalive
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultSSHDialTimeout
	}
	return &sshConn{
		addr: hostAddr(c.Addr),
		cfg: &ssh.ClientConfig{
			User:              c.User,
			Auth:              []ssh.AuthMethod{ssh.PublicKeys(c.Signer)},
			HostKeyCallback:   cb,
			HostKeyAlgorithms: algos,
			Timeout:           c.DialTimeout,
		},
		keepalive: c.Keepalive,
		log:       log.With("ssh", hostAddr(c.Addr)),
		dialer:    net.Dialer{Timeout: c.DialTimeout},
	}, nil
}

// get returns the live client, dialing one if there is none.
func (c *sshConn) get(ctx context.Context) (*ssh.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("SSH connection closed")
	}
	if c.client != nil {
		return c.client, nil
	}
	cl, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.client = cl
	go c.watch(cl)
	return cl, nil
}

func (c *sshConn) dial(ctx context.Context) (*ssh.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	tcp, err := c.dialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", c.addr, err)
	}
	// The handshake has no context: bound it with a deadline, and end it
	// when ctx ends.
	deadline, _ := ctx.Deadline()
	tcp.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { tcp.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(tcp, c.addr, c.cfg)
	stop()
	if err != nil {
		tcp.Close()
		if errors.Is(err, ErrHostKey) {
			return nil, fmt.Errorf("connecting to %s: %w", c.addr, err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connecting to %s: %w", c.addr, ctx.Err())
		}
		return nil, fmt.Errorf("connecting to %s: SSH handshake: %w", c.addr, err)
	}
	tcp.SetDeadline(time.Time{})
	c.log.Info("SSH connected")
	return ssh.NewClient(sc, chans, reqs), nil
}

// watch sends keepalives on cl until it fails or closes, then drops it.
func (c *sshConn) watch(cl *ssh.Client) {
	done := make(chan struct{})
	go func() { cl.Wait(); close(done) }()
	tick := time.NewTicker(c.keepalive)
	defer tick.Stop()
	for {
		select {
		case <-done:
			c.drop(cl, errors.New("connection closed"))
			return
		case <-tick.C:
			answered := make(chan error, 1)
			go func() {
				_, _, err := cl.SendRequest("keepalive@openssh.com", true, nil)
				answered <- err
			}()
			var err error
			select {
			case err = <-answered:
			case <-time.After(c.keepalive):
				err = errors.New("no answer to keepalive")
			case <-done:
				err = errors.New("connection closed")
			}
			if err != nil {
				c.drop(cl, err)
				return
			}
		}
	}
}

// drop closes cl and forgets it, if it is still the live client.
func (c *sshConn) drop(cl *ssh.Client, why error) {
	c.mu.Lock()
	live := c.client == cl
	if live {
		c.client = nil
	}
	closed := c.closed
	c.mu.Unlock()
	cl.Close()
	if live && !closed {
		c.log.Warn("SSH connection dropped; the next command reconnects", "err", why)
	}
}

// session opens a session, reconnecting once when the connection is dead.
func (c *sshConn) session(ctx context.Context) (*ssh.Session, error) {
	for attempt := 0; ; attempt++ {
		cl, err := c.get(ctx)
		if err != nil {
			return nil, err
		}
		s, err := cl.NewSession()
		if err == nil {
			return s, nil
		}
		c.drop(cl, err)
		if attempt == 1 || ctx.Err() != nil {
			return nil, fmt.Errorf("opening SSH session on %s: %w", c.addr, err)
		}
	}
}

// DialContext connects to addr as seen from the host, through the SSH
// connection (the host's sshd must allow TCP forwarding).
func (c *sshConn) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		cl, err := c.get(ctx)
		if err != nil {
			return nil, err
		}
		conn, err := cl.DialContext(ctx, network, addr)
		if err == nil {
			return conn, nil
		}
		// The host said no (nothing listens, say): the connection is fine.
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) || ctx.Err() != nil || attempt == 1 {
			return nil, fmt.Errorf("connecting to %s on %s: %w", addr, c.addr, err)
		}
		c.drop(cl, err)
	}
}

// Close closes the connection; later calls fail.
func (c *sshConn) Close() error {
	c.mu.Lock()
	cl := c.client
	c.client, c.closed = nil, true
	c.mu.Unlock()
	if cl != nil {
		return cl.Close()
	}
	return nil
}

// inputRunner runs a program with an argument list and feeds it stdin.
type inputRunner interface {
	runner
	RunInput(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error)
}

// sshRunner runs programs on a host over its SSH connection. The argument
// vector is quoted by shellQuote for the login shell sshd hands it to; that
// shell must be a POSIX shell (sh, dash, bash).
type sshRunner struct{ conn *sshConn }

var _ inputRunner = sshRunner{}

func (r sshRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return r.RunInput(ctx, nil, name, args...)
}

func (r sshRunner) RunInput(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	argv := append([]string{name}, args...)
	s, err := r.conn.session(ctx)
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", name, err)
	}
	defer s.Close()
	var stdout, stderr bytes.Buffer
	s.Stdin, s.Stdout, s.Stderr = stdin, &stdout, &stderr
	done := make(chan error, 1)
	go func() { done <- s.Run(shellQuote(argv)) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Ask the host to end the command and stop waiting for it. sshd
		// delivers the signal to a non-root login only; a root login's
		// command runs on until it ends by itself.
		_ = s.Signal(ssh.SIGKILL)
		s.Close()
		return nil, &commandError{Argv: argv, Err: ctx.Err()}
	}
	if err == nil {
		return stdout.Bytes(), nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return stdout.Bytes(), &commandError{Argv: argv, Stderr: stderr.String(), Err: err}
	}
	return stdout.Bytes(), &commandError{Argv: argv, Stderr: stderr.String(), Err: fmt.Errorf("on %s: %w", r.conn.addr, err)}
}
