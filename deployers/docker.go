package deployers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// container is the part of `docker inspect` byop reads.
type container struct {
	ID    string `json:"Id"`
	Name  string `json:"Name"`
	State struct {
		Status     string `json:"Status"`
		Running    bool   `json:"Running"`
		Restarting bool   `json:"Restarting"`
		ExitCode   int    `json:"ExitCode"`
	} `json:"State"`
	Config struct {
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
	NetworkSettings struct {
		Ports map[string][]struct {
			HostIP   string `json:"HostIp"`
			HostPort string `json:"HostPort"`
		} `json:"Ports"`
	} `json:"NetworkSettings"`
}

// endpoint returns where the container's port is published on the host, or
// nil when it is not (yet) published.
func (c container) endpoint(port int) *url.URL {
	for _, b := range c.NetworkSettings.Ports[strconv.Itoa(port)+"/tcp"] {
		if b.HostPort == "" || b.HostPort == "0" {
			continue
		}
		host := b.HostIP
		if host == "" || host == "0.0.0.0" {
			host = "127.0.0.1"
		}
		return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, b.HostPort)}
	}
	return nil
}

// dockerCLI runs the docker command line.
type dockerCLI struct {
	run runner
	bin string
}

// containers returns the containers that carry every label filter
// ("key" or "key=value"); with all, stopped ones too.
func (d dockerCLI) containers(ctx context.Context, all bool, labels ...string) ([]container, error) {
	args := []string{"ps", "-q", "--no-trunc"}
	if all {
		args = append(args, "-a")
	}
	for _, l := range labels {
		args = append(args, "--filter", "label="+l)
	}
	out, err := d.run.Run(ctx, d.bin, args...)
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	ids := strings.Fields(string(out))
	if len(ids) == 0 {
		return nil, nil
	}
	out, err = d.run.Run(ctx, d.bin, append([]string{"container", "inspect", "--"}, ids...)...)
	if err != nil && !isNoSuch(err) {
		return nil, fmt.Errorf("inspecting containers: %w", err)
	}
	// A container removed between ps and inspect is simply not there.
	var cs []container
	if err := json.Unmarshal(out, &cs); err != nil {
		return nil, fmt.Errorf("reading container inspect output: %w", err)
	}
	return cs, nil
}

// remove force-removes containers and their anonymous volumes: SIGKILL at
// once, so that an app that ignores SIGTERM costs no stop timeout.
func (d dockerCLI) remove(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := d.run.Run(ctx, d.bin, append([]string{"rm", "-f", "-v", "--"}, ids...)...); err != nil && !isNoSuch(err) {
		return fmt.Errorf("removing containers: %w", err)
	}
	return nil
}

// imageLabels returns the labels of a local image.
func (d dockerCLI) imageLabels(ctx context.Context, ref string) (map[string]string, error) {
	out, err := d.run.Run(ctx, d.bin, "image", "inspect", "--format", "{{json .Config.Labels}}", "--", ref)
	if err != nil {
		return nil, fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	var labels map[string]string
	if err := json.Unmarshal(out, &labels); err != nil {
		return nil, fmt.Errorf("reading labels of image %s: %w", ref, err)
	}
	return labels, nil
}

func (d dockerCLI) pull(ctx context.Context, ref string) error {
	if _, err := d.run.Run(ctx, d.bin, "pull", "--quiet", "--", ref); err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	return nil
}

// removeLabelled removes the networks or volumes (kind) that carry label.
func (d dockerCLI) removeLabelled(ctx context.Context, kind, label string) error {
	out, err := d.run.Run(ctx, d.bin, kind, "ls", "-q", "--filter", "label="+label)
	if err != nil {
		return fmt.Errorf("listing %ss: %w", kind, err)
	}
	names := strings.Fields(string(out))
	if len(names) == 0 {
		return nil
	}
	if _, err := d.run.Run(ctx, d.bin, append([]string{kind, "rm", "--"}, names...)...); err != nil && !isNoSuch(err) {
		return fmt.Errorf("removing %ss: %w", kind, err)
	}
	return nil
}

// isNoSuch reports whether a docker command failed only because an object
// it was given no longer exists.
func isNoSuch(err error) bool {
	var ce *commandError
	if !errors.As(err, &ce) {
		return false
	}
	lines := strings.Split(strings.TrimSpace(ce.Stderr), "\n")
	for _, l := range lines {
		l = strings.ToLower(l)
		if !strings.Contains(l, "no such") && !strings.Contains(l, "not found") {
			return false
		}
	}
	return len(lines) > 0 && lines[0] != ""
}
