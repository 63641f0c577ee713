package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// commandOutput runs a command and returns its stdout.
func commandOutput(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(errb.Bytes()))
	}
	return out.String(), nil
}

// cleanup removes what this run left in Docker and Redis: containers
// labelled with one of this run's repositories (should a measure have
// failed before byop tore its previews down) and their compose networks,
// the images pulled from this run's registry prefix, and the bench's Redis
// database. The images stay in the registry and BuildKit's cache.
func (b *bench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := commandOutput(ctx, "docker", "ps", "-a", "--filter", "label=byop.repo", "--format", `{{.ID}}	{{.Label "byop.repo"}}	{{.Label "com.docker.compose.project"}}`)
	if err != nil {
		b.logf("cleanup: %v", err)
		return
	}
	var ids []string
	projects := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(l, "\t")
		if len(f) == 3 && strings.HasPrefix(f[1], benchOwner+"/") && strings.Contains(f[1], b.nonce) {
			ids = append(ids, f[0])
			projects[f[2]] = true
		}
	}
	if len(ids) > 0 {
		b.logf("cleanup: removing %d containers left by this run", len(ids))
		if _, err := commandOutput(ctx, "docker", append([]string{"rm", "-f"}, ids...)...); err != nil {
			b.logf("cleanup: %v", err)
		}
	}
	for p := range projects {
		nets, _ := commandOutput(ctx, "docker", "network", "ls", "-q", "--filter", "label=com.docker.compose.project="+p)
		if f := strings.Fields(nets); len(f) > 0 {
			commandOutput(ctx, "docker", append([]string{"network", "rm"}, f...)...)
		}
	}
	images, err := commandOutput(ctx, "docker", "images", "--no-trunc", "--format", "{{.Repository}} {{.ID}}")
	if err == nil {
		var rm []string
		seen := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(images), "\n") {
			if repo, id, ok := strings.Cut(l, " "); ok && strings.HasPrefix(repo, b.registryPrefix()+"/") && !seen[id] {
				seen[id] = true
				rm = append(rm, id)
			}
		}
		if len(rm) > 0 {
			if _, err := commandOutput(ctx, "docker", append([]string{"image", "rm", "-f"}, rm...)...); err != nil {
				b.logf("cleanup: %v", err)
			}
		}
	}
	if err := flushRedis(ctx, asynq.RedisClientOpt{Addr: b.o.redis, DB: b.o.redisDB}); err != nil {
		b.logf("cleanup: %v", err)
	}
}
