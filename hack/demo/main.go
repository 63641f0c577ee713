// Command demo runs byop end to end on this machine: it commits a sample app
// to a local git server, starts `byop serve`, delivers one signed
// pull_request webhook and waits until the pull request's preview answers.
// It then prints the preview's URL and keeps everything running until
// Ctrl-C, when it closes the pull request (tearing the preview down) and
// stops byop.
//
// `make demo` runs it after the set-up, with the services' addresses from
// .cache/test.env. What it makes lives under -dir (replaced on each run) and
// in its own Redis database (-redis-db, flushed first).
//
// Usage:
//
//	demo [-once] [-listen 127.0.0.1:8080] [-router 127.0.0.1:8081] [-base-image IMAGE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/byop-dev/byop/previews"
)

// The sample pull request.
const (
	owner  = "demo"
	repo   = "sample-app"
	pr     = 1
	branch = "hello-byop"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type options struct {
	byop, dir, baseImage      string
	listen, router            string
	redis, buildkit, registry string
	redisDB                   int
	timeout                   time.Duration
	once                      bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.StringVar(&o.byop, "byop", ".cache/bin/byop", "the byop binary to run")
	fs.StringVar(&o.dir, "dir", ".cache/demo", "directory for the sample repository (git/), byop's data (byop/) and log, all replaced on each run")
	fs.StringVar(&o.baseImage, "base-image", os.Getenv("BYOP_TEST_BASE_IMAGE"), "base image of the sample app's Dockerfile (busybox)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address of byop's webhook receiver and pages")
	fs.StringVar(&o.router, "router", "127.0.0.1:8081", "address of byop's preview router")
	fs.StringVar(&o.redis, "redis", envOr("BYOP_TEST_REDIS", "127.0.0.1:6379"), "Redis address")
	fs.IntVar(&o.redisDB, "redis-db", 2, "Redis database for the demo's queue (flushed first)")
	fs.StringVar(&o.buildkit, "buildkit", envOr("BYOP_TEST_BUILDKIT", "unix:///run/buildkit/buildkitd.sock"), "buildkitd address")
	fs.StringVar(&o.registry, "registry", envOr("BYOP_TEST_REGISTRY", "127.0.0.1:5000"), "registry (host:port) for the preview's image")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for the preview to answer")
	fs.BoolVar(&o.once, "once", false, "tear down and exit as soon as the preview answers")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.baseImage == "" {
		return o, errors.New("no base image: run `make demo`, which reads it from .cache/test.env, or pass -base-image")
	}
	return o, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// run runs the demo until ctx ends (or, with -once, until the preview
// answers).
func run(ctx context.Context, args []string, stdout io.Writer) error {
	start := time.Now()
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	for _, addr := range []string{o.listen, o.router} {
		if err := portFree(addr); err != nil {
			return err
		}
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	// Start clean: what an earlier demo left is removed (its preview
	// containers, if any, are replaced by this run's deploy).
	for _, sub := range []string{"git", "byop"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return fmt.Errorf("removing an earlier demo's files: %w", err)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: o.redis, DB: o.redisDB})
	err = rdb.FlushDB(ctx).Err()
	rdb.Close()
	if err != nil {
		return fmt.Errorf("flushing redis db %d at %s: %w", o.redisDB, o.redis, err)
	}

	sha, err := sampleRepo(ctx, filepath.Join(dir, "git"), o.baseImage)
	if err != nil {
		return err
	}
	g, err := serveGit(filepath.Join(dir, "git"))
	if err != nil {
		return err
	}
	defer g.Close()
	cloneURL := g.CloneURL(owner + "/" + repo)
	fmt.Fprintf(stdout, "demo: %s/%s#%d at %s, served by git http-backend at %s\n", owner, repo, pr, sha[:7], cloneURL)

	logPath := filepath.Join(dir, "byop.log")
	fmt.Fprintf(stdout, "demo: byop is starting; its log: %s\n", logPath)
	b, err := startByop(ctx, o, dir, logPath)
	if err != nil {
		return err
	}
	defer func() {
		if err := b.stop(); err != nil {
			fmt.Fprintln(stdout, "demo:", err)
		}
	}()

	key := previews.Key{Owner: owner, Repo: repo, PR: pr}
	ev := event{sha: sha, cloneURL: cloneURL}
	if err := b.deliver(ctx, ev.payload("opened")); err != nil {
		return err
	}
	defer func() {
		// ctx may have ended already: the tear-down has its own, which a
		// further Ctrl-C cuts short (byop is stopped all the same).
		fmt.Fprintln(stdout, "demo: closing the pull request: tearing the preview down (Ctrl-C again to skip)")
		tctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		tctx, stop := signal.NotifyContext(tctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := b.teardown(tctx, key, ev.payload("closed")); err != nil {
			fmt.Fprintf(stdout, "demo: the preview may still run (docker compose -p %s down): %v\n", key.Project(), err)
			return
		}
		fmt.Fprintln(stdout, "demo: preview removed; stopping byop")
	}()

	routerPort, _ := strconv.Atoi(portOf(o.router))
	url := key.URL("localhost", routerPort)
	fmt.Fprintf(stdout, "demo: webhook delivered; follow the build at %s/builds/1\n", b.pages)
	if err := b.waitPreview(ctx, url, o.timeout, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `
The preview of %s is live (%s after the demo started):

    %s

Browsers resolve *.localhost to this machine; from a shell:

    curl -H 'Host: %s' http://127.0.0.1:%d/

byop's pages: %s/ (build: %s/builds/1)
`, key, time.Since(start).Round(time.Second), url, key.Host("localhost"), routerPort, b.pages, b.pages)
	if o.once {
		return nil
	}
	fmt.Fprintln(stdout, "\nPress Ctrl-C to stop: the preview is torn down and byop stopped.")
	<-ctx.Done()
	return nil
}

// portFree fails when something already listens on addr, most likely the
// byop of an earlier demo that still runs.
func portFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s is taken (%w): is an earlier `make demo` or another byop still running? "+
			"Stop it (`ss -ltnp 'sport = :%s'` shows which process listens), or choose other addresses with DEMO_FLAGS='-listen ... -router ...'", addr, err, portOf(addr))
	}
	return ln.Close()
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
