package main

import (
	"bufio"
	"context"
	"crypto/hmac"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/byop-dev/byop/internal/delivery"
)

// loadResult is what an open-loop run saw.
type loadResult struct {
	sent      int
	latencies durations // of every request that got an answer, from its scheduled time
	lag       durations // how late each request left, against its schedule
	codes     map[int]int
	errors    int
	firstErr  error
	accepted  []int // indexes of the requests answered 202
	elapsed   time.Duration
}

// openLoop sends n requests at a fixed rate: request i is scheduled at
// start + i/rate and leaves then, whatever happened to the ones before it.
// Its latency is measured from that scheduled time, not from when it
// actually left, so that a stall of the server (or of the sender) shows in
// the figures instead of quietly lowering the rate (no coordinated
// omission). send sends request i and returns the HTTP status.
func openLoop(ctx context.Context, rate int, n int, send func(ctx context.Context, i int) (int, error)) loadResult {
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	lag := make([]time.Duration, n)
	code := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now().Add(10 * time.Millisecond)
	sent := 0
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			break
		}
		sent++
		wg.Add(1)
		go func(i int, at time.Time) {
			defer wg.Done()
			lag[i] = time.Since(at)
			c, err := send(ctx, i)
			lat[i] = time.Since(at)
			code[i], errs[i] = c, err
		}(i, at)
	}
	wg.Wait()
	r := loadResult{sent: sent, codes: map[int]int{}, elapsed: time.Since(start)}
	for i := 0; i < sent; i++ {
		r.lag = append(r.lag, lag[i])
		if errs[i] != nil {
			r.errors++
			if r.firstErr == nil {
				r.firstErr = errs[i]
			}
			continue
		}
		r.latencies = append(r.latencies, lat[i])
		r.codes[code[i]]++
		if code[i] == http.StatusAccepted {
			r.accepted = append(r.accepted, i)
		}
	}
	return r
}

// loadClient is the load generator's HTTP client: connections are kept and
// reused, as many as the load needs, like a webhook sender's pool.
func loadClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
	}
}

// postDelivery sends one signed delivery with its own delivery ID and
// drains the answer.
func postDelivery(ctx context.Context, c *http.Client, url string, body []byte, sig, id string) (int, error) {
	req, err := delivery.NewRequest(ctx, url, delivery.Webhook{Event: "pull_request", ID: id, Body: body, Signature: sig})
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// ceilingEnv carries the ceiling server's webhook secret (not on its
// command line, where ps would show it).
const ceilingEnv = "BENCH_CEILING_SECRET"

// ceilingMain is the `ceiling` subcommand: a bare net/http server whose
// handler reads the body, checks its HMAC and answers 202, and nothing
// else. It is P1's comparison: the fastest a Go webhook receiver can
// answer on this machine. It prints its address on stdout, then serves
// until its stdin closes.
func ceilingMain(args []string) int {
	fs := flag.NewFlagSet("ceiling", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	secret := []byte(os.Getenv(ceilingEnv))
	if len(secret) == 0 {
		fmt.Fprintln(os.Stderr, "ceiling: no secret in", ceilingEnv)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		return 1
	}
	srv := &http.Server{Handler: ceilingHandler(secret), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	fmt.Println(ln.Addr().String())
	io.Copy(io.Discard, os.Stdin) // until the bench closes it, or exits
	srv.Close()
	return 0
}

func ceilingHandler(secret []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 25<<20))
		if err != nil {
			http.Error(w, "could not read the body", http.StatusBadRequest)
			return
		}
		if !hmac.Equal([]byte(r.Header.Get("X-Hub-Signature-256")), []byte(delivery.Sign(secret, body))) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, "queued\n")
	})
}

// childProc is a server the bench runs as a child process, as it runs
// byop: the ceiling, or byop's receiver under a profile.
type childProc struct {
	addr  string
	stdin io.WriteCloser
	cmd   *exec.Cmd
}

func startCeiling(secret []byte) (*childProc, error) {
	return startChild(append(os.Environ(), ceilingEnv+"="+string(secret)), "ceiling")
}

// startChild starts the bench itself with args as a server that prints
// its address and serves until its stdin closes.
func startChild(env []string, args ...string) (*childProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("starting the %s server: %w", args[0], err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = env
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the %s server: %w", args[0], err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		in.Close()
		cmd.Wait()
		return nil, fmt.Errorf("starting the %s server: %w", args[0], err)
	}
	return &childProc{addr: strings.TrimSpace(line), stdin: in, cmd: cmd}, nil
}

func (c *childProc) stop() error {
	c.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		return errors.New("the child server did not stop; killed")
	}
}
