package byopproc

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeEnv makes the test binary act as a fake byop serve; its value is the
// way it behaves.
const fakeEnv = "BYOPPROC_TEST_FAKE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakeByop(mode))
	}
	os.Exit(m.Run())
}

// fakeByop stands in for `byop serve`: it prints its BYOP_* settings,
// listens, logs where as byop does (split across writes), answers /healthz
// 503 a few times before 200, and exits 0 on SIGTERM. Modes: "serve",
// "exit" (fails at start), "stubborn" (ignores SIGTERM), "die" (exits 3 soon
// after it answered healthy).
func fakeByop(mode string) int {
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BYOP_") {
			fmt.Println("env", kv)
		}
	}
	if mode == "exit" {
		fmt.Fprintln(os.Stderr, `level=ERROR msg="cannot reach redis"`)
		return 3
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	api, _ := net.Listen("tcp", "0.0.0.0:0")
	router, _ := net.Listen("tcp", "127.0.0.1:0")
	var asked atomic.Int32
	go http.Serve(api, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && asked.Add(1) > 3 {
			if mode == "die" {
				time.AfterFunc(100*time.Millisecond, func() { os.Exit(3) })
			}
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	fmt.Fprint(os.Stderr, "time=x level=INFO msg=\"redis ok\"\ntime=y level=INFO msg=\"byop ser")
	fmt.Fprintf(os.Stderr, "ving\" api=%s router=%s previews=http://pr-N\n", api.Addr(), router.Addr())
	for {
		<-term
		if mode != "stubborn" {
			fmt.Fprintln(os.Stderr, `msg="byop stopped"`)
			return 0
		}
	}
}

func start(t *testing.T, mode string, o Options) (*Proc, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o.Binary = self
	o.Env = append(o.Env, fakeEnv+"="+mode)
	o.Log = filepath.Join(t.TempDir(), "byop.log")
	p, err := Start(context.Background(), o)
	if p != nil {
		t.Cleanup(func() { p.Stop() })
	}
	return p, err
}

func TestStartWaitsForTheAddressesAndHealth(t *testing.T) {
	t.Setenv("BYOP_GITHUB_TOKEN", "the caller's token")
	p, err := start(t, "serve", Options{Env: []string{"BYOP_WEBHOOK_SECRET=s", "BYOP_LISTEN=127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + p.API() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz answered %d after Start, want 200", resp.StatusCode)
	}
	if !strings.HasPrefix(p.API(), "127.0.0.1:") || !strings.HasPrefix(p.Router(), "127.0.0.1:") {
		t.Errorf("API %s, router %s: want loopback addresses (byop listened on 0.0.0.0)", p.API(), p.Router())
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop after a clean exit: %v", err)
	}
	log, _ := os.ReadFile(p.LogPath())
	for _, want := range []string{"env BYOP_WEBHOOK_SECRET=s", "env BYOP_LISTEN=127.0.0.1:0", "byop stopped"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(string(log), "BYOP_GITHUB_TOKEN") {
		t.Errorf("the caller's own BYOP_* setting reached byop:\n%s", log)
	}
}

func TestStartFailsWithTheLogWhenByopExits(t *testing.T) {
	_, err := start(t, "exit", Options{})
	if err == nil || !strings.Contains(err.Error(), "cannot reach redis") {
		t.Errorf("Start = %v, want the end of byop's log in the error", err)
	}
}

func TestStopKillsAByopThatIgnoresSIGTERM(t *testing.T) {
	p, err := start(t, "stubborn", Options{StopTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Stop()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop = %v, want it killed", err)
	}
	if err := syscall.Kill(p.Pid(), 0); err == nil {
		t.Errorf("process %d still exists after Stop", p.Pid())
	}
}

func TestPollEndsWhenByopExits(t *testing.T) {
	p, err := start(t, "die", Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Poll(context.Background(), 10*time.Millisecond, time.Minute, "waiting for nothing", func() (bool, error) { return false, nil })
	if err == nil || !strings.Contains(err.Error(), "byop exited") || !strings.Contains(err.Error(), "byop serving") {
		t.Errorf("Poll = %v, want byop's exit and the end of its log", err)
	}
	if err := p.Stop(); err == nil {
		t.Error("Stop of a byop that exited 3 reported no error")
	}
}

func TestPollGivesUpAtItsLimitAndReturnsWhenDone(t *testing.T) {
	p, err := start(t, "serve", Options{})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	err = p.Poll(context.Background(), time.Millisecond, time.Minute, "counting", func() (bool, error) { calls++; return calls == 3, nil })
	if err != nil || calls != 3 {
		t.Errorf("Poll = %v after %d calls, want done at the third", err, calls)
	}
	err = p.Poll(context.Background(), time.Millisecond, 20*time.Millisecond, "waiting for nothing", func() (bool, error) { return false, nil })
	if err == nil || !strings.Contains(err.Error(), "gave up after 20ms") {
		t.Errorf("Poll = %v, want it to give up", err)
	}
}

func TestLineWatcherFindsTheLineAcrossWrites(t *testing.T) {
	w := &lineWatcher{want: readyLine, found: make(chan string, 1)}
	for _, chunk := range []string{"time=x msg=start\ntime=y msg=\"byop ser", "ving\" api=127.0.0.1:4000 router=[::]:4001\nmore\n", "byop serving again\n"} {
		w.Write([]byte(chunk))
	}
	select {
	case line := <-w.found:
		if api, router := loopback(logValue(line, "api")), loopback(logValue(line, "router")); api != "127.0.0.1:4000" || router != "127.0.0.1:4001" {
			t.Errorf("addresses from %q: %q %q", line, api, router)
		}
	default:
		t.Fatal("the ready line was not found")
	}
}
