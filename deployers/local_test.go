package deployers

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDocker answers the docker and compose commands Local runs, from a
// small in-memory model of containers.
type fakeDocker struct {
	mu         sync.Mutex
	images     map[string]map[string]string // ref -> labels, once pulled
	registry   map[string]map[string]string // what a pull would fetch
	containers []fakeContainer
	hostPort   string // published port given to started containers
	networks   map[string]map[string]string
	failUp     bool
}

type fakeContainer struct {
	ID      string
	Labels  map[string]string
	Running bool
	Port    string
}

func (d *fakeDocker) inspectJSON(c fakeContainer) map[string]any {
	ports := map[string]any{}
	if c.Port != "" {
		ports[c.Labels[LabelPort]+"/tcp"] = []any{map[string]any{"HostIp": "127.0.0.1", "HostPort": c.Port}}
	}
	return map[string]any{
		"Id": c.ID, "Name": "/" + c.ID,
		"State":           map[string]any{"Running": c.Running},
		"Config":          map[string]any{"Labels": c.Labels},
		"NetworkSettings": map[string]any{"Ports": ports},
	}
}

func matches(labels map[string]string, filters []string) bool {
	for _, f := range filters {
		k, v, hasV := strings.Cut(f, "=")
		got, ok := labels[k]
		if !ok || (hasV && got != v) {
			return false
		}
	}
	return true
}

func (d *fakeDocker) respond(argv []string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if argv[0] == "docker-compose" {
		return d.compose(argv)
	}
	args := argv[1:]
	switch {
	case args[0] == "ps":
		var filters []string
		all := false
		for i := 0; i < len(args); i++ {
			if args[i] == "--filter" {
				filters = append(filters, strings.TrimPrefix(args[i+1], "label="))
			}
			all = all || args[i] == "-a"
		}
		var out []string
		for _, c := range d.containers {
			if (all || c.Running) && matches(c.Labels, filters) {
				out = append(out, c.ID)
			}
		}
		return []byte(strings.Join(out, "\n")), nil
	case args[0] == "container" && args[1] == "inspect":
		var out []any
		for _, id := range args[3:] {
			for _, c := range d.containers {
				if c.ID == id {
					out = append(out, d.inspectJSON(c))
				}
			}
		}
		return json.Marshal(out)
	case args[0] == "image" && args[1] == "inspect":
		labels, ok := d.images[args[len(args)-1]]
		if !ok {
			return []byte("[]"), failing(argv, "Error: No such image")
		}
		return json.Marshal(labels)
	case args[0] == "pull":
		ref := args[len(args)-1]
		labels, ok := d.registry[ref]
		if !ok {
			return nil, failing(argv, "manifest unknown")
		}
		d.images[ref] = labels
		return nil, nil
	case args[0] == "rm":
		for _, id := range args[4:] {
			d.containers = slices.DeleteFunc(d.containers, func(c fakeContainer) bool { return c.ID == id })
		}
		return nil, nil
	case args[0] == "network" && args[1] == "ls":
		var out []string
		for name, labels := range d.networks {
			if matches(labels, []string{strings.TrimPrefix(args[4], "label=")}) {
				out = append(out, name)
			}
		}
		return []byte(strings.Join(out, "\n")), nil
	case args[0] == "network" && args[1] == "rm":
		for _, n := range args[3:] {
			delete(d.networks, n)
		}
		return nil, nil
	case args[0] == "volume" && args[1] == "ls":
		return nil, nil
	}
	return nil, failing(argv, "fake docker: unexpected command")
}

// compose handles `docker-compose -p P -f FILE up -d --no-deps --no-build SVC`.
func (d *fakeDocker) compose(argv []string) ([]byte, error) {
	if argv[1] == "version" {
		return []byte("docker-compose version 1.29.2"), nil
	}
	if d.failUp {
		return nil, failing(argv, "up failed")
	}
	project, file, svc := argv[2], argv[4], argv[len(argv)-1]
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, failing(argv, err.Error())
	}
	f, err := unmarshalCompose(b)
	if err != nil {
		return nil, failing(argv, err.Error())
	}
	s, ok := f.Services[svc]
	if !ok {
		return nil, failing(argv, "no such service: "+svc)
	}
	labels := map[string]string{"com.docker.compose.project": project}
	for k, v := range d.images[s.Image] {
		labels[k] = v
	}
	for k, v := range s.Labels {
		labels[k] = v
	}
	d.containers = append(d.containers, fakeContainer{ID: project + "_" + svc + "_1", Labels: labels, Running: true, Port: d.hostPort})
	if d.networks == nil {
		d.networks = map[string]map[string]string{}
	}
	d.networks[project+"_default"] = f.Networks["default"].Labels
	return nil, nil
}

// newFakeLocal returns a Local whose commands go to a fakeDocker, and the
// runner that records them.
func newFakeLocal(t *testing.T, d *fakeDocker, opts ...LocalOption) (*Local, *fakeRunner) {
	t.Helper()
	r := &fakeRunner{respond: d.respond}
	opts = append([]LocalOption{withRunner(r), WithComposeCommand("docker-compose")}, opts...)
	l, err := NewLocal(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l, r
}

// answering starts an HTTP server and returns its port.
func answering(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot) // any status counts
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return port
}

// silentPort returns a loopback port where nothing listens.
func silentPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return port
}

func commandsNamed(calls [][]string, word string) [][]string {
	var out [][]string
	for _, c := range calls {
		if slices.Contains(c, word) {
			out = append(out, c)
		}
	}
	return out
}

func TestDeployPullsStartsAndReturnsTheAnsweringEndpoint(t *testing.T) {
	s := testSpec()
	d := &fakeDocker{
		images:   map[string]map[string]string{},
		registry: map[string]map[string]string{s.Image: {RevisionLabel: s.Revision}},
		hostPort: answering(t),
	}
	l, r := newFakeLocal(t, d)

	ep, err := l.Deploy(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if want := "http://127.0.0.1:" + d.hostPort; ep.URL.String() != want {
		t.Errorf("endpoint = %s, want %s", ep.URL, want)
	}
	calls := r.recorded()
	if pulls := commandsNamed(calls, "pull"); !reflect.DeepEqual(pulls, [][]string{{"docker", "pull", "--quiet", "--", s.Image}}) {
		t.Errorf("pulls = %q", pulls)
	}
	file := filepath.Join(l.dir, s.Project+".compose.yml")
	wantUp := [][]string{{"docker-compose", "-p", s.Project, "-f", file, "up", "-d", "--no-deps", "--no-build", "app-0123456789ab"}}
	if ups := commandsNamed(calls, "up"); !reflect.DeepEqual(ups, wantUp) {
		t.Errorf("compose up = %q, want %q", ups, wantUp)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("compose file: %v", err)
	}
}

func TestDeployTheRunningRevisionAgainStartsNothing(t *testing.T) {
	s := testSpec()
	d := &fakeDocker{
		images:   map[string]map[string]string{},
		registry: map[string]map[string]string{s.Image: {RevisionLabel: s.Revision}},
		hostPort: answering(t),
	}
	l, r := newFakeLocal(t, d)
	first, err := l.Deploy(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	again, err := l.Deploy(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if again.URL.String() != first.URL.String() {
		t.Errorf("second deploy endpoint = %s, want %s", again.URL, first.URL)
	}
	calls := r.recorded()
	if n := len(commandsNamed(calls, "up")); n != 1 {
		t.Errorf("compose up ran %d times, want once", n)
	}
	if n := len(commandsNamed(calls, "pull")); n != 1 {
		t.Errorf("pull ran %d times, want once", n)
	}
	if len(d.containers) != 1 {
		t.Errorf("containers = %v, want one", d.containers)
	}
}

func TestDeployRefusesAnImageOfAnotherRevision(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
	}{
		{"other revision", map[string]string{RevisionLabel: revB}},
		{"no revision label", map[string]string{"other": "x"}},
		{"no labels at all", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testSpec()
			d := &fakeDocker{
				images:   map[string]map[string]string{},
				registry: map[string]map[string]string{s.Image: tt.labels},
				hostPort: answering(t),
			}
			l, r := newFakeLocal(t, d)
			_, err := l.Deploy(context.Background(), s)
			if !errors.Is(err, ErrRevisionMismatch) {
				t.Fatalf("Deploy() error = %v, want ErrRevisionMismatch", err)
			}
			if !strings.Contains(err.Error(), s.Revision) {
				t.Errorf("error %q does not name the wanted revision", err)
			}
			if ups := commandsNamed(r.recorded(), "up"); len(ups) != 0 {
				t.Errorf("compose up ran: %q", ups)
			}
			noComposeFile(t, l, s.Project, "compose file left behind")
		})
	}
}

func TestDeployRemovesARevisionThatNeverAnswers(t *testing.T) {
	s := testSpec()
	d := &fakeDocker{
		images:   map[string]map[string]string{s.Image: {RevisionLabel: s.Revision}},
		hostPort: silentPort(t),
	}
	old := fakeContainer{ID: "old", Running: true, Port: answering(t),
		Labels: map[string]string{LabelProject: s.Project, LabelRevision: revB, LabelPort: "8080", "com.docker.compose.project": s.Project}}
	d.containers = []fakeContainer{old}
	l, r := newFakeLocal(t, d, WithHealthTimeout(300*time.Millisecond))

	_, err := l.Deploy(context.Background(), s)
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Deploy() error = %v, want ErrNoAnswer", err)
	}
	if !strings.Contains(err.Error(), "port 8080 within 300ms") {
		t.Errorf("error %q does not say which port and how long", err)
	}
	if len(d.containers) != 1 || d.containers[0].ID != "old" {
		t.Errorf("containers after failed deploy = %v, want only the old one", d.containers)
	}
	if rms := commandsNamed(r.recorded(), "rm"); len(rms) != 1 || slices.Contains(rms[0], "old") {
		t.Errorf("rm calls = %q, want one removing the new revision only", rms)
	}
	noComposeFile(t, l, s.Project, "failed revision left in compose file")
}

func TestDeployRemovesWhatItStartedWhenComposeFails(t *testing.T) {
	s := testSpec()
	d := &fakeDocker{images: map[string]map[string]string{s.Image: {RevisionLabel: s.Revision}}, failUp: true}
	l, _ := newFakeLocal(t, d)
	_, err := l.Deploy(context.Background(), s)
	if err == nil || !strings.Contains(err.Error(), "up failed") {
		t.Fatalf("Deploy() error = %v, want compose's failure", err)
	}
	noComposeFile(t, l, s.Project, "failed revision left in compose file")
}

func TestDeployRetriesAfterACrashBetweenWritingTheFileAndStarting(t *testing.T) {
	s := testSpec()
	d := &fakeDocker{
		images:   map[string]map[string]string{s.Image: {RevisionLabel: s.Revision}},
		hostPort: answering(t),
	}
	l, r := newFakeLocal(t, d)
	// The crashed attempt wrote the compose file and started nothing.
	if _, err := l.editCompose(s.Project, func(f composeFile) composeFile { return withRevision(f, s) }); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Deploy(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if n := len(commandsNamed(r.recorded(), "up")); n != 1 || len(d.containers) != 1 {
		t.Errorf("compose up ran %d times, containers %v; want one start", n, d.containers)
	}
}

func TestDeployCancelledWhileWaitingRemovesTheNewRevision(t *testing.T) {
	s := testSpec()
	d := &fakeDocker{
		images:   map[string]map[string]string{s.Image: {RevisionLabel: s.Revision}},
		hostPort: silentPort(t),
	}
	l, _ := newFakeLocal(t, d, WithHealthTimeout(time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := l.Deploy(ctx, s)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Deploy() error = %v, want the context's deadline", err)
	}
	if len(d.containers) != 0 {
		t.Errorf("containers left = %v, want the new revision removed", d.containers)
	}
}

func TestRetireForceRemovesEveryOtherRevision(t *testing.T) {
	s := testSpec()
	lbl := func(rev string) map[string]string {
		return map[string]string{LabelProject: s.Project, LabelRevision: rev, LabelPort: "8080"}
	}
	d := &fakeDocker{containers: []fakeContainer{
		{ID: "a1", Labels: lbl(revA), Running: true},
		{ID: "b1", Labels: lbl(revB), Running: true},
		{ID: "b2", Labels: lbl(revB)},
		{ID: "x", Labels: map[string]string{LabelProject: s.Project}},
		{ID: "other", Labels: map[string]string{LabelProject: "byop-other-pr-1", LabelRevision: revB}, Running: true},
	}}
	l, r := newFakeLocal(t, d)
	if err := l.Retire(context.Background(), s.Project, revA); err != nil {
		t.Fatal(err)
	}
	wantRm := [][]string{{"docker", "rm", "-f", "-v", "--", "b1", "b2", "x"}}
	if rms := commandsNamed(r.recorded(), "rm"); !reflect.DeepEqual(rms, wantRm) {
		t.Errorf("rm calls = %q, want %q", rms, wantRm)
	}
	var left []string
	for _, c := range d.containers {
		left = append(left, c.ID)
	}
	if !reflect.DeepEqual(left, []string{"a1", "other"}) {
		t.Errorf("containers left = %v", left)
	}
}

func TestRetireDropsOtherRevisionsFromTheComposeFile(t *testing.T) {
	a, b := testSpec(), testSpec()
	b.Revision = revB
	d := &fakeDocker{images: map[string]map[string]string{}}
	l, _ := newFakeLocal(t, d)
	for _, s := range []Spec{a, b} {
		if _, err := l.editCompose(s.Project, func(f composeFile) composeFile { return withRevision(f, s) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Retire(context.Background(), a.Project, revB); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(l.composePath(a.Project))
	if err != nil {
		t.Fatal(err)
	}
	f, err := unmarshalCompose(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Services["app-fedcba987654"]; !ok || len(f.Services) != 1 {
		t.Errorf("services after retire = %v, want only B's", f.Services)
	}
}

func TestTeardownRemovesEverythingAndIsIdempotent(t *testing.T) {
	s := testSpec()
	d := &fakeDocker{
		images:   map[string]map[string]string{s.Image: {RevisionLabel: s.Revision}},
		hostPort: answering(t),
	}
	l, r := newFakeLocal(t, d)
	if _, err := l.Deploy(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := l.Teardown(context.Background(), s.Project); err != nil {
			t.Fatalf("teardown %d: %v", i+1, err)
		}
		if len(d.containers) != 0 || len(d.networks) != 0 {
			t.Errorf("teardown %d left containers %v, networks %v", i+1, d.containers, d.networks)
		}
		if _, err := os.Stat(l.composePath(s.Project)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("teardown %d left the compose file: %v", i+1, err)
		}
	}
	if rms := commandsNamed(r.recorded(), "rm"); len(rms) != 2 { // one container, one network
		t.Errorf("rm calls = %q, want the container and the network removed once each", rms)
	}
	if err := l.Teardown(context.Background(), "byop-never-deployed-pr-1"); err != nil {
		t.Errorf("tearing down a never-deployed project: %v", err)
	}
}

func TestListReportsByopRevisionsWithEndpoints(t *testing.T) {
	d := &fakeDocker{containers: []fakeContainer{
		{ID: "b", Running: true, Port: "49154", Labels: map[string]string{
			LabelProject: "byop-b-pr-2", LabelRevision: revB, LabelPort: "3000", "byop.pr": "2",
			"com.docker.compose.project": "byop-b-pr-2", "com.docker.compose.service": "app-fedcba987654"}},
		{ID: "a", Running: true, Port: "49153", Labels: map[string]string{
			LabelProject: "byop-a-pr-1", LabelRevision: revA, LabelPort: "8080", "byop.pr": "1",
			"com.docker.compose.project": "byop-a-pr-1"}},
		{ID: "stopped", Running: false, Port: "49155", Labels: map[string]string{
			LabelProject: "byop-c-pr-3", LabelRevision: revA, LabelPort: "8080", "com.docker.compose.project": "byop-c-pr-3"}},
		{ID: "image-says-byop", Running: true, Port: "49156", Labels: map[string]string{
			LabelProject: "byop-d-pr-4", LabelRevision: revA, LabelPort: "8080"}},
	}}
	l, _ := newFakeLocal(t, d)
	got, err := l.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, r := range got {
		summary = append(summary, r.Project+" "+r.Revision[:7]+" "+r.Endpoint.URL.String()+" pr="+r.Labels["byop.pr"])
		for k := range r.Labels {
			if strings.HasPrefix(k, "com.docker.compose.") {
				t.Errorf("%s: compose label %q listed", r.Project, k)
			}
		}
	}
	want := []string{
		"byop-a-pr-1 0123456 http://127.0.0.1:49153 pr=1",
		"byop-b-pr-2 fedcba9 http://127.0.0.1:49154 pr=2",
	}
	if !reflect.DeepEqual(summary, want) {
		t.Errorf("List() = %q, want %q", summary, want)
	}
}

func TestNewLocalRejectsBadOptions(t *testing.T) {
	if _, err := NewLocal(""); err == nil {
		t.Error("NewLocal with no directory succeeded")
	}
	if _, err := NewLocal(t.TempDir(), WithHealthTimeout(0)); err == nil {
		t.Error("NewLocal with a zero health timeout succeeded")
	}
}

// noComposeFile fails the test if project's compose file exists.
func noComposeFile(t *testing.T, l *Local, project, what string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(l.dir, project+".compose.yml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: %v", what, err)
	}
}
