// Package ovh rents preview hosts from OVHcloud Public Cloud through the
// OVH API (github.com/ovh/go-ovh): it creates an instance when byop's pool
// is full, hands it byop's SSH key and a host key byop generated (so byop
// knows the key before it first connects), and deletes the instances it
// created once they idle. It also points DNS names at hosts.
package ovh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	ovhapi "github.com/ovh/go-ovh/ovh"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/deployers"
)

// Defaults for Options.
const (
	DefaultNamePrefix    = "byop-preview"
	DefaultUser          = "byop"
	DefaultPollInterval  = 5 * time.Second
	DefaultActiveTimeout = 10 * time.Minute
	DefaultReadyTimeout  = 10 * time.Minute
)

// Credentials are an OVH API application's keys and a consumer key.
type Credentials struct {
	// Endpoint is an endpoint name (ovh-eu, ovh-ca, ovh-us) or the API's URL.
	Endpoint          string
	ApplicationKey    string
	ApplicationSecret config.Secret
	ConsumerKey       config.Secret
}

// Options configure a Provisioner.
type Options struct {
	Credentials Credentials
	// ServiceName is the Public Cloud project's ID.
	ServiceName string
	// Region, FlavorID and ImageID say where and what to run (IDs as the API
	// lists them; the image a Debian or Ubuntu with cloud-init).
	Region, FlavorID, ImageID string
	// SSHKeyID is a key registered in the project to add to the instance;
	// optional: byop's own key goes in through cloud-init anyway.
	SSHKeyID string
	// ClientKey is byop's SSH key; its public half is installed for User.
	ClientKey ssh.Signer
	// User is the login cloud-init creates for byop (default DefaultUser),
	// in the docker group.
	User string
	// StateDir keeps a record of each instance byop created, with its host
	// key; byop deletes only instances it has a record of.
	StateDir string
	// NamePrefix starts the names of byop's instances (default
	// DefaultNamePrefix); byop never deletes an instance without it.
	NamePrefix string
	// Host is the template of every provisioned host: MaxPreviews, Dir,
	// StreamImages (Name and SSH are filled in).
	Host deployers.Host
	// SSHPort is the instances' SSH port (default 22).
	SSHPort int
	// PollInterval is how often the instance's status is read while it
	// builds (default DefaultPollInterval); ActiveTimeout bounds the build
	// (default DefaultActiveTimeout).
	PollInterval  time.Duration
	ActiveTimeout time.Duration
	// Ready waits until a new host takes previews (default: until byop can
	// list containers on it over SSH, within DefaultReadyTimeout).
	Ready func(ctx context.Context, h deployers.Host) error
	// HTTPClient talks to the API (default: a client with a 30s timeout).
	HTTPClient *http.Client
	Log        *slog.Logger
}

// Provisioner creates and deletes byop's instances. It implements
// deployers.Provisioner.
type Provisioner struct {
	api  *ovhapi.Client
	o    Options
	log  *slog.Logger
	base string // /cloud/project/{serviceName}
}

var _ deployers.Provisioner = (*Provisioner)(nil)

var namePrefixRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,40}$`)

// NewClient returns a go-ovh client for c. Nothing is read from ovh.conf
// files or OVH_* variables beyond what c leaves empty.
func NewClient(c Credentials, hc *http.Client) (*ovhapi.Client, error) {
	if c.Endpoint == "" {
		c.Endpoint = "ovh-eu"
	}
	if c.ApplicationKey == "" || c.ApplicationSecret.IsZero() || c.ConsumerKey.IsZero() {
		return nil, errors.New("OVH API: application key, application secret and consumer key are all needed")
	}
	api, err := ovhapi.NewClient(c.Endpoint, c.ApplicationKey, c.ApplicationSecret.Reveal(), c.ConsumerKey.Reveal())
	if err != nil {
		// go-ovh's errors name settings, never their values.
		return nil, fmt.Errorf("OVH API client: %w", err)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	api.Client = hc
	api.Timeout = hc.Timeout
	api.UserAgent = "byop"
	return api, nil
}

// New returns a Provisioner. It calls the API only when used.
func New(o Options) (*Provisioner, error) {
	api, err := NewClient(o.Credentials, o.HTTPClient)
	if err != nil {
		return nil, err
	}
	var errs []error
	for name, v := range map[string]string{"service name": o.ServiceName, "region": o.Region, "flavor ID": o.FlavorID, "image ID": o.ImageID, "state directory": o.StateDir} {
		if v == "" {
			errs = append(errs, fmt.Errorf("no %s", name))
		}
	}
	if o.ClientKey == nil {
		errs = append(errs, errors.New("no SSH client key"))
	}
	if o.NamePrefix == "" {
		o.NamePrefix = DefaultNamePrefix
	}
	if !namePrefixRe.MatchString(o.NamePrefix) {
		errs = append(errs, fmt.Errorf("name prefix %q: want lowercase letters, digits and '-'", o.NamePrefix))
	}
	if o.User == "" {
		o.User = DefaultUser
	}
	if o.Host.MaxPreviews < 1 {
		errs = append(errs, fmt.Errorf("max previews per instance %d: want at least 1", o.Host.MaxPreviews))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("OVH provisioning: %w", err)
	}
	if o.SSHPort == 0 {
		o.SSHPort = 22
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.ActiveTimeout <= 0 {
		o.ActiveTimeout = DefaultActiveTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Ready == nil {
		o.Ready = func(ctx context.Context, h deployers.Host) error {
			return waitReady(ctx, h, o.PollInterval, DefaultReadyTimeout)
		}
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("OVH provisioning: making state directory: %w", err)
	}
	return &Provisioner{api: api, o: o, log: o.Log.With("part", "ovh"), base: "/cloud/project/" + url.PathEscape(o.ServiceName)}, nil
}

// String names the provisioner without its credentials.
func (p *Provisioner) String() string {
	return "ovh.Provisioner{project " + p.o.ServiceName + ", region " + p.o.Region + "}"
}

// instance is the part of the API's instance byop reads.
type instance struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Status      string `json:"status"`
	IPAddresses []struct {
		IP      string `json:"ip"`
		Type    string `json:"type"`
		Version int    `json:"version"`
	} `json:"ipAddresses"`
}

func (in instance) publicIPv4() string {
	for _, a := range in.IPAddresses {
		if a.Type == "public" && a.Version == 4 {
			return a.IP
		}
	}
	return ""
}

// record is what byop keeps about an instance it created.
type record struct {
	Name    string `json:"name"`
	ID      string `json:"id,omitempty"`
	HostKey string `json:"host_key"` // authorized_keys form
}

func (p *Provisioner) recordPath(name string) string {
	return filepath.Join(p.o.StateDir, name+".json")
}

func (p *Provisioner) writeRecord(r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := p.recordPath(r.Name) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p.recordPath(r.Name))
}

func (p *Provisioner) readRecord(name string) (record, error) {
	var r record
	b, err := os.ReadFile(p.recordPath(name))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("reading record of %s: %w", name, err)
	}
	return r, nil
}

// Provision creates an instance, waits for it to be ACTIVE and to take
// previews, and returns it as a host whose key is pinned. An instance that
// does not get there is deleted again.
func (p *Provisioner) Provision(ctx context.Context) (deployers.Host, error) {
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return deployers.Host{}, err
	}
	name := p.o.NamePrefix + "-" + hex.EncodeToString(suffix)
	hostKey, userData, err := p.cloudConfig()
	if err != nil {
		return deployers.Host{}, fmt.Errorf("provisioning %s: %w", name, err)
	}
	// The record comes first: an instance byop crashed while creating is
	// still recognised as byop's.
	rec := record{Name: name, HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey)))}
	if err := p.writeRecord(rec); err != nil {
		return deployers.Host{}, fmt.Errorf("provisioning %s: writing record: %w", name, err)
	}
	req := map[string]any{
		"name":           name,
		"region":         p.o.Region,
		"flavorId":       p.o.FlavorID,
		"imageId":        p.o.ImageID,
		"userData":       userData,
		"monthlyBilling": false,
	}
	if p.o.SSHKeyID != "" {
		req["sshKeyId"] = p.o.SSHKeyID
	}
	log := p.log.With("instance", name)
	log.Info("creating instance", "region", p.o.Region, "flavor", p.o.FlavorID)
	var in instance
	if err := p.api.PostWithContext(ctx, p.base+"/instance", req, &in); err != nil {
		os.Remove(p.recordPath(name))
		return deployers.Host{}, fmt.Errorf("provisioning %s: creating instance: %w", name, err)
	}
	rec.ID = in.ID
	if err := p.writeRecord(rec); err != nil {
		log.Error("writing record", "err", err)
	}
	fail := func(err error) (deployers.Host, error) {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := p.deleteInstance(dctx, rec); derr != nil {
			log.Error("deleting the instance that failed", "err", derr)
		}
		return deployers.Host{}, fmt.Errorf("provisioning %s: %w", name, err)
	}
	in, err = p.waitActive(ctx, in.ID)
	if err != nil {
		return fail(err)
	}
	h, err := p.host(rec, in)
	if err != nil {
		return fail(err)
	}
	log.Info("instance active; waiting for it to take previews", "ip", in.publicIPv4())
	if err := p.o.Ready(ctx, h); err != nil {
		return fail(fmt.Errorf("waiting for the instance to take previews: %w", err))
	}
	return h, nil
}

func (p *Provisioner) waitActive(ctx context.Context, id string) (instance, error) {
	ctx, cancel := context.WithTimeout(ctx, p.o.ActiveTimeout)
	defer cancel()
	tick := time.NewTicker(p.o.PollInterval)
	defer tick.Stop()
	for {
		var in instance
		if err := p.api.GetWithContext(ctx, p.base+"/instance/"+url.PathEscape(id), &in); err != nil {
			if ctx.Err() != nil {
				return instance{}, fmt.Errorf("waiting for instance %s to be ACTIVE: %w", id, ctx.Err())
			}
			return instance{}, fmt.Errorf("reading instance %s: %w", id, err)
		}
		switch in.Status {
		case "ACTIVE":
			return in, nil
		case "ERROR", "DELETED", "DELETING":
			return instance{}, fmt.Errorf("instance %s is %s", id, in.Status)
		}
		select {
		case <-ctx.Done():
			return instance{}, fmt.Errorf("waiting for instance %s to be ACTIVE (last %s): %w", id, in.Status, ctx.Err())
		case <-tick.C:
		}
	}
}

// host is the pool's view of an active instance.
func (p *Provisioner) host(rec record, in instance) (deployers.Host, error) {
	ip := in.publicIPv4()
	if ip == "" {
		return deployers.Host{}, fmt.Errorf("instance %s has no public IPv4 address", in.ID)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rec.HostKey))
	if err != nil {
		return deployers.Host{}, fmt.Errorf("reading the host key of %s: %w", rec.Name, err)
	}
	h := p.o.Host
	h.Name = rec.Name
	h.SSH = deployers.SSHConfig{
		Addr:               net.JoinHostPort(ip, strconv.Itoa(p.o.SSHPort)),
		User:               p.o.User,
		Signer:             p.o.ClientKey,
		HostKeyFingerprint: ssh.FingerprintSHA256(key),
	}
	return h, nil
}

// Provisioned lists byop's instances that exist: named with the prefix and
// recorded in the state directory. Records of instances that are gone are
// removed.
func (p *Provisioner) Provisioned(ctx context.Context) ([]deployers.Host, error) {
	ins, err := p.ours(ctx)
	if err != nil {
		return nil, err
	}
	var out []deployers.Host
	exists := map[string]bool{}
	for _, x := range ins {
		exists[x.rec.Name] = true
		if x.in.Status != "ACTIVE" {
			p.log.Warn("instance is not ACTIVE; leaving it out", "instance", x.rec.Name, "status", x.in.Status)
			continue
		}
		h, err := p.host(x.rec, x.in)
		if err != nil {
			p.log.Warn("instance left out", "instance", x.rec.Name, "err", err)
			continue
		}
		out = append(out, h)
	}
	entries, err := os.ReadDir(p.o.StateDir)
	if err != nil {
		return out, fmt.Errorf("reading state directory: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && strings.HasPrefix(name, p.o.NamePrefix+"-") && !exists[name] {
			p.log.Info("forgetting an instance that no longer exists", "instance", name)
			os.Remove(filepath.Join(p.o.StateDir, e.Name()))
		}
	}
	return out, nil
}

type owned struct {
	in  instance
	rec record
}

// ours returns the project's instances that byop created.
func (p *Provisioner) ours(ctx context.Context) ([]owned, error) {
	var all []instance
	if err := p.api.GetWithContext(ctx, p.base+"/instance", &all); err != nil {
		return nil, fmt.Errorf("listing instances: %w", err)
	}
	var out []owned
	for _, in := range all {
		if !strings.HasPrefix(in.Name, p.o.NamePrefix+"-") {
			continue
		}
		rec, err := p.readRecord(in.Name)
		if errors.Is(err, fs.ErrNotExist) {
			p.log.Warn("instance has byop's prefix but no record: not byop's to touch", "instance", in.Name)
			continue
		}
		if err != nil {
			return nil, err
		}
		if rec.ID != "" && rec.ID != in.ID {
			p.log.Warn("instance's ID is not the one recorded: not byop's to touch", "instance", in.Name)
			continue
		}
		out = append(out, owned{in: in, rec: rec})
	}
	return out, nil
}

// Deprovision deletes the instance of h, if it is one byop created.
func (p *Provisioner) Deprovision(ctx context.Context, h deployers.Host) error {
	if !strings.HasPrefix(h.Name, p.o.NamePrefix+"-") {
		return fmt.Errorf("deleting %s: not an instance byop created", h.Name)
	}
	rec, err := p.readRecord(h.Name)
	if err != nil {
		return fmt.Errorf("deleting %s: no record of creating it: %w", h.Name, err)
	}
	if rec.ID == "" {
		// Created without the ID recorded: find it by name.
		ins, err := p.ours(ctx)
		if err != nil {
			return fmt.Errorf("deleting %s: %w", h.Name, err)
		}
		for _, x := range ins {
			if x.in.Name == h.Name {
				rec.ID = x.in.ID
			}
		}
		if rec.ID == "" {
			os.Remove(p.recordPath(h.Name))
			return nil
		}
	}
	return p.deleteInstance(ctx, rec)
}

func (p *Provisioner) deleteInstance(ctx context.Context, rec record) error {
	err := p.api.DeleteWithContext(ctx, p.base+"/instance/"+url.PathEscape(rec.ID), nil)
	var apiErr *ovhapi.APIError
	if err != nil && !(errors.As(err, &apiErr) && apiErr.Code == http.StatusNotFound) {
		return fmt.Errorf("deleting instance %s: %w", rec.Name, err)
	}
	p.log.Info("deleted instance", "instance", rec.Name)
	if err := os.Remove(p.recordPath(rec.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing record of %s: %w", rec.Name, err)
	}
	return nil
}

// cloudConfig generates the instance's host key and the cloud-init user
// data that installs it, byop's key and Docker.
func (p *Provisioner) cloudConfig() (ssh.PublicKey, string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, "", err
	}
	hostPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", err
	}
	ud, err := userData(p.o.User, p.o.ClientKey.PublicKey(), string(pem.EncodeToMemory(block)), hostPub)
	return hostPub, ud, err
}

// cloudInit is the part of cloud-config byop writes.
type cloudInit struct {
	SSHDeleteKeys  bool              `yaml:"ssh_deletekeys"`
	SSHGenKeyTypes []string          `yaml:"ssh_genkeytypes"`
	SSHKeys        map[string]string `yaml:"ssh_keys"`
	DisableRoot    bool              `yaml:"disable_root"`
	Users          []cloudUser       `yaml:"users"`
	PackageUpdate  bool              `yaml:"package_update"`
	Packages       []string          `yaml:"packages"`
	RunCmd         [][]string        `yaml:"runcmd"`
}

type cloudUser struct {
	Name              string   `yaml:"name"`
	Shell             string   `yaml:"shell"`
	LockPasswd        bool     `yaml:"lock_passwd"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
}

// userData renders the cloud-config: the host key byop generated (and no
// other), a login for byop with byop's key, Docker and Compose.
func userData(user string, clientKey ssh.PublicKey, hostPrivPEM string, hostPub ssh.PublicKey) (string, error) {
	c := cloudInit{
		SSHDeleteKeys:  true,
		SSHGenKeyTypes: []string{},
		SSHKeys: map[string]string{
			"ed25519_private": hostPrivPEM,
			"ed25519_public":  strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostPub))),
		},
		DisableRoot: true,
		Users: []cloudUser{{
			Name:              user,
			Shell:             "/bin/bash",
			LockPasswd:        true,
			SSHAuthorizedKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(clientKey))) + " byop"},
		}},
		PackageUpdate: true,
		Packages:      []string{"docker.io", "docker-compose"},
		RunCmd: [][]string{
			{"usermod", "-aG", "docker", user},
			{"systemctl", "enable", "--now", "docker"},
			{"mkdir", "-p", deployers.DefaultRemoteDir},
			{"chown", user, deployers.DefaultRemoteDir},
		},
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("rendering cloud-init user data: %w", err)
	}
	return "#cloud-config\n" + string(b), nil
}

// waitReady polls h until byop can list containers on it over SSH: its
// host key checks out, byop's key logs in and docker answers. Each try is
// a new connection, so that one made before cloud-init added the docker
// group is not kept.
func waitReady(ctx context.Context, h deployers.Host, interval, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		r, err := deployers.NewRemote(h, deployers.RemoteOptions{})
		if err != nil {
			return err
		}
		tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = r.List(tctx)
		tcancel()
		r.Close()
		if err == nil {
			return nil
		}
		if errors.Is(err, deployers.ErrHostKey) {
			// Not the host byop made: never retry into it.
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-time.After(interval):
		}
	}
}
