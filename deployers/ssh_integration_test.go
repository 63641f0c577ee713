package deployers

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/byop-dev/byop/internal/sshtest"
	"github.com/byop-dev/byop/internal/testenv"
)

func newTestConn(t *testing.T) (*sshConn, *sshtest.Server) {
	t.Helper()
	srv := sshtest.Start(t, testenv.SSHD(t))
	c, err := newSSHConn(SSHConfig{Addr: srv.Addr, User: srv.User, Signer: srv.Signer, KnownHostsFile: srv.KnownHostsFile}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, srv
}

func TestSSHRunnerHandsTheProgramExactlyItsArgumentVector(t *testing.T) {
	c, _ := newTestConn(t)
	r := sshRunner{conn: c}
	for _, tt := range shellQuoteCases {
		t.Run(tt.name, func(t *testing.T) {
			out, err := r.Run(context.Background(), "printf", append([]string{`%s\0`}, tt.argv...)...)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Split(string(out), "\x00")
			if got = got[:len(got)-1]; !reflect.DeepEqual(got, tt.argv) {
				t.Errorf("the host's printf got %q, want %q", got, tt.argv)
			}
		})
	}
}

func TestSSHRunnerFeedsStdinAndReportsFailures(t *testing.T) {
	c, _ := newTestConn(t)
	r := sshRunner{conn: c}
	ctx := context.Background()
	in := strings.Repeat("a line of stdin\n", 10000)
	out, err := r.RunInput(ctx, strings.NewReader(in), "cat")
	if err != nil || string(out) != in {
		t.Fatalf("cat of %d bytes = %d bytes, %v", len(in), len(out), err)
	}

	_, err = r.Run(ctx, "ls", "--", "/no/such/path")
	var ce *commandError
	if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, "No such file") {
		t.Fatalf("failing command error = %#v, want a commandError with its stderr", err)
	}
	var st interface{ ExitStatus() int }
	if !errors.As(err, &st) || st.ExitStatus() != 2 {
		t.Errorf("exit status not reported: %v", err)
	}
}

func TestSSHRunnerStopsWaitingWhenTheContextEnds(t *testing.T) {
	c, _ := newTestConn(t)
	r := sshRunner{conn: c}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Run(ctx, "sleep", "10")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run(sleep 10) = %v, want the deadline", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Run returned after %v", took)
	}
	// The connection is still good for the next command.
	if out, err := r.Run(context.Background(), "echo", "ok"); err != nil || string(out) != "ok\n" {
		t.Errorf("next command = %q, %v", out, err)
	}
}

func TestSSHConnIsReusedAndRedialsAfterItDrops(t *testing.T) {
	c, srv := newTestConn(t)
	r := sshRunner{conn: c}
	ctx := context.Background()
	for range 5 {
		if _, err := r.Run(ctx, "true"); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(srv.Log(), "Accepted publickey"); n != 1 {
		t.Fatalf("five commands made %d logins, want one reused connection", n)
	}

	c.mu.Lock()
	c.client.Close() // the network drops it
	c.mu.Unlock()
	if out, err := r.Run(ctx, "echo", "again"); err != nil || string(out) != "again\n" {
		t.Fatalf("command after the drop = %q, %v", out, err)
	}
	if n := strings.Count(srv.Log(), "Accepted publickey"); n != 2 {
		t.Errorf("logins after a drop = %d, want 2", n)
	}
	// Forwarding reconnects the same way.
	c.mu.Lock()
	c.client.Close()
	c.mu.Unlock()
	if _, err := c.DialContext(ctx, "tcp", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("dialing a closed port through a dropped connection = %v, want the host's refusal", err)
	}
}

func TestSSHConnRefusesToStartWithoutAWayToCheckTheHostKey(t *testing.T) {
	signer, _ := sshtest.NewKey(t)
	tests := []struct {
		name string
		cfg  SSHConfig
	}{
		{"no known_hosts and no fingerprint", SSHConfig{Addr: "h", User: "u", Signer: signer}},
		{"both", SSHConfig{Addr: "h", User: "u", Signer: signer, KnownHostsFile: "/dev/null", HostKeyFingerprint: "SHA256:x"}},
		{"known_hosts missing", SSHConfig{Addr: "h", User: "u", Signer: signer, KnownHostsFile: "/no/such/known_hosts"}},
		{"no key", SSHConfig{Addr: "h", User: "u", KnownHostsFile: "/dev/null"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := newSSHConn(tt.cfg, slog.New(slog.DiscardHandler)); err == nil {
				t.Error("newSSHConn succeeded")
			}
		})
	}
}

// recordingInput is a runner that records argument vectors and stdin.
type recordingInput struct {
	mu     sync.Mutex
	argv   [][]string
	stdin  []string
	answer func(argv []string) ([]byte, error)
}

func (r *recordingInput) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return r.RunInput(ctx, nil, name, args...)
}

func (r *recordingInput) RunInput(_ context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	argv := append([]string{name}, args...)
	var in string
	if stdin != nil {
		b, _ := io.ReadAll(stdin)
		in = string(b)
	}
	r.mu.Lock()
	r.argv = append(r.argv, argv)
	r.stdin = append(r.stdin, in)
	r.mu.Unlock()
	if r.answer != nil {
		return r.answer(argv)
	}
	return nil, nil
}

func TestRegistryLoginPassesThePasswordOnStdinOnly(t *testing.T) {
	const secret = "s3cr3t-'$(rm -rf /)'"
	tests := []struct {
		name      string
		auth      authn.Authenticator
		wantArgv  [][]string
		wantStdin []string
	}{
		{
			name:      "username and password",
			auth:      &authn.Basic{Username: "bot", Password: secret},
			wantArgv:  [][]string{{"docker", "login", "--username", "bot", "--password-stdin", "--", "registry.example:5000"}},
			wantStdin: []string{secret},
		},
		{
			name:      "docker config auth field",
			auth:      authn.FromConfig(authn.AuthConfig{Auth: "Ym90Ono6c2VjcmV0OnBhcnQ="}), // bot:z:secret:part
			wantArgv:  [][]string{{"docker", "login", "--username", "bot", "--password-stdin", "--", "registry.example:5000"}},
			wantStdin: []string{"z:secret:part"},
		},
		{name: "anonymous runs nothing", auth: authn.Anonymous},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := &recordingInput{}
			ri := newRemoteImages(run, dockerCLI{run: run, bin: "docker"}, false, RegistryAccess{Auth: tt.auth}, slog.New(slog.DiscardHandler))
			reg, _ := name.NewRegistry("registry.example:5000")
			for range 2 { // logs in once
				if err := ri.login(context.Background(), reg); err != nil {
					t.Fatal(err)
				}
			}
			if !reflect.DeepEqual(run.argv, tt.wantArgv) || !reflect.DeepEqual(run.stdin, tt.wantStdin) {
				t.Errorf("ran %q with stdin %q, want %q with %q", run.argv, run.stdin, tt.wantArgv, tt.wantStdin)
			}
			for _, argv := range run.argv {
				if strings.Contains(strings.Join(argv, " "), "secret") || strings.Contains(strings.Join(argv, " "), "s3cr3t") {
					t.Errorf("a secret is on the command line: %q", argv)
				}
			}
		})
	}
}

func TestRegistryLoginRefusesTokensDockerLoginCannotTake(t *testing.T) {
	run := &recordingInput{}
	ri := newRemoteImages(run, dockerCLI{run: run, bin: "docker"}, false,
		RegistryAccess{Auth: authn.FromConfig(authn.AuthConfig{Username: "bot"})}, slog.New(slog.DiscardHandler))
	reg, _ := name.NewRegistry("registry.example")
	if err := ri.login(context.Background(), reg); err == nil {
		t.Error("login with a username and no password succeeded")
	}
	if len(run.argv) != 0 {
		t.Errorf("ran %q", run.argv)
	}
}

func TestRemoteComposeFilesAreWrittenThroughStdin(t *testing.T) {
	run := &recordingInput{answer: func(argv []string) ([]byte, error) {
		if argv[0] == "test" {
			return nil, &commandError{Argv: argv, Err: exitStatus(1)}
		}
		return nil, nil
	}}
	f := remoteFiles{dir: "/srv/byop compose", run: run}
	ctx := context.Background()
	if _, err := f.read(ctx, "byop-a-pr-1"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read of a missing file = %v, want fs.ErrNotExist", err)
	}
	if err := f.write(ctx, "byop-a-pr-1", []byte("services: {}\n")); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"test", "-e", "/srv/byop compose/byop-a-pr-1.compose.yml"},
		{"mkdir", "-p", "-m", "700", "--", "/srv/byop compose"},
		{"tee", "--", "/srv/byop compose/byop-a-pr-1.compose.yml.tmp"},
		{"mv", "-f", "--", "/srv/byop compose/byop-a-pr-1.compose.yml.tmp", "/srv/byop compose/byop-a-pr-1.compose.yml"},
	}
	if !reflect.DeepEqual(run.argv, want) {
		t.Errorf("commands = %q, want %q", run.argv, want)
	}
	if run.stdin[2] != "services: {}\n" {
		t.Errorf("tee's stdin = %q", run.stdin[2])
	}
}

// exitStatus is an exit status as ssh.ExitError reports it.
type exitStatus int

func (e exitStatus) Error() string   { return "exit status " + string(rune('0'+e)) }
func (e exitStatus) ExitStatus() int { return int(e) }
