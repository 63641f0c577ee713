package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"time"

	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/webhook"
)

// receiverEnv carries the receiver's webhook secret.
const receiverEnv = "BENCH_RECEIVER_SECRET"

// receiverMain is the `receiver` subcommand: byop's webhook receiver alone,
// wired as `byop serve` wires it (the same asynq client options, the same
// handler, logging at info to a file), under a CPU profile. byop serve has
// no profiling endpoint; this is how the bench sees where P1's CPU goes.
// Its latencies are not reported. It prints its address on stdout and
// serves until its stdin closes.
func receiverMain(args []string) int {
	fs := flag.NewFlagSet("receiver", flag.ContinueOnError)
	redisAddr := fs.String("redis", "127.0.0.1:6379", "Redis address")
	redisDB := fs.Int("redis-db", 12, "Redis database")
	profile := fs.String("cpuprofile", "", "write a CPU profile here")
	logPath := fs.String("log", os.DevNull, "log file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	secret := config.Secret(os.Getenv(receiverEnv))
	logFile, err := os.Create(*logPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		return 1
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))

	cfg := config.Default()
	cfg.Repositories = []string{benchOwner + "/*"}
	redisOpt := asynq.RedisClientOpt{Addr: *redisAddr, DB: *redisDB, DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	queue := asynq.NewClient(redisOpt)
	defer queue.Close()
	receiver, err := webhook.New(secret, queue, webhook.Options{Allow: cfg.Allows, BuildTimeout: cfg.BuildTimeout, Log: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		return 1
	}
	mux := http.NewServeMux()
	mux.Handle("/webhooks/github", receiver)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		return 1
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "receiver:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "receiver:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Println(ln.Addr().String())
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
	return 0
}
