package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/byop-dev/byop/internal/delivery"
)

func TestQuantileIsNearestRank(t *testing.T) {
	var d durations
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 50 * time.Millisecond},
		{0.99, 99 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{0, 1 * time.Millisecond},
	} {
		if got := d.quantile(tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := (durations{3, 1, 2}).quantile(0.99); got != 3 {
		t.Errorf("p99 of 3 samples = %v, want the largest", got)
	}
	if got := (durations{}).quantile(0.5); got != 0 {
		t.Errorf("quantile of nothing = %v, want 0", got)
	}
}

func TestSummarizeReportsMedianAndSpread(t *testing.T) {
	s := summarize([]float64{3, 1, 2, 10})
	if s.median != 2.5 || s.lo != 1 || s.hi != 10 || s.n != 4 {
		t.Errorf("summary = %+v, want median 2.5 (mean of the middle two), spread 1–10", s)
	}
	if got := fmtSpread(summarizeDurations([]time.Duration{2 * time.Millisecond, 1500 * time.Microsecond, 3 * time.Millisecond})); got != "2.00 ms (1.50 ms–3.00 ms)" {
		t.Errorf("fmtSpread = %q", got)
	}
}

// A request that stalls must neither hold back the ones scheduled after it
// (the rate is kept) nor hide its stall: latency counts from the scheduled
// send time.
func TestOpenLoopKeepsScheduleWhileARequestStalls(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("stall") != "" {
			time.Sleep(300 * time.Millisecond)
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	c := loadClient()
	res := openLoop(context.Background(), 100, 20, func(ctx context.Context, i int) (int, error) {
		url := srv.URL + "/"
		if i == 0 {
			url += "?stall=1"
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	})
	if res.sent != 20 || len(res.accepted) != 20 || res.errors != 0 {
		t.Fatalf("sent %d, accepted %d, errors %d (%v), want all 20 accepted", res.sent, len(res.accepted), res.errors, res.firstErr)
	}
	if got := res.latencies.max(); got < 300*time.Millisecond {
		t.Errorf("max latency %v, want the 300ms stall in it", got)
	}
	// The schedule is kept: 20 requests at 100/s leave over ~190ms, not
	// after the stalled one returned.
	if res.lag.quantile(0.5) > 50*time.Millisecond {
		t.Errorf("median send lag %v: the sender waited for answers", res.lag.quantile(0.5))
	}
}

func TestCeilingChecksTheSignature(t *testing.T) {
	h := ceilingHandler([]byte("s3cret"))
	body := []byte(`{"action":"opened"}`)
	for _, tc := range []struct {
		name, sig string
		want      int
	}{
		{"signed", delivery.Sign([]byte("s3cret"), body), http.StatusAccepted},
		{"wrong secret", delivery.Sign([]byte("other"), body), http.StatusUnauthorized},
		{"unsigned", "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/webhooks/github", strings.NewReader(string(body)))
			req.Header.Set("X-Hub-Signature-256", tc.sig)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Errorf("status %d, want %d", rec.Code, tc.want)
			}
		})
	}
}

func TestPhasesSplitAtLoggedMilestones(t *testing.T) {
	sha := "0123456789abcdef0123456789abcdef01234567"
	log := []string{
		`time=2030-01-01T00:00:00.100Z level=INFO msg="deploy started" pr=bench/app#1 sha=0123456 build=1`,
		`time=2030-01-01T00:00:00.150Z level=INFO msg="fetched commit" repo=http://x sha=` + sha,
		`time=2030-01-01T00:00:00.160Z level=INFO msg="fetched commit" repo=http://x sha=fedcba9876543210fedcba9876543210fedcba98`,
		`time=2030-01-01T00:00:01.150Z level=INFO msg="starting revision" project=p revision=` + sha,
		`time=2030-01-01T00:00:01.650Z level=INFO msg="revision answers" project=p revision=` + sha,
	}
	at := milestoneTimes(log, sha)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	got := phasesOf(at, t0, t0.Add(1700*time.Millisecond)).String()
	want := "queue pickup 100 ms, fetch 50 ms, build+push+verify+pull+compose file 1.00 s, compose up+answer 500 ms, switch+first answer 50 ms"
	if got != want {
		t.Errorf("phases\n got %s\nwant %s", got, want)
	}
}

func TestParseSizeReadsDockerUnits(t *testing.T) {
	for in, want := range map[string]float64{"1.5MiB": 1.5 * (1 << 20), "800KiB": 800 << 10, "2GB": 2e9, "12B": 12} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseSize("12"); err == nil {
		t.Error("a size without a unit parsed")
	}
}

func TestInTurnSwapsTheOrderEveryOtherRoundAndStopsAtAnError(t *testing.T) {
	var order []string
	runs := func() []func() error {
		return []func() error{
			func() error { order = append(order, "byop"); return nil },
			func() error { order = append(order, "floor"); return nil },
		}
	}
	for r := range 3 {
		if err := inTurn(r, runs()); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(order, " "); got != "byop floor floor byop byop floor" {
		t.Errorf("order %q, want byop first in even rounds, the floor first in odd ones", got)
	}
	order = nil
	failing := []func() error{func() error { return errors.New("boom") }, runs()[1]}
	if err := inTurn(0, failing); err == nil || len(order) != 0 {
		t.Errorf("inTurn = %v with %v run, want the error and nothing after it", err, order)
	}
}
