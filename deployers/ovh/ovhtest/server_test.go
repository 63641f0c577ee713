package ovhtest

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	ovhapi "github.com/ovh/go-ovh/ovh"
)

func TestSignatureIsGoOVHsFormula(t *testing.T) {
	// printf '%s' 'secret+ck+GET+http://h/1.0/x++1700000000' | sha1sum
	got := Signature("secret", "ck", "GET", "http://h/1.0/x", "", "1700000000")
	if want := "$1$b6509432cb668b3cdc4b7373c474ca350da80196"; got != want {
		t.Errorf("Signature() = %s, want %s", got, want)
	}
}

func client(t *testing.T, s *Server, appKey, secret, ck string) *ovhapi.Client {
	t.Helper()
	c, err := ovhapi.NewClient(s.Endpoint, appKey, secret, ck)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestServerAcceptsOnlyCorrectlySignedRequests(t *testing.T) {
	s := New(t, "app", "secret", "consumer")
	s.Skew = time.Hour // go-ovh corrects its clock with /auth/time
	ctx := context.Background()
	var list []Instance
	if err := client(t, s, "app", "secret", "consumer").GetWithContext(ctx, "/cloud/project/p/instance", &list); err != nil {
		t.Fatalf("signed request with a server an hour ahead: %v", err)
	}
	body := map[string]any{"name": "x", "flavorId": "f", "imageId": "i", "region": "GRA11"}
	if err := client(t, s, "app", "secret", "consumer").PostWithContext(ctx, "/cloud/project/p/instance", body, nil); err != nil {
		t.Fatalf("signed POST: %v", err)
	}

	tests := []struct {
		name    string
		c       *ovhapi.Client
		message string
	}{
		{"wrong application secret", client(t, s, "app", "other", "consumer"), "Invalid signature"},
		{"wrong consumer key", client(t, s, "app", "secret", "other"), "Invalid credential"},
		{"wrong application key", client(t, s, "other", "secret", "consumer"), "Invalid application key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.PostWithContext(ctx, "/cloud/project/p/instance", body, nil)
			var apiErr *ovhapi.APIError
			if !errors.As(err, &apiErr) || apiErr.Code != http.StatusForbidden || apiErr.Message != tt.message {
				t.Errorf("error = %v, want 403 %q", err, tt.message)
			}
		})
	}
	if n := len(s.Instances("p")); n != 1 {
		t.Errorf("instances = %d, want only the one signed correctly", n)
	}
}

func TestServerRejectsATamperedBodyAndAStaleTimestamp(t *testing.T) {
	s := New(t, "app", "secret", "consumer")
	send := func(body string, signedBody string, ts int64) int {
		url := s.Endpoint + "/cloud/project/p/instance"
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(body)))
		tss := strconv.FormatInt(ts, 10)
		req.Header.Set("X-Ovh-Application", "app")
		req.Header.Set("X-Ovh-Consumer", "consumer")
		req.Header.Set("X-Ovh-Timestamp", tss)
		req.Header.Set("X-Ovh-Signature", Signature("secret", "consumer", "POST", url, signedBody, tss))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	good := `{"name":"x","flavorId":"f","imageId":"i","region":"r"}`
	now := time.Now().Unix()
	if code := send(good, good, now); code != http.StatusOK {
		t.Fatalf("correct request = %d", code)
	}
	if code := send(`{"name":"evil","flavorId":"f","imageId":"i","region":"r"}`, good, now); code != http.StatusForbidden {
		t.Errorf("tampered body = %d, want 403", code)
	}
	if code := send(good, good, now-3600); code != http.StatusForbidden {
		t.Errorf("hour-old timestamp = %d, want 403", code)
	}
	rejected := 0
	for _, c := range s.Calls() {
		if c.Rejected {
			rejected++
		}
	}
	if rejected != 2 || len(s.Instances("p")) != 1 {
		t.Errorf("rejected %d, instances %d; want 2 and 1", rejected, len(s.Instances("p")))
	}
}

func TestServerWalksAnInstanceFromBuildToActive(t *testing.T) {
	s := New(t, "app", "secret", "consumer")
	s.BuildPolls = 2
	c := client(t, s, "app", "secret", "consumer")
	ctx := context.Background()
	var in Instance
	if err := c.PostWithContext(ctx, "/cloud/project/p/instance", map[string]any{"name": "x", "flavorId": "f", "imageId": "i", "region": "r"}, &in); err != nil {
		t.Fatal(err)
	}
	var states []string
	for range 4 {
		var got Instance
		if err := c.GetWithContext(ctx, "/cloud/project/p/instance/"+in.ID, &got); err != nil {
			t.Fatal(err)
		}
		states = append(states, got.Status)
		if got.Status == "ACTIVE" && (len(got.IPAddresses) == 0 || got.IPAddresses[0].IP != "127.0.0.1") {
			t.Errorf("active instance addresses = %v", got.IPAddresses)
		}
	}
	if want := []string{"BUILD", "BUILD", "ACTIVE", "ACTIVE"}; !slices.Equal(states, want) {
		t.Errorf("states = %v, want %v", states, want)
	}
	if err := c.DeleteWithContext(ctx, "/cloud/project/p/instance/"+in.ID, nil); err != nil {
		t.Fatal(err)
	}
	var apiErr *ovhapi.APIError
	if err := c.GetWithContext(ctx, "/cloud/project/p/instance/"+in.ID, nil); !errors.As(err, &apiErr) || apiErr.Code != 404 {
		t.Errorf("GET after delete = %v, want 404", err)
	}
}
