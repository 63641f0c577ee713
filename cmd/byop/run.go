package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/byop-dev/byop/buildkit"
	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/gitsrc"
	"github.com/byop-dev/byop/previews"
	"github.com/byop-dev/byop/registry"
	"github.com/byop-dev/byop/tasks"
	"github.com/byop-dev/byop/tasks/pipeline"
	"github.com/byop-dev/byop/webhook"
)

const usage = `usage: byop serve [--config byop.yaml]

Every setting can also be given as a BYOP_* environment variable; see the README.`

// run parses the command line and runs the command.
func run(ctx context.Context, args, environ []string, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "serve" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML config file")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := config.Load(*path, environ)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	return serve(ctx, cfg, newLogger(stderr, cfg.LogLevel), nil)
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// addrs are where a running byop listens.
type addrs struct {
	API    string // webhooks, pages, /healthz
	Router string // previews
}

// serve builds byop's parts from cfg and runs them until ctx ends. ready,
// if not nil, is told where byop listens once it does.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addrs)) error {
	dirs := map[string]string{
		"work":    filepath.Join(cfg.DataDir, "work"),
		"git":     filepath.Join(cfg.DataDir, "cache", "git"),
		"compose": filepath.Join(cfg.DataDir, "compose"),
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("making data dir: %w", err)
		}
	}
	store, err := previews.Open(ctx, filepath.Join(cfg.DataDir, "byop.db"))
	if err != nil {
		return err
	}
	defer store.Close()

	apiLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening for webhooks: %w", err)
	}
	defer apiLn.Close()
	routerLn, err := net.Listen("tcp", cfg.RouterAddr)
	if err != nil {
		return fmt.Errorf("listening for previews: %w", err)
	}
	defer routerLn.Close()
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://localhost:" + strconv.Itoa(apiLn.Addr().(*net.TCPAddr).Port)
	}
	routerPort := cfg.RouterPort()
	if routerPort == 0 {
		routerPort = routerLn.Addr().(*net.TCPAddr).Port
	}

	redisOpt := asynq.RedisClientOpt{Addr: cfg.RedisAddr, DB: cfg.RedisDB, DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	queue := asynq.NewClient(redisOpt)
	defer queue.Close()
	rdb := redis.NewClient(&redis.Options{Addr: cfg.RedisAddr, DB: cfg.RedisDB, DialTimeout: 2 * time.Second})
	defer rdb.Close()

	builder, err := buildkit.New(ctx, cfg.BuildKitAddr)
	if err != nil {
		return err
	}
	defer builder.Close()
	runner, stopRunner, err := newRunner(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stopRunner()
	router := previews.NewRouter(log)
	pipe := &pipeline.Pipeline{
		Source:  gitsrc.New(dirs["git"], gitsrc.WithLogger(log)),
		Builder: builder,
		Images:  registry.New(registry.WithInsecure(cfg.RegistryInsecure)),
		Runner:  runner,
		Router:  router,
		Store:   store,
		Log:     log,
		Settings: pipeline.Settings{
			PublicURL:        cfg.PublicURL,
			RegistryPrefix:   cfg.RegistryPrefix,
			RegistryInsecure: cfg.RegistryInsecure,
			PreviewDomain:    cfg.PreviewDomain,
			RouterPort:       routerPort,
			WorkDir:          dirs["work"],
			TrustOncePerPR:   cfg.TrustOncePerPR,
			MaxBuilds:        cfg.MaxBuilds,
			MaxBuildsPerRepo: cfg.MaxBuildsPerRepo,
		},
	}
	gh, auth, err := newGitHub(ctx, &cfg, log)
	if err != nil {
		return err
	}
	if gh != nil {
		pipe.Reporter, pipe.Tokens = gh, auth
	} else {
		log.Info("no GitHub token: reports are shown on byop's own pages only", "url", cfg.PublicURL)
	}
	if err := pipe.RestoreRoutes(ctx); err != nil {
		log.Warn("restoring preview routes", "err", err)
	}

	// Configured repositories, and those a GitHub App installation added.
	allow := func(repo string) bool {
		if cfg.Allows(repo) {
			return true
		}
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		ok, err := store.Installed(ctx, repo)
		if err != nil {
			log.Warn("reading installed repositories", "err", err)
		}
		return ok
	}
	receiver, err := webhook.New(cfg.WebhookSecret, queue, webhook.Options{
		Allow: allow, BuildTimeout: cfg.BuildTimeout, AllowDrafts: cfg.AllowDrafts, BotLogin: cfg.GitHubLogin, Log: log,
	})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/webhooks/github", receiver)
	mux.HandleFunc("GET /healthz", healthz(store, rdb))
	previews.NewPages(store, log).Register(mux)

	worker := asynq.NewServer(redisOpt, asynq.Config{
		Concurrency:       cfg.Concurrency,
		TaskCheckInterval: cfg.TaskCheckInterval,
		Queues:            tasks.Queues(),
		Logger:            asynqLogger{log.With("part", "worker")},
		ShutdownTimeout:   30 * time.Second,
	})
	taskMux := asynq.NewServeMux()
	pipe.Register(taskMux)
	if err := worker.Start(taskMux); err != nil {
		return fmt.Errorf("starting worker: %w", err)
	}
	defer worker.Shutdown()

	api := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	previewSrv := &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- api.Serve(apiLn) }()
	go func() { errc <- previewSrv.Serve(routerLn) }()
	log.Info("byop serving", "api", apiLn.Addr().String(), "router", routerLn.Addr().String(), "previews", "http://pr-N.<repo>.<owner>."+cfg.PreviewDomain+":"+strconv.Itoa(routerPort)+"/")
	if ready != nil {
		ready(addrs{API: apiLn.Addr().String(), Router: routerLn.Addr().String()})
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	api.Shutdown(shutdown)
	previewSrv.Shutdown(shutdown)
	log.Info("byop stopped")
	return nil
}

// healthz answers 200 when Redis and the store answer.
func healthz(store *previews.Store, rdb *redis.Client) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var errs []error
		if err := rdb.Ping(ctx).Err(); err != nil {
			errs = append(errs, fmt.Errorf("redis: %w", err))
		}
		if err := store.Ping(ctx); err != nil {
			errs = append(errs, fmt.Errorf("store: %w", err))
		}
		if err := errors.Join(errs...); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	}
}

// asynqLogger hands asynq's log lines to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)); os.Exit(1) }
