package main

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/forge/forgetest"
	"github.com/byop-dev/byop/internal/sshtest"
	"github.com/byop-dev/byop/internal/testenv"
)

// The preview runs on a "VPS" reached over SSH: a real sshd on loopback in
// front of this machine's Docker.
func TestPreviewOnSSHHost(t *testing.T) {
	sshd := testenv.SSHD(t)
	tests := []struct {
		name   string
		host   func(vps *sshtest.Server) config.PreviewHost
		serves bool
	}{
		{"the host pulls the image, known_hosts", func(vps *sshtest.Server) config.PreviewHost {
			return config.PreviewHost{Name: "vps1", Addr: vps.Addr, User: vps.User, KnownHosts: vps.KnownHostsFile, MaxPreviews: 5}
		}, true},
		{"byop streams the image through SSH, pinned fingerprint", func(vps *sshtest.Server) config.PreviewHost {
			return config.PreviewHost{Name: "vps1", Addr: vps.Addr, User: vps.User, HostKeyFingerprint: ssh.FingerprintSHA256(vps.HostKey), StreamImages: true, MaxPreviews: 5}
		}, true},
		{"a host whose key is not the known one is refused", func(vps *sshtest.Server) config.PreviewHost {
			other, _ := sshtest.NewKey(t)
			return config.PreviewHost{Name: "vps1", Addr: vps.Addr, User: vps.User, HostKeyFingerprint: ssh.FingerprintSHA256(other.PublicKey()), MaxPreviews: 5}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vps := sshtest.Start(t, sshd)
			s := startStack(t, func(c *config.Config, _ *forgetest.Server) {
				c.PreviewHosts = []config.PreviewHost{tt.host(vps)}
				c.SSHKeyFile = vps.ClientKeyFile
			})
			f := newPR(t, s)
			sha := f.push(t, "served from the VPS\n")
			s.deliver("pull_request", "octokit/pull_request/opened.payload.json", pullRequest(f.repo, f.pr, sha))
			st := s.waitStatus(sha, "byop/preview", forge.StateSuccess, forge.StateFailure, forge.StateError)
			project := "label=com.docker.compose.project=byop-codertocat-hello-world-pr-" + itoa(f.pr)

			if !tt.serves {
				if st.State != forge.StateFailure || !strings.Contains(st.Description, "SSH host key") {
					t.Errorf("preview status %+v, want a failure naming the host key", st)
				}
				if ids := strings.Fields(dockerPS(t, project)); len(ids) != 0 {
					t.Errorf("containers %v started on a refused host", ids)
				}
				return
			}
			if st.State != forge.StateSuccess {
				t.Fatalf("preview status %+v", st)
			}
			if code, body, _ := s.get(f.url); code != 200 || body != "served from the VPS\n" {
				t.Fatalf("GET %s = %d %q", f.url, code, body)
			}
			if ids := strings.Fields(dockerPS(t, project)); len(ids) != 1 {
				t.Errorf("containers on the VPS: %v, want 1", ids)
			}
			s.deliver("pull_request", "octokit/pull_request/closed.payload.json", pullRequest(f.repo, f.pr, sha))
			s.github.WaitFor(t, "closed comment", func() bool {
				c := s.github.Comments("Codertocat", "Hello-World", f.pr)
				return len(c) == 1 && strings.Contains(c[0].Body, "Closed")
			})
			if ids := strings.Fields(dockerPS(t, project)); len(ids) != 0 {
				t.Errorf("containers left on the VPS after close: %v", ids)
			}
			if code, _, _ := s.get(f.url); code != http.StatusNotFound {
				t.Errorf("after close GET = %d, want 404", code)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
