// Package byopproc runs `byop serve` as a child process the way an operator
// runs it — the binary, with BYOP_* settings in its environment — for the
// tools that drive byop from outside (the demo, the bench): it starts byop,
// waits until byop says where it listens and answers /healthz, polls
// conditions while watching that byop still runs, and stops it with SIGTERM.
package byopproc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// readyLine is what byop serve logs once it listens, with api=host:port
// and router=host:port (cmd/byop/run.go).
const readyLine = "byop serving"

// Options say how to start byop.
type Options struct {
	// Binary is the byop binary.
	Binary string
	// Env holds byop's settings (BYOP_LISTEN=127.0.0.1:0, ...). The
	// caller's own BYOP_* variables (a GitHub token, say) are not passed
	// on: byop runs with these settings only.
	Env []string
	// Log is the file byop's output goes to; it is replaced.
	Log string
	// StartTimeout bounds the wait until byop listens and answers
	// /healthz; 30s if zero.
	StartTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before it kills
	// byop; 45s if zero, as byop gives running tasks 30s to finish.
	StopTimeout time.Duration
}

// Proc is a running byop serve.
type Proc struct {
	cmd         *exec.Cmd
	log         string
	api, router string
	stopTimeout time.Duration
	exited      chan struct{} // closed once byop has exited, with err set
	err         error
}

// Start starts byop serve in its own process group (Ctrl-C in a terminal
// reaches only the caller, which stops byop when it chooses) and waits
// until byop has logged where it listens and its /healthz answers 200.
// ctx bounds the wait, not byop's life: byop runs until Stop.
func Start(ctx context.Context, o Options) (*Proc, error) {
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 45 * time.Second
	}
	logFile, err := os.Create(o.Log)
	if err != nil {
		return nil, fmt.Errorf("starting byop: %w", err)
	}
	ready := &lineWatcher{want: readyLine, found: make(chan string, 1)}
	cmd := exec.Command(o.Binary, "serve")
	cmd.Env = append(withoutBYOP(os.Environ()), o.Env...)
	cmd.Stdout = logFile
	cmd.Stderr = io.MultiWriter(logFile, ready)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", o.Binary, err)
	}
	p := &Proc{cmd: cmd, log: o.Log, stopTimeout: o.StopTimeout, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	if err := p.waitReady(ctx, ready.found, o.StartTimeout); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// waitReady waits for byop's ready line, then for its /healthz.
func (p *Proc) waitReady(ctx context.Context, found <-chan string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	select {
	case line := <-found:
		p.api, p.router = loopback(logValue(line, "api")), loopback(logValue(line, "router"))
	case <-p.exited:
		return fmt.Errorf("byop exited at start (%v); the end of its log:\n%s", p.err, p.LogTail(20))
	case <-time.After(limit):
		return fmt.Errorf("byop did not listen within %s (log: %s)", limit, p.log)
	case <-ctx.Done():
		return fmt.Errorf("starting byop: %w", context.Cause(ctx))
	}
	if p.api == "" || p.router == "" {
		return fmt.Errorf("cannot read byop's addresses from its log (%s)", p.log)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	return p.Poll(ctx, 10*time.Millisecond, time.Until(deadline), "waiting for byop's /healthz", func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.api+"/healthz", nil)
		if err != nil {
			return false, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// API is where byop's webhook receiver and pages listen, host:port (a
// loopback address where byop listens on all of them).
func (p *Proc) API() string { return p.api }

// Router is where byop's preview router listens, host:port.
func (p *Proc) Router() string { return p.router }

// Pid is byop's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// LogPath is the file byop's output goes to.
func (p *Proc) LogPath() string { return p.log }

// LogTail returns the last n lines of byop's log.
func (p *Proc) LogTail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Poll calls check every interval until it is done or fails, byop exits,
// ctx ends or limit passes; what names the wait in the error.
func (p *Proc) Poll(ctx context.Context, every, limit time.Duration, what string, check func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		if done, err := check(); done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: gave up after %s (byop's log: %s)", what, limit, p.log)
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s: byop exited (%v); the end of its log:\n%s", what, p.err, p.LogTail(20))
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, context.Cause(ctx))
		case <-time.After(every):
		}
	}
}

// Stop sends byop SIGTERM and waits until it has exited, killing it after
// Options.StopTimeout. It fails when byop did not exit cleanly.
func (p *Proc) Stop() error {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(p.stopTimeout):
			p.cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("byop did not stop within %s of SIGTERM; killed (log: %s)", p.stopTimeout, p.log)
		}
	}
	if p.err != nil {
		return fmt.Errorf("byop exited: %w (log: %s)", p.err, p.log)
	}
	return nil
}

// withoutBYOP drops BYOP_* variables from environ.
func withoutBYOP(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "BYOP_") {
			out = append(out, kv)
		}
	}
	return out
}

// logValue reads key=value from a log/slog text line.
func logValue(line, key string) string {
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok && k == key {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// loopback replaces an unspecified host (0.0.0.0, ::) in addr by
// 127.0.0.1, where a client on this machine reaches it.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// lineWatcher is a writer that sends the first line containing want, once.
type lineWatcher struct {
	want  string
	found chan string
	mu    sync.Mutex
	buf   []byte
	done  bool
}

func (w *lineWatcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	for {
		line, rest, ok := bytes.Cut(w.buf, []byte("\n"))
		if !ok {
			break
		}
		w.buf = rest
		if bytes.Contains(line, []byte(w.want)) {
			w.done, w.buf = true, nil
			w.found <- string(line)
			break
		}
	}
	return len(b), nil
}
