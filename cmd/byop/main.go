// Command byop is a Git-event driven CI/CD bot: GitHub webhooks in, a
// preview of every pull request out. `byop serve` runs the webhook
// receiver, the worker and the preview router in one process.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// byop's heap is small and its hot path (the webhook receiver)
		// allocates a payload's worth per delivery: collecting less often
		// buys latency for a few MB of memory. GOGC still overrides it.
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "byop:", err)
		os.Exit(1)
	}
}
