package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadLayersFileThenEnvironment(t *testing.T) {
	file := filepath.Join(t.TempDir(), "byop.yaml")
	yaml := "listen: 127.0.0.1:9000\nwebhook_secret: from-file\nrepositories: [acme/web]\nbuild_timeout: 5m\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(file, []string{"BYOP_WEBHOOK_SECRET=from-env", "BYOP_REPOSITORIES=acme/web,tools/*", "UNRELATED=x"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9000" {
		t.Errorf("Listen = %q, want the file's value", cfg.Listen)
	}
	if cfg.WebhookSecret.Reveal() != "from-env" {
		t.Errorf("WebhookSecret = %q, want the environment's value", cfg.WebhookSecret.Reveal())
	}
	if got := strings.Join(cfg.Repositories, " "); got != "acme/web tools/*" {
		t.Errorf("Repositories = %q", got)
	}
	if cfg.BuildTimeout != 5*time.Minute {
		t.Errorf("BuildTimeout = %v", cfg.BuildTimeout)
	}
	if cfg.RedisAddr != Default().RedisAddr {
		t.Errorf("RedisAddr = %q, want the default", cfg.RedisAddr)
	}
}

func TestLoadRejectsUnknownKeysAndEmptyFileIsFine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listne: :80\n"), 0o600)
	if _, err := Load(bad, nil); err == nil || !strings.Contains(err.Error(), "listne") {
		t.Errorf("unknown key: err = %v, want it named", err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	if _, err := Load(empty, nil); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

func TestValidate(t *testing.T) {
	valid := Default()
	valid.WebhookSecret = "s3cret"
	valid.Repositories = []string{"acme/web", "tools/*"}
	if err := valid.Validate(); err != nil {
		t.Fatalf("defaults with a secret: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"empty webhook secret is refused", func(c *Config) { c.WebhookSecret = "" }, "webhook_secret"},
		{"blank webhook secret is refused", func(c *Config) { c.WebhookSecret = "  " }, "webhook_secret"},
		{"credentials in the API URL", func(c *Config) { c.GitHubAPIURL = "https://x:tok@ghe.example/api/v3/" }, "must not carry credentials"},
		{"relative public URL", func(c *Config) { c.PublicURL = "/byop" }, "public_url"},
		{"bad repository pattern", func(c *Config) { c.Repositories = []string{"*/*"} }, "repositories"},
		{"registry prefix with scheme", func(c *Config) { c.RegistryPrefix = "http://r:5000" }, "registry_prefix"},
		{"listen without port", func(c *Config) { c.Listen = "localhost" }, "listen"},
		{"unknown log level", func(c *Config) { c.LogLevel = "loud" }, "log_level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestAllows(t *testing.T) {
	c := Config{Repositories: []string{"acme/web", "Tools/*"}}
	for repo, want := range map[string]bool{
		"acme/web": true, "ACME/Web": true, "acme/api": false,
		"tools/anything": true, "toolsx/a": false, "other/web": false,
	} {
		if got := c.Allows(repo); got != want {
			t.Errorf("Allows(%q) = %v, want %v", repo, got, want)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("ghp_abcdef123456")
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "token", s, "cfg", Config{GitHubToken: s})
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %#v %+v", s, s, s, Config{GitHubToken: s}), buf.String()} {
		if strings.Contains(out, "abcdef") {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if s.Reveal() != "ghp_abcdef123456" {
		t.Error("Reveal lost the value")
	}
}

func TestRouterPort(t *testing.T) {
	c := Default()
	if c.RouterPort() != 8081 {
		t.Errorf("RouterPort() = %d, want the router's own port", c.RouterPort())
	}
	c.RouterPublicPort = 80
	if c.RouterPort() != 80 {
		t.Errorf("RouterPort() = %d, want the public port", c.RouterPort())
	}
}
