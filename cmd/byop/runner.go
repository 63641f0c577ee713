package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/deployers"
	"github.com/byop-dev/byop/deployers/ovh"
)

// runner is where previews run: a pool of SSH hosts (grown through OVH when
// configured), or this host.
type runner interface {
	Deploy(ctx context.Context, s deployers.Spec) (deployers.Endpoint, error)
	Retire(ctx context.Context, project, keepRevision string) error
	Teardown(ctx context.Context, project string) error
	List(ctx context.Context) ([]deployers.Running, error)
}

var (
	_ runner = (*deployers.Local)(nil)
	_ runner = (*deployers.Pool)(nil)
)

// newRunner builds the preview runner cfg asks for. stop releases it.
func newRunner(ctx context.Context, cfg config.Config, log *slog.Logger) (r runner, stop func(), err error) {
	if !cfg.Remote() {
		local, err := deployers.NewLocal(filepath.Join(cfg.DataDir, "compose"), deployers.WithLogger(log), deployers.WithHealthTimeout(cfg.DeployTimeout))
		return local, func() {}, err
	}
	signer, err := deployers.LoadSigner(cfg.SSHKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading ssh_key_file: %w", err)
	}
	hosts := make([]deployers.Host, 0, len(cfg.PreviewHosts))
	for _, h := range cfg.PreviewHosts {
		hosts = append(hosts, deployers.Host{
			Name: h.Name,
			SSH: deployers.SSHConfig{
				Addr: h.Addr, User: h.User, Signer: signer,
				KnownHostsFile: h.KnownHosts, HostKeyFingerprint: h.HostKeyFingerprint,
			},
			Dir: h.Dir, PublishIP: h.PublishIP, StreamImages: h.StreamImages, MaxPreviews: h.MaxPreviews,
		})
	}
	opts := deployers.PoolOptions{
		Log: log,
		Remote: deployers.RemoteOptions{
			Log:           log,
			HealthTimeout: cfg.DeployTimeout,
			Registry:      deployers.RegistryAccess{Insecure: cfg.RegistryInsecure},
		},
	}
	if o := cfg.OVH; o.Enabled() {
		prov, err := ovh.New(ovh.Options{
			Credentials: ovh.Credentials{
				Endpoint: o.Endpoint, ApplicationKey: o.ApplicationKey,
				ApplicationSecret: o.ApplicationSecret, ConsumerKey: o.ConsumerKey,
			},
			ServiceName: o.ServiceName, Region: o.Region, FlavorID: o.FlavorID, ImageID: o.ImageID, SSHKeyID: o.SSHKeyID,
			ClientKey: signer,
			StateDir:  filepath.Join(cfg.DataDir, "ovh"),
			Host:      deployers.Host{MaxPreviews: o.MaxPreviews},
			Log:       log,
		})
		if err != nil {
			return nil, nil, err
		}
		opts.Provisioner, opts.MaxProvisioned, opts.IdleTimeout = prov, o.MaxInstances, o.IdleTimeout
	}
	pool, err := deployers.NewPool(hosts, opts)
	if err != nil {
		return nil, nil, err
	}
	reapCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); pool.Run(reapCtx, time.Minute) }()
	return pool, func() { cancel(); <-done; pool.Close() }, nil
}
