package deployers

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// composeFile is the part of the Compose file format byop writes: one
// service per revision of a preview, beside each other in one project.
// No "version" key: Compose v2 ignores it and v1 (1.27+) defaults it.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Networks map[string]composeNetwork `yaml:"networks,omitempty"`
}

// composeService runs one revision. It has no build key: images are pulled
// by digest, never built by compose.
type composeService struct {
	Image   string            `yaml:"image"`
	Labels  map[string]string `yaml:"labels,omitempty"`
	Ports   []string          `yaml:"ports,omitempty"`
	Restart string            `yaml:"restart,omitempty"`
}

type composeNetwork struct {
	Labels map[string]string `yaml:"labels,omitempty"`
}

// loopback is where Local publishes ports: only this host reaches them.
const loopback = "127.0.0.1"

// newService returns the service that runs s.Revision: its port is
// published on the host address bindIP, on a host port Docker picks.
func newService(s Spec, bindIP string) composeService {
	labels := maps.Clone(s.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelProject] = s.Project
	labels[LabelRevision] = s.Revision
	labels[LabelPort] = strconv.Itoa(s.Port)
	return composeService{
		Image:  s.Image,
		Labels: labels,
		// Short syntax: Compose v1 does not know the long syntax's host_ip.
		// Empty host port: Docker picks an ephemeral one.
		Ports:   []string{bindIP + "::" + strconv.Itoa(s.Port) + "/tcp"},
		Restart: "unless-stopped",
	}
}

// newNetwork returns the project's default network. It carries the Spec's
// labels and the project, not a revision: every revision shares it.
func newNetwork(s Spec) composeNetwork {
	labels := maps.Clone(s.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelProject] = s.Project
	return composeNetwork{Labels: labels}
}

// withRevision returns f (or a new file) with s's service added or
// replaced, its port published on loopback.
func withRevision(f composeFile, s Spec) composeFile { return withRevisionOn(f, s, loopback) }

// withRevisionOn returns f (or a new file) with s's service added or
// replaced, its port published on bindIP. An existing network keeps its
// labels, so that compose never sees the project's network change.
func withRevisionOn(f composeFile, s Spec, bindIP string) composeFile {
	out := composeFile{Services: maps.Clone(f.Services), Networks: maps.Clone(f.Networks)}
	if out.Services == nil {
		out.Services = map[string]composeService{}
	}
	out.Services[serviceName(s.Revision)] = newService(s, bindIP)
	if _, ok := out.Networks["default"]; !ok {
		if out.Networks == nil {
			out.Networks = map[string]composeNetwork{}
		}
		out.Networks["default"] = newNetwork(s)
	}
	return out
}

// marshalCompose renders f as YAML. Compose interpolates "$" in values, so
// every "$" in byop's values is written as "$$" and reaches Docker as is.
func marshalCompose(f composeFile) ([]byte, error) {
	b, err := yaml.Marshal(mapStrings(f, escapeDollar))
	if err != nil {
		return nil, fmt.Errorf("rendering compose file: %w", err)
	}
	return b, nil
}

// unmarshalCompose reads a file written by marshalCompose.
func unmarshalCompose(b []byte) (composeFile, error) {
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		return composeFile{}, fmt.Errorf("reading compose file: %w", err)
	}
	return mapStrings(f, unescapeDollar), nil
}

func escapeDollar(s string) string   { return strings.ReplaceAll(s, "$", "$$") }
func unescapeDollar(s string) string { return strings.ReplaceAll(s, "$$", "$") }

// mapStrings returns a copy of f with fn applied to every value.
func mapStrings(f composeFile, fn func(string) string) composeFile {
	mapLabels := func(in map[string]string) map[string]string {
		if in == nil {
			return nil
		}
		out := make(map[string]string, len(in))
		for k, v := range in {
			out[k] = fn(v)
		}
		return out
	}
	out := composeFile{Services: make(map[string]composeService, len(f.Services))}
	for name, svc := range f.Services {
		ports := make([]string, len(svc.Ports))
		for i, p := range svc.Ports {
			ports[i] = fn(p)
		}
		out.Services[name] = composeService{
			Image:   fn(svc.Image),
			Labels:  mapLabels(svc.Labels),
			Ports:   ports,
			Restart: svc.Restart,
		}
	}
	if f.Networks != nil {
		out.Networks = make(map[string]composeNetwork, len(f.Networks))
		for name, n := range f.Networks {
			out.Networks[name] = composeNetwork{Labels: mapLabels(n.Labels)}
		}
	}
	return out
}

// detectCompose returns the compose command: Docker Compose v2 (the docker
// CLI plugin) when `docker compose version` works, else v1's docker-compose.
func detectCompose(ctx context.Context, r runner, docker string) ([]string, error) {
	_, errV2 := r.Run(ctx, docker, "compose", "version")
	if errV2 == nil {
		return []string{docker, "compose"}, nil
	}
	_, errV1 := r.Run(ctx, "docker-compose", "version")
	if errV1 == nil {
		return []string{"docker-compose"}, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("finding docker compose: %w", ctx.Err())
	}
	return nil, fmt.Errorf("finding docker compose: neither %q (%w) nor %q (%w) works",
		docker+" compose version", errV2, "docker-compose version", errV1)
}
