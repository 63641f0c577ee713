package ovh_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/deployers"
	"github.com/byop-dev/byop/deployers/ovh"
	"github.com/byop-dev/byop/deployers/ovh/ovhtest"
	"github.com/byop-dev/byop/internal/sshtest"
	"github.com/byop-dev/byop/internal/testenv"
)

const (
	appKey      = "byop-app"
	appSecret   = "app-secret-0123456789"
	consumerKey = "consumer-key-9876543210"
	project     = "0123456789abcdef0123456789abcdef"
)

type fixture struct {
	api       *ovhtest.Server
	prov      *ovh.Provisioner
	opts      ovh.Options
	clientKey ssh.Signer
	ready     []deployers.Host
	mu        sync.Mutex
}

func newFixture(t *testing.T, edit func(*ovh.Options)) *fixture {
	t.Helper()
	f := &fixture{api: ovhtest.New(t, appKey, appSecret, consumerKey)}
	f.clientKey, _ = sshtest.NewKey(t)
	f.opts = ovh.Options{
		Credentials: ovh.Credentials{
			Endpoint:          f.api.Endpoint,
			ApplicationKey:    appKey,
			ApplicationSecret: config.Secret(appSecret),
			ConsumerKey:       config.Secret(consumerKey),
		},
		ServiceName:  project,
		Region:       "GRA11",
		FlavorID:     "flavor-b2-7",
		ImageID:      "image-debian-12",
		ClientKey:    f.clientKey,
		StateDir:     t.TempDir(),
		Host:         deployers.Host{MaxPreviews: 1, StreamImages: true},
		PollInterval: time.Millisecond,
		Ready: func(_ context.Context, h deployers.Host) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.ready = append(f.ready, h)
			return nil
		},
	}
	if edit != nil {
		edit(&f.opts)
	}
	p, err := ovh.New(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	f.prov = p
	return f
}

// cloudConfig reads the user data an instance was created with.
type cloudConfig struct {
	SSHDeleteKeys  bool              `yaml:"ssh_deletekeys"`
	SSHGenKeyTypes []string          `yaml:"ssh_genkeytypes"`
	SSHKeys        map[string]string `yaml:"ssh_keys"`
	Users          []struct {
		Name              string   `yaml:"name"`
		SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
	} `yaml:"users"`
	Packages []string   `yaml:"packages"`
	RunCmd   [][]string `yaml:"runcmd"`
}

func readCloudConfig(t *testing.T, userData string) cloudConfig {
	t.Helper()
	if !strings.HasPrefix(userData, "#cloud-config\n") {
		t.Fatalf("user data does not start with #cloud-config: %q", userData[:min(40, len(userData))])
	}
	var c cloudConfig
	if err := yaml.Unmarshal([]byte(userData), &c); err != nil {
		t.Fatalf("user data is not YAML: %v", err)
	}
	return c
}

func noneRejected(t *testing.T, api *ovhtest.Server) {
	t.Helper()
	for _, c := range api.Calls() {
		if c.Rejected {
			t.Errorf("the API refused byop's signature on %s %s", c.Method, c.Path)
		}
	}
}

func TestProvisionCreatesAnInstanceWithAKnownHostKeyAndWaitsForItToBeActive(t *testing.T) {
	f := newFixture(t, func(o *ovh.Options) { o.SSHKeyID = "key-1" })
	f.api.BuildPolls = 3
	start := time.Now()
	h, err := f.prov.Provision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("provisioned in %v", time.Since(start).Round(time.Millisecond))
	ins := f.api.Instances(project)
	if len(ins) != 1 {
		t.Fatalf("instances = %v, want one", ins)
	}
	in := ins[0]
	if !strings.HasPrefix(in.Name, "byop-preview-") || h.Name != in.Name {
		t.Errorf("instance %q, host %q: want byop's prefix and the same name", in.Name, h.Name)
	}
	if in.Region != "GRA11" || in.FlavorID != "flavor-b2-7" || in.ImageID != "image-debian-12" || in.SSHKeyID != "key-1" {
		t.Errorf("instance created as %+v", in)
	}
	gets := 0
	for _, c := range f.api.Calls() {
		if c.Method == "GET" && strings.HasSuffix(c.Path, "/instance/"+in.ID) {
			gets++
		}
	}
	if gets != 4 { // BUILD three times, then ACTIVE
		t.Errorf("status read %d times, want 4", gets)
	}
	noneRejected(t, f.api)

	cc := readCloudConfig(t, in.UserData)
	hostKey, err := ssh.ParsePrivateKey([]byte(cc.SSHKeys["ed25519_private"]))
	if err != nil {
		t.Fatalf("host key in user data: %v", err)
	}
	if got := ssh.FingerprintSHA256(hostKey.PublicKey()); got != h.SSH.HostKeyFingerprint {
		t.Errorf("pinned fingerprint %s, the host key handed over is %s", h.SSH.HostKeyFingerprint, got)
	}
	if !cc.SSHDeleteKeys || cc.SSHGenKeyTypes == nil || len(cc.SSHGenKeyTypes) != 0 {
		t.Errorf("cloud-init would keep or make other host keys: delete %v, generate %v", cc.SSHDeleteKeys, cc.SSHGenKeyTypes)
	}
	wantAuth := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(f.clientKey.PublicKey())))
	if len(cc.Users) != 1 || cc.Users[0].Name != "byop" || len(cc.Users[0].SSHAuthorizedKeys) != 1 || !strings.HasPrefix(cc.Users[0].SSHAuthorizedKeys[0], wantAuth) {
		t.Errorf("users = %+v, want byop with byop's key", cc.Users)
	}
	if !slices.Contains(cc.Packages, "docker.io") || !slices.ContainsFunc(cc.RunCmd, func(c []string) bool { return slices.Equal(c, []string{"usermod", "-aG", "docker", "byop"}) }) {
		t.Errorf("cloud-init does not install Docker for byop: packages %v, runcmd %v", cc.Packages, cc.RunCmd)
	}

	if h.SSH.Addr != "127.0.0.1:22" || h.SSH.User != "byop" || h.SSH.Signer == nil || h.SSH.KnownHostsFile != "" {
		t.Errorf("host SSH = %+v", h.SSH)
	}
	if h.MaxPreviews != 1 || !h.StreamImages {
		t.Errorf("host did not take the template's settings: %+v", h)
	}
	if len(f.ready) != 1 || f.ready[0].Name != h.Name {
		t.Errorf("Ready called with %v", f.ready)
	}
}

// TestTheHandedOverHostKeyIsTheOnlyOneTrusted starts a real sshd with the
// host key from the user data (as cloud-init would) and connects with the
// host Provision returned: the pinned key checks out without any trust on
// first use, and an sshd with another key is refused.
func TestTheHandedOverHostKeyIsTheOnlyOneTrusted(t *testing.T) {
	sshd := testenv.SSHD(t)
	testenv.Docker(t)
	f := newFixture(t, nil)
	h, err := f.prov.Provision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cc := readCloudConfig(t, f.api.Instances(project)[0].UserData)
	authorized, _, _, _, err := ssh.ParseAuthorizedKey([]byte(cc.Users[0].SSHAuthorizedKeys[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		hostKey []byte
		wantErr error
	}{
		{"the instance booted with the handed-over key", []byte(cc.SSHKeys["ed25519_private"]), nil},
		{"someone else answers at the address", nil, deployers.ErrHostKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := sshtest.StartWith(t, sshd, sshtest.Options{HostKeyPEM: tt.hostKey, AuthorizedKey: authorized})
			host := h
			host.SSH.Addr = srv.Addr // the instance's port 22 is this sshd
			host.SSH.User = srv.User
			r, err := deployers.NewRemote(host, deployers.RemoteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			_, err = r.List(context.Background())
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("List() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestProvisionDeletesAnInstanceThatNeverGetsActive(t *testing.T) {
	f := newFixture(t, func(o *ovh.Options) { o.ActiveTimeout = 50 * time.Millisecond })
	f.api.BuildPolls = 1 << 30
	_, err := f.prov.Provision(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ACTIVE") {
		t.Fatalf("Provision() = %v, want a timeout waiting for ACTIVE", err)
	}
	if ins := f.api.Instances(project); len(ins) != 0 {
		t.Errorf("instances left = %v", ins)
	}
	if left, _ := os.ReadDir(f.opts.StateDir); len(left) != 0 {
		t.Errorf("records left = %v", left)
	}
}

func TestOnlyInstancesByopCreatedAreListedAndDeleted(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	mine, err := f.prov.Provision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.api.AddInstance(project, "web-production")
	f.api.AddInstance(project, "byop-preview-0badc0de") // the prefix, but no record
	f.api.AddInstance("another-project", "byop-preview-00000001")

	hs, err := f.prov.Provisioned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].Name != mine.Name || hs[0].SSH.HostKeyFingerprint != mine.SSH.HostKeyFingerprint {
		t.Fatalf("Provisioned() = %+v, want only %s with its pinned key", hs, mine.Name)
	}
	for _, name := range []string{"web-production", "byop-preview-0badc0de"} {
		if err := f.prov.Deprovision(ctx, deployers.Host{Name: name}); err == nil {
			t.Errorf("Deprovision(%s) succeeded", name)
		}
	}
	if err := f.prov.Deprovision(ctx, mine); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range f.api.Instances(project) {
		names = append(names, in.Name)
	}
	if !slices.Equal(names, []string{"web-production", "byop-preview-0badc0de"}) {
		t.Errorf("instances left = %v", names)
	}
	for _, c := range f.api.Calls() {
		if c.Method == "DELETE" && !strings.Contains(c.Path, "/instance/") {
			t.Errorf("unexpected delete %s", c.Path)
		}
	}
	noneRejected(t, f.api)
}

func TestCredentialsNeverShow(t *testing.T) {
	f := newFixture(t, nil)
	shown := fmt.Sprintf("%v %+v %#v %s", f.opts, f.opts, f.opts.Credentials, f.prov)
	b, _ := json.Marshal(f.opts.Credentials)
	shown += string(b)
	// A refused request's error either.
	bad := f.opts
	bad.Credentials.ApplicationSecret = "wrong-secret-value"
	p, err := ovh.New(bad)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Provision(context.Background())
	if err == nil {
		t.Fatal("Provision with a wrong secret succeeded")
	}
	shown += err.Error()
	for _, secret := range []string{appSecret, consumerKey, "wrong-secret-value"} {
		if strings.Contains(shown, secret) {
			t.Errorf("a secret shows: %s", shown)
		}
	}
}

// fakeHost stands for a provisioned host's runner.
type fakeHost struct {
	mu   sync.Mutex
	runs map[string]string
}

func (h *fakeHost) Deploy(_ context.Context, s deployers.Spec) (deployers.Endpoint, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.runs[s.Project] = s.Revision
	return deployers.Endpoint{URL: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}}, nil
}
func (h *fakeHost) Retire(context.Context, string, string) error { return nil }
func (h *fakeHost) Teardown(_ context.Context, project string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.runs, project)
	return nil
}
func (h *fakeHost) List(context.Context) ([]deployers.Running, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []deployers.Running
	for p, r := range h.runs {
		out = append(out, deployers.Running{Project: p, Revision: r, Endpoint: deployers.Endpoint{URL: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}}})
	}
	return out, nil
}
func (h *fakeHost) Close() error { return nil }

// TestAFullPoolProvisionsOneInstanceDeletesItWhenIdleAndHoldsTheCap drives
// deployers.Pool with this Provisioner against the fake API.
func TestAFullPoolProvisionsOneInstanceDeletesItWhenIdleAndHoldsTheCap(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	pool, err := deployers.NewPool([]deployers.Host{{Name: "static", MaxPreviews: 1}}, deployers.PoolOptions{
		Provisioner:    f.prov,
		MaxProvisioned: 1,
		IdleTimeout:    15 * time.Minute,
		Now:            func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		Connect:        func(deployers.Host) (deployers.HostRunner, error) { return &fakeHost{runs: map[string]string{}}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	spec := func(pr int) deployers.Spec {
		return deployers.Spec{Project: fmt.Sprintf("byop-acme-web-pr-%d", pr), Image: "r/acme/web@sha256:" + strings.Repeat("a", 64), Revision: strings.Repeat("b", 40), Port: 80}
	}
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	if _, err := pool.Deploy(ctx, spec(1)); err != nil { // the configured host
		t.Fatal(err)
	}
	if n := len(f.api.Instances(project)); n != 0 {
		t.Fatalf("instances with room on the configured host = %d", n)
	}
	if _, err := pool.Deploy(ctx, spec(2)); err != nil { // full: one instance
		t.Fatal(err)
	}
	ins := f.api.Instances(project)
	if len(ins) != 1 || ins[0].Status != "ACTIVE" {
		t.Fatalf("instances after the pool filled = %+v, want one ACTIVE", ins)
	}
	if host, _ := pool.HostOf(spec(2).Project); host != ins[0].Name {
		t.Errorf("PR 2 on %s, want the new instance %s", host, ins[0].Name)
	}

	_, err = pool.Deploy(ctx, spec(3))
	if !errors.Is(err, deployers.ErrPoolFull) {
		t.Fatalf("deploy past the cap = %v, want ErrPoolFull", err)
	}
	if n := len(f.api.Instances(project)); n != 1 {
		t.Errorf("instances past the cap = %d, want 1", n)
	}

	if err := pool.Teardown(ctx, spec(2).Project); err != nil {
		t.Fatal(err)
	}
	advance(14 * time.Minute)
	if gone, _ := pool.Reap(ctx); len(gone) != 0 || len(f.api.Instances(project)) != 1 {
		t.Fatalf("reaped %v before the idle time", gone)
	}
	advance(time.Minute)
	gone, err := pool.Reap(ctx)
	if err != nil || !slices.Equal(gone, []string{ins[0].Name}) {
		t.Fatalf("Reap() = %v, %v; want %s deleted", gone, err, ins[0].Name)
	}
	if left := f.api.Instances(project); len(left) != 0 {
		t.Errorf("instances after the idle time = %+v", left)
	}
	if recs, _ := filepath.Glob(filepath.Join(f.opts.StateDir, "*.json")); len(recs) != 0 {
		t.Errorf("records left = %v", recs)
	}
	// With the instance gone, room for PR 3 comes from a new one.
	if _, err := pool.Deploy(ctx, spec(3)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.api.Instances(project)); n != 1 {
		t.Errorf("instances = %d, want a new one", n)
	}
	noneRejected(t, f.api)
}

func TestDNSPointsANameAtAHostAndRemovesIt(t *testing.T) {
	api := ovhtest.New(t, appKey, appSecret, consumerKey)
	c, err := ovh.NewClient(ovh.Credentials{Endpoint: api.Endpoint, ApplicationKey: appKey, ApplicationSecret: appSecret, ConsumerKey: consumerKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dns, err := ovh.NewDNS(c, "previews.example.com", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name := "pr-7.web.acme.previews.example.com"
	for _, ip := range []string{"203.0.113.10", "203.0.113.11"} {
		if err := dns.Point(ctx, name, ip); err != nil {
			t.Fatal(err)
		}
	}
	recs := api.Records("previews.example.com")
	if len(recs) != 1 || recs[0].SubDomain != "pr-7.web.acme" || recs[0].FieldType != "A" || recs[0].Target != "203.0.113.11" || recs[0].TTL != 60 {
		t.Errorf("records = %+v, want one A record to the last host", recs)
	}
	if n := api.Refreshes("previews.example.com"); n != 2 {
		t.Errorf("zone refreshed %d times, want after each change", n)
	}
	if err := dns.Remove(ctx, name); err != nil {
		t.Fatal(err)
	}
	if recs := api.Records("previews.example.com"); len(recs) != 0 {
		t.Errorf("records after Remove = %+v", recs)
	}
	if err := dns.Point(ctx, "pr-1.web.acme.other.org", "203.0.113.1"); err == nil {
		t.Error("pointing a name outside the zone succeeded")
	}
	noneRejected(t, api)
}
