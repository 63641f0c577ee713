// Package sshtest starts a real OpenSSH server on loopback for tests, with
// host and user keys generated for the test. The "remote host" it serves is
// this machine: commands run as the current user, with this machine's Docker.
package sshtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Server is a running sshd.
type Server struct {
	// Addr is 127.0.0.1:<port>.
	Addr string
	// User is the login that the user key opens.
	User string
	// HostKey is the server's (only) host key, ed25519.
	HostKey ssh.PublicKey
	// Signer is the user key the server accepts; ClientKeyFile holds it in
	// OpenSSH format.
	Signer        ssh.Signer
	ClientKeyFile string
	// KnownHostsFile lists HostKey for Addr.
	KnownHostsFile string

	dir string
	cmd *exec.Cmd
	log *syncBuffer
}

// Options choose the server's keys instead of generated ones.
type Options struct {
	// HostKeyPEM is the ed25519 host private key in OpenSSH PEM form.
	HostKeyPEM []byte
	// AuthorizedKey is the user key the server accepts. Signer and
	// ClientKeyFile are then unset: the caller holds the private half.
	AuthorizedKey ssh.PublicKey
}

// Start starts sshd (the binary at path, e.g. testenv.SSHD(t)) and stops it
// when the test ends.
func Start(t testing.TB, sshd string) *Server {
	t.Helper()
	return StartWith(t, sshd, Options{})
}

// StartWith starts sshd with the keys o gives.
func StartWith(t testing.TB, sshd string, o Options) *Server {
	t.Helper()
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		// sshd's privilege separation directory; without root there is none.
		t.Logf("making /run/sshd: %v", err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{User: u.Username, dir: dir}
	hostPEM := o.HostKeyPEM
	if hostPEM == nil {
		_, hostPEM = NewKey(t)
	}
	hostSigner, err := ssh.ParsePrivateKey(hostPEM)
	if err != nil {
		t.Fatalf("reading host key: %v", err)
	}
	s.HostKey = hostSigner.PublicKey()
	authorized := o.AuthorizedKey
	if authorized == nil {
		userSigner, userPEM := NewKey(t)
		s.Signer, s.ClientKeyFile = userSigner, filepath.Join(dir, "id_ed25519")
		write(t, s.ClientKeyFile, userPEM, 0o600)
		authorized = userSigner.PublicKey()
	}
	write(t, filepath.Join(dir, "ssh_host_ed25519_key"), hostPEM, 0o600)
	write(t, filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(authorized), 0o600)

	// sshd cannot listen on port 0: take a free port and try again should
	// another process take it first.
	var lastErr error
	for range 5 {
		port := freePort(t)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(t, sshd, port); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("starting sshd: %v", lastErr)
	}
	s.KnownHostsFile = s.KnownHosts(t, s.HostKey)
	return s
}

func (s *Server) start(t testing.TB, sshd string, port int) error {
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
PermitRootLogin prohibit-password
AllowTcpForwarding yes
LogLevel INFO
`, port, filepath.Join(s.dir, "ssh_host_ed25519_key"), filepath.Join(s.dir, "authorized_keys"))
	confPath := filepath.Join(s.dir, "sshd_config")
	write(t, confPath, []byte(conf), 0o600)

	s.log = &syncBuffer{}
	cmd := exec.Command(sshd, "-D", "-e", "-f", confPath)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			return fmt.Errorf("sshd exited (%v): %s", err, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("sshd did not listen on %s: %s", s.Addr, s.log.String())
		}
	}
	s.cmd = cmd
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.log.String())
		}
	})
	return nil
}

// KnownHosts writes a known_hosts file that lists key for the server's
// address, and returns its path. With a key other than HostKey it makes a
// host whose key "changed".
func (s *Server) KnownHosts(t testing.TB, key ssh.PublicKey) string {
	t.Helper()
	f, err := os.CreateTemp(s.dir, "known_hosts-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if key != nil {
		if _, err := fmt.Fprintln(f, knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, key)); err != nil {
			t.Fatal(err)
		}
	}
	return f.Name()
}

// Log returns what sshd logged so far.
func (s *Server) Log() string { return s.log.String() }

// NewKey generates an ed25519 key and returns it with its private half in
// OpenSSH PEM form.
func NewKey(t testing.TB) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return signer, pem.EncodeToMemory(block)
}

func write(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
