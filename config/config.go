// Package config holds byop's settings: defaults, then a YAML file, then
// BYOP_* environment variables, each overriding the one before.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"gopkg.in/yaml.v3"
)

// Config is every setting of byop. The README lists them with their defaults;
// keep the two in step.
type Config struct {
	// Listen is the address of the webhook receiver and byop's own pages.
	Listen string `yaml:"listen" env:"BYOP_LISTEN"`
	// PublicURL is how GitHub users reach byop's pages (links in statuses and
	// comments). Empty means http://localhost:<listen port>.
	PublicURL string `yaml:"public_url" env:"BYOP_PUBLIC_URL"`
	// WebhookSecret is the GitHub webhook secret. byop refuses to start without one.
	WebhookSecret Secret `yaml:"webhook_secret" env:"BYOP_WEBHOOK_SECRET"`
	// GitHubToken is a token for GitHub's REST API and for cloning. Without it,
	// byop still runs and shows its reports on its own pages only.
	GitHubToken Secret `yaml:"github_token" env:"BYOP_GITHUB_TOKEN"`
	// GitHubAppID and GitHubAppKeyFile make byop act as a GitHub App: API
	// calls and clones use each repository's installation token. Use them
	// instead of GitHubToken.
	GitHubAppID      int64  `yaml:"github_app_id" env:"BYOP_GITHUB_APP_ID"`
	GitHubAppKeyFile string `yaml:"github_app_key_file" env:"BYOP_GITHUB_APP_KEY_FILE"`
	// GitHubLogin is the login byop acts as on GitHub ("byop-bot",
	// "my-app[bot]"). Its comments are never taken as commands, and only its
	// own marked comment is edited.
	GitHubLogin string `yaml:"github_login" env:"BYOP_GITHUB_LOGIN"`
	// GitHubAPIURL is GitHub's REST API base (GitHub Enterprise Server: https://host/api/v3/).
	GitHubAPIURL string `yaml:"github_api_url" env:"BYOP_GITHUB_API_URL"`
	// RedisAddr is the Redis server holding the task queue.
	RedisAddr string `yaml:"redis_addr" env:"BYOP_REDIS_ADDR"`
	// RedisDB is the Redis database number, for sharing one Redis server.
	RedisDB int `yaml:"redis_db" env:"BYOP_REDIS_DB"`
	// BuildKitAddr is the buildkitd address.
	BuildKitAddr string `yaml:"buildkit_addr" env:"BYOP_BUILDKIT_ADDR"`
	// RegistryPrefix is where images go: <prefix>/<owner>/<repo>:<sha>.
	RegistryPrefix string `yaml:"registry_prefix" env:"BYOP_REGISTRY_PREFIX"`
	// RegistryInsecure talks plain HTTP to the registry.
	RegistryInsecure bool `yaml:"registry_insecure" env:"BYOP_REGISTRY_INSECURE"`
	// PreviewDomain is the parent domain of preview hosts: pr-<n>.<repo>.<owner>.<domain>.
	PreviewDomain string `yaml:"preview_domain" env:"BYOP_PREVIEW_DOMAIN"`
	// RouterAddr is the address of byop's preview router.
	RouterAddr string `yaml:"router_addr" env:"BYOP_ROUTER_ADDR"`
	// RouterPublicPort is the port in preview URLs; 0 means the router's own
	// port, and 80 leaves the port out.
	RouterPublicPort int `yaml:"router_public_port" env:"BYOP_ROUTER_PUBLIC_PORT"`
	// DataDir holds the database, work dirs, repository caches and compose files.
	DataDir string `yaml:"data_dir" env:"BYOP_DATA_DIR"`
	// Repositories lists what byop builds: exact "owner/repo" or "owner/*".
	Repositories []string `yaml:"repositories" env:"BYOP_REPOSITORIES" envSeparator:","`
	// AllowDrafts builds previews of draft pull requests too.
	AllowDrafts bool `yaml:"allow_drafts" env:"BYOP_ALLOW_DRAFTS"`
	// TrustOncePerPR lets one /ok-to-test trust every later push of a pull
	// request, instead of only the head it was given for.
	TrustOncePerPR bool `yaml:"trust_once_per_pr" env:"BYOP_TRUST_ONCE_PER_PR"`
	// MaxBuilds bounds the builds running at once; MaxBuildsPerRepo the
	// builds of one repository (0: no bound). Work past them waits.
	MaxBuilds        int `yaml:"max_builds" env:"BYOP_MAX_BUILDS"`
	MaxBuildsPerRepo int `yaml:"max_builds_per_repo" env:"BYOP_MAX_BUILDS_PER_REPO"`
	// TaskCheckInterval is how often an idle worker looks for new tasks:
	// the wait between a webhook's 202 and its work starting.
	TaskCheckInterval time.Duration `yaml:"task_check_interval" env:"BYOP_TASK_CHECK_INTERVAL"`
	// Concurrency is how many tasks the worker runs at once.
	Concurrency int `yaml:"concurrency" env:"BYOP_CONCURRENCY"`
	// BuildTimeout bounds fetching, building and pushing one commit.
	BuildTimeout time.Duration `yaml:"build_timeout" env:"BYOP_BUILD_TIMEOUT"`
	// DeployTimeout bounds starting a preview until it answers HTTP.
	DeployTimeout time.Duration `yaml:"deploy_timeout" env:"BYOP_DEPLOY_TIMEOUT"`
	// PreviewHosts are VPS hosts previews run on, reached over SSH (YAML
	// only). With none and OVH provisioning off, previews run on this host.
	PreviewHosts []PreviewHost `yaml:"preview_hosts" env:"-"`
	// SSHKeyFile is byop's private key for preview hosts.
	SSHKeyFile string `yaml:"ssh_key_file" env:"BYOP_SSH_KEY_FILE"`
	// OVH provisions preview hosts on OVH Public Cloud when the pool is full.
	OVH OVH `yaml:"ovh" envPrefix:"BYOP_OVH_"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level" env:"BYOP_LOG_LEVEL"`
}

// PreviewHost is one VPS previews run on.
type PreviewHost struct {
	Name string `yaml:"name"`
	// Addr is host:port of its SSH server.
	Addr string `yaml:"addr"`
	User string `yaml:"user"`
	// KnownHosts is a known_hosts file listing the host's key, or
	// HostKeyFingerprint its key's "SHA256:..." fingerprint: one of them.
	KnownHosts         string `yaml:"known_hosts"`
	HostKeyFingerprint string `yaml:"host_key_fingerprint"`
	// MaxPreviews is how many previews it runs at once.
	MaxPreviews int `yaml:"max_previews"`
	// PublishIP, if set, is the address byop's router reaches the host's
	// previews at; otherwise they are reached through the SSH connection.
	PublishIP string `yaml:"publish_ip"`
	// StreamImages sends images through SSH instead of having the host
	// pull them, for a registry the host cannot reach.
	StreamImages bool `yaml:"stream_images"`
	// Dir holds the compose files on the host.
	Dir string `yaml:"dir"`
}

// OVH is the OVH Public Cloud account byop rents preview hosts from.
// Provisioning is on when the application key is set.
type OVH struct {
	Endpoint          string        `yaml:"endpoint" env:"ENDPOINT"`
	ApplicationKey    string        `yaml:"application_key" env:"APPLICATION_KEY"`
	ApplicationSecret Secret        `yaml:"application_secret" env:"APPLICATION_SECRET"`
	ConsumerKey       Secret        `yaml:"consumer_key" env:"CONSUMER_KEY"`
	ServiceName       string        `yaml:"service_name" env:"SERVICE_NAME"`
	Region            string        `yaml:"region" env:"REGION"`
	FlavorID          string        `yaml:"flavor_id" env:"FLAVOR_ID"`
	ImageID           string        `yaml:"image_id" env:"IMAGE_ID"`
	SSHKeyID          string        `yaml:"ssh_key_id" env:"SSH_KEY_ID"`
	MaxInstances      int           `yaml:"max_instances" env:"MAX_INSTANCES"`
	MaxPreviews       int           `yaml:"max_previews" env:"MAX_PREVIEWS"`
	IdleTimeout       time.Duration `yaml:"idle_timeout" env:"IDLE_TIMEOUT"`
}

// Enabled reports whether OVH provisioning is configured.
func (o OVH) Enabled() bool { return o.ApplicationKey != "" }

// Remote reports whether previews run on preview hosts rather than here.
func (c Config) Remote() bool { return len(c.PreviewHosts) > 0 || c.OVH.Enabled() }

// Default returns the settings byop uses when nothing overrides them.
func Default() Config {
	return Config{
		Listen:            ":8080",
		GitHubAPIURL:      "https://api.github.com/",
		RedisAddr:         "127.0.0.1:6379",
		BuildKitAddr:      "unix:///run/buildkit/buildkitd.sock",
		RegistryPrefix:    "127.0.0.1:5000/byop",
		RegistryInsecure:  true,
		PreviewDomain:     "localhost",
		RouterAddr:        ":8081",
		DataDir:           "/var/lib/byop",
		Concurrency:       4,
		TaskCheckInterval: 50 * time.Millisecond,
		MaxBuilds:         2,
		BuildTimeout:      20 * time.Minute,
		DeployTimeout:     2 * time.Minute,
		LogLevel:          "info",
		OVH: OVH{
			Endpoint:     "ovh-eu",
			MaxInstances: 2,
			MaxPreviews:  10,
			IdleTimeout:  30 * time.Minute,
		},
	}
}

// Load reads the defaults, then the YAML file at path (if path is not
// empty), then the environment given as KEY=value pairs (os.Environ()).
func Load(path string, environ []string) (Config, error) {
	cfg := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("reading config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("parsing config %s: %w", path, err)
		}
	}
	opts := env.Options{Environment: envMap(environ)}
	if err := env.ParseWithOptions(&cfg, opts); err != nil {
		return Config{}, fmt.Errorf("reading environment: %w", err)
	}
	return cfg, nil
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// Validate reports every setting that cannot work, all at once.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.WebhookSecret.Reveal()) == "" {
		errs = append(errs, errors.New("webhook_secret (BYOP_WEBHOOK_SECRET) is empty: byop refuses to accept unsigned webhooks"))
	}
	if _, err := absoluteHTTPURL(c.PublicURL); c.PublicURL != "" && err != nil {
		errs = append(errs, fmt.Errorf("public_url: %w", err))
	}
	if u, err := absoluteHTTPURL(c.GitHubAPIURL); err != nil {
		errs = append(errs, fmt.Errorf("github_api_url: %w", err))
	} else if u.User != nil {
		errs = append(errs, errors.New("github_api_url must not carry credentials: set github_token"))
	}
	for name, addr := range map[string]string{"listen": c.Listen, "router_addr": c.RouterAddr, "redis_addr": c.RedisAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", name, addr, err))
		}
	}
	if c.RedisDB < 0 || c.RedisDB > 15 {
		errs = append(errs, fmt.Errorf("redis_db %d: want 0 to 15", c.RedisDB))
	}
	if (c.GitHubAppID != 0) != (c.GitHubAppKeyFile != "") {
		errs = append(errs, errors.New("github_app_id and github_app_key_file go together"))
	}
	if c.GitHubAppID != 0 && !c.GitHubToken.IsZero() {
		errs = append(errs, errors.New("set github_token or a GitHub App, not both"))
	}
	if c.MaxBuilds < 0 || c.MaxBuildsPerRepo < 0 {
		errs = append(errs, errors.New("max_builds and max_builds_per_repo must not be negative"))
	}
	if c.BuildKitAddr == "" {
		errs = append(errs, errors.New("buildkit_addr is empty"))
	}
	if c.RegistryPrefix == "" || strings.Contains(c.RegistryPrefix, "://") || strings.HasSuffix(c.RegistryPrefix, "/") {
		errs = append(errs, fmt.Errorf("registry_prefix %q: want host[:port][/path], no scheme, no trailing slash", c.RegistryPrefix))
	}
	if c.PreviewDomain == "" || strings.ContainsAny(c.PreviewDomain, "/: ") {
		errs = append(errs, fmt.Errorf("preview_domain %q: want a DNS name", c.PreviewDomain))
	}
	if c.RouterPublicPort < 0 || c.RouterPublicPort > 65535 {
		errs = append(errs, fmt.Errorf("router_public_port %d: out of range", c.RouterPublicPort))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is empty"))
	}
	for _, r := range c.Repositories {
		if !validRepoPattern(r) {
			errs = append(errs, fmt.Errorf("repositories: %q is not owner/repo or owner/*", r))
		}
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency %d: want at least 1", c.Concurrency))
	}
	if c.TaskCheckInterval <= 0 {
		errs = append(errs, errors.New("task_check_interval must be positive"))
	}
	if c.BuildTimeout <= 0 || c.DeployTimeout <= 0 {
		errs = append(errs, errors.New("build_timeout and deploy_timeout must be positive"))
	}
	for i, h := range c.PreviewHosts {
		if _, _, err := net.SplitHostPort(h.Addr); err != nil || h.User == "" || h.MaxPreviews < 1 {
			errs = append(errs, fmt.Errorf("preview_hosts[%d]: want addr host:port, user and max_previews ≥ 1", i))
		}
		if (h.KnownHosts == "") == (h.HostKeyFingerprint == "") {
			errs = append(errs, fmt.Errorf("preview_hosts[%d]: give known_hosts or host_key_fingerprint (one): byop never trusts a host key on first use", i))
		}
	}
	if c.Remote() && c.SSHKeyFile == "" {
		errs = append(errs, errors.New("ssh_key_file is needed for preview hosts"))
	}
	if o := c.OVH; o.Enabled() {
		if o.ApplicationSecret.IsZero() || o.ConsumerKey.IsZero() || o.ServiceName == "" || o.Region == "" || o.FlavorID == "" || o.ImageID == "" {
			errs = append(errs, errors.New("ovh: application_secret, consumer_key, service_name, region, flavor_id and image_id are needed with application_key"))
		}
		if o.MaxInstances < 1 || o.MaxPreviews < 1 || o.IdleTimeout <= 0 {
			errs = append(errs, errors.New("ovh: max_instances and max_previews must be at least 1 and idle_timeout positive"))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

func absoluteHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return u, nil
}

func validRepoPattern(p string) bool {
	owner, repo, ok := strings.Cut(p, "/")
	return ok && owner != "" && repo != "" && !strings.Contains(repo, "/") && owner != "*"
}

// Allows reports whether the repository "owner/repo" is configured. Names
// compare case-insensitively, as GitHub's do.
func (c Config) Allows(fullName string) bool {
	owner, _, _ := strings.Cut(fullName, "/")
	for _, p := range c.Repositories {
		if strings.EqualFold(p, fullName) || strings.EqualFold(p, owner+"/*") {
			return true
		}
	}
	return false
}

// RouterPort is the port shown in preview URLs.
func (c Config) RouterPort() int {
	if c.RouterPublicPort != 0 {
		return c.RouterPublicPort
	}
	_, p, err := net.SplitHostPort(c.RouterAddr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
