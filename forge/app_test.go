package forge_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/forge/forgetest"
)

const appID = 4242

// appKey is one App key for the whole test binary: generating RSA keys is slow.
var appKey = sync.OnceValues(func() ([]byte, *rsa.PublicKey) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), &key.PublicKey
})

// headers records the Authorization header of every request sent, by
// "METHOD /path".
type headers struct {
	mu   sync.Mutex
	next http.RoundTripper
	seen []sentAuth
}

type sentAuth struct{ req, auth string }

func (h *headers) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.seen = append(h.seen, sentAuth{r.Method + " " + r.URL.Path, r.Header.Get("Authorization")})
	h.mu.Unlock()
	return h.next.RoundTrip(r)
}

func (h *headers) all() []sentAuth {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seen)
}

type appSetup struct {
	app  *forge.App
	c    *forge.Client
	sent *headers
	logs *bytes.Buffer // debug logs of both
}

// newAppClient enables the App on s (installation 7 unless enabled already)
// and returns a client authenticated as the App, recording what it sends.
func newAppClient(t *testing.T, s *forgetest.Server) appSetup {
	t.Helper()
	pemKey, pub := appKey()
	if s.InstallationTokens() == nil {
		s.EnableApp(appID, pub, 7)
	}
	sent := &headers{next: http.DefaultTransport}
	logs := &bytes.Buffer{}
	log := slog.New(slog.NewTextHandler(&syncWriter{w: logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := []forge.Option{
		forge.WithHTTPClient(&http.Client{Transport: sent}),
		forge.WithLogger(log),
		forge.WithRetry(forge.Retry{Attempts: 3, Backoff: time.Millisecond, MaxWait: time.Second, Sleep: (&sleeps{}).sleep}),
	}
	app, err := forge.NewApp(s.URL(), appID, pemKey, opts...)
	if err != nil {
		t.Fatalf("NewApp: %v", err)
	}
	c, err := forge.NewWithAuth(s.URL(), app, opts...)
	if err != nil {
		t.Fatalf("NewWithAuth: %v", err)
	}
	return appSetup{app: app, c: c, sent: sent, logs: logs}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// requests returns the requests s received, without the "/api/v3" that
// go-github puts before the paths of an API not at api.github.com.
func requests(s *forgetest.Server) []string {
	var out []string
	for _, r := range s.Requests() {
		out = append(out, strings.Replace(r, " /api/v3/", " /", 1))
	}
	return out
}

// count returns how many requests s received that start with prefix.
func count(s *forgetest.Server, prefix string) int {
	n := 0
	for _, r := range requests(s) {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

func status(state forge.State) forge.Status {
	return forge.Status{SHA: sha, Context: "byop/build", State: state}
}

func TestAppStatusAndCommentCarryTheInstallationToken(t *testing.T) {
	ctx := context.Background()
	s := forgetest.NewServer(t)
	a := newAppClient(t, s)

	if err := a.c.SetStatus(ctx, "acme", "app", status(forge.StatePending)); err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	if _, err := a.c.UpsertComment(ctx, "acme", "app", 3, 0, "building"); err != nil {
		t.Fatalf("UpsertComment: %v", err)
	}
	noErrors(t, s)

	toks := s.InstallationTokens()
	if len(toks) != 1 || toks[0].InstallationID != 7 {
		t.Fatalf("installation tokens = %+v, want one for installation 7", toks)
	}
	want := []string{
		"POST /repos/acme/app/statuses/" + sha,
		"GET /repos/acme/app/issues/3/comments",
		"POST /repos/acme/app/issues/3/comments",
	}
	if !slices.Equal(toks[0].Used, want) {
		t.Errorf("the installation token authenticated %q, want %q", toks[0].Used, want)
	}
	if got := s.Statuses("acme", "app", sha); len(got) != 1 {
		t.Errorf("statuses = %+v, want one", got)
	}
	if got := s.Comments("acme", "app", 3); len(got) != 1 {
		t.Errorf("comments = %+v, want one", got)
	}

	// What went over the wire: the JWT to the App endpoints only, the
	// installation token to the repository endpoints, never the PAT.
	for _, h := range a.sent.all() {
		scheme, tok, _ := strings.Cut(h.auth, " ")
		appEndpoint := strings.HasSuffix(h.req, "/installation") || strings.HasSuffix(h.req, "/access_tokens")
		switch {
		case scheme != "Bearer":
			t.Errorf("%s: Authorization scheme %q, want Bearer", h.req, scheme)
		case tok == s.Token():
			t.Errorf("%s carried the PAT", h.req)
		case appEndpoint:
			claims := jwtClaims(t, tok)
			if claims.Iss != "4242" {
				t.Errorf("%s: JWT issuer %q, want the App ID 4242", h.req, claims.Iss)
			}
			if life := claims.Exp - claims.Iat; life <= 0 || life > 600 {
				t.Errorf("%s: JWT valid for %ds, want at most 10 minutes", h.req, life)
			}
		case tok != toks[0].Token:
			t.Errorf("%s: Authorization is not the installation token", h.req)
		}
	}
	if n := count(s, "GET /repos/acme/app/installation"); n != 1 {
		t.Errorf("looked up the installation %d times, want 1", n)
	}

	got, err := a.app.Token(ctx, "acme", "app")
	if err != nil || got.Reveal() != toks[0].Token {
		t.Errorf("Token = %v, %v; want the installation token issued", got, err)
	}
	if n := len(s.InstallationTokens()); n != 1 {
		t.Errorf("Token fetched a new token (%d issued); want the cached one", n)
	}
}

type claims struct {
	Iss      string `json:"iss"`
	Iat, Exp int64
}

// jwtClaims decodes a JWT's claims (the fake checks its signature).
func jwtClaims(t *testing.T, tok string) claims {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("Authorization is not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("JWT claims are not base64url: %v", err)
	}
	var c claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("JWT claims are not JSON: %v", err)
	}
	return c
}

func TestAppLooksUpEachRepositoryOnce(t *testing.T) {
	ctx := context.Background()
	s := forgetest.NewServer(t)
	a := newAppClient(t, s)

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		repo := []string{"app", "web"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- a.c.SetStatus(ctx, "acme", repo, status(forge.StateSuccess))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("SetStatus: %v", err)
		}
	}
	if _, err := a.c.Reply(ctx, "ACME", "App", 1, "case differs, same repository"); err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"app", "web"} {
		if n := count(s, "GET /repos/acme/"+repo+"/installation"); n != 1 {
			t.Errorf("looked up acme/%s's installation %d times, want once", repo, n)
		}
	}
	if n := count(s, "GET /repos/ACME/App/installation"); n != 0 {
		t.Errorf("looked up ACME/App again (%d times)", n)
	}
	if toks := s.InstallationTokens(); len(toks) != 1 || len(toks[0].Used) != 17 {
		t.Errorf("tokens = %+v, want one for the one installation, used 17 times", toks)
	}
	noErrors(t, s)
}

func TestAppRefreshesTokensBeforeTheyExpire(t *testing.T) {
	ctx := context.Background()
	s := forgetest.NewServer(t)
	a := newAppClient(t, s)
	// ghinstallation refreshes a minute before expiry: 30s tokens are
	// refreshed on every use.
	s.SetTokenLifetime(30 * time.Second)
	for _, st := range []forge.State{forge.StatePending, forge.StateSuccess} {
		if err := a.c.SetStatus(ctx, "acme", "app", status(st)); err != nil {
			t.Fatalf("SetStatus %s: %v", st, err)
		}
	}
	toks := s.InstallationTokens()
	if len(toks) != 2 || toks[0].Token == toks[1].Token {
		t.Fatalf("tokens = %+v, want two different ones", toks)
	}
	for i, tok := range toks {
		if len(tok.Used) != 1 {
			t.Errorf("token %d authenticated %q, want one status", i, tok.Used)
		}
		if d := time.Until(tok.ExpiresAt); d > 31*time.Second || d < 25*time.Second {
			t.Errorf("token %d expires in %s, want about 30s", i, d)
		}
	}
	if n := count(s, "GET /repos/acme/app/installation"); n != 1 {
		t.Errorf("looked up the installation %d times, want once", n)
	}
	noErrors(t, s)
}

func TestAppFindsTheInstallationAgainAfterReinstall(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name         string
		lifetime     time.Duration
		firstFailure string // the first call after reinstalling fails so, then the next succeeds
	}{
		{name: "token refresh answers 404", lifetime: 30 * time.Second},
		{name: "cached token refused with 401", lifetime: time.Hour, firstFailure: "401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := forgetest.NewServer(t)
			_, pub := appKey()
			s.EnableApp(appID, pub, 0) // installed nowhere by default
			s.SetInstallation("acme", "app", 5)
			s.SetTokenLifetime(tt.lifetime)
			a := newAppClient(t, s)
			if err := a.c.SetStatus(ctx, "acme", "app", status(forge.StatePending)); err != nil {
				t.Fatal(err)
			}
			s.SetInstallation("acme", "app", 6) // uninstalled, installed again

			err := a.c.SetStatus(ctx, "acme", "app", status(forge.StateSuccess))
			if tt.firstFailure != "" {
				if err == nil || !strings.Contains(err.Error(), tt.firstFailure) {
					t.Fatalf("first SetStatus after reinstall: err = %v, want %s", err, tt.firstFailure)
				}
				err = a.c.SetStatus(ctx, "acme", "app", status(forge.StateSuccess))
			}
			if err != nil {
				t.Fatalf("SetStatus after reinstall: %v", err)
			}
			toks := s.InstallationTokens()
			if last := toks[len(toks)-1]; last.InstallationID != 6 || len(last.Used) != 1 {
				t.Errorf("last token = %+v, want installation 6's, used once", last)
			}
			if n := count(s, "GET /repos/acme/app/installation"); n != 2 {
				t.Errorf("looked up the installation %d times, want twice", n)
			}
			noErrors(t, s)
		})
	}
}

func TestAppRetriesServerErrors(t *testing.T) {
	ctx := context.Background()
	s := forgetest.NewServer(t)
	a := newAppClient(t, s)

	s.FailNext(1, http.StatusBadGateway, nil) // the installation lookup
	if err := a.c.SetStatus(ctx, "acme", "app", status(forge.StatePending)); err != nil {
		t.Fatalf("SetStatus with a failing lookup: %v", err)
	}
	s.FailNext(1, http.StatusServiceUnavailable, nil) // the status itself
	if err := a.c.SetStatus(ctx, "acme", "app", status(forge.StateSuccess)); err != nil {
		t.Fatalf("SetStatus failing once: %v", err)
	}
	s.SetInstallation("acme", "other", 8)
	s.SetTokenLifetime(30 * time.Second)
	if _, err := a.app.Token(ctx, "acme", "other"); err != nil { // now holds a short-lived token
		t.Fatal(err)
	}
	s.FailNext(1, http.StatusBadGateway, nil) // the token refresh
	if err := a.c.SetStatus(ctx, "acme", "other", status(forge.StateSuccess)); err != nil {
		t.Fatalf("SetStatus with a failing token refresh: %v", err)
	}
	want := []string{
		"GET /repos/acme/app/installation", "GET /repos/acme/app/installation",
		"POST /app/installations/7/access_tokens",
		"POST /repos/acme/app/statuses/" + sha,
		"POST /repos/acme/app/statuses/" + sha, "POST /repos/acme/app/statuses/" + sha,
		"GET /repos/acme/other/installation", "POST /app/installations/8/access_tokens",
		"POST /app/installations/8/access_tokens", "POST /app/installations/8/access_tokens",
		"POST /repos/acme/other/statuses/" + sha,
	}
	if got := requests(s); !slices.Equal(got, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := s.Statuses("acme", "app", sha); len(got) != 2 {
		t.Errorf("statuses = %+v, want two", got)
	}
	noErrors(t, s)
}

func TestAppErrorsSayWhatFailedWithoutSecrets(t *testing.T) {
	ctx := context.Background()
	pemKey, pub := appKey()
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(otherKey)})

	tests := []struct {
		name  string
		setup func(s *forgetest.Server) // after EnableApp
		id    int64
		key   []byte
		want  []string // in the error
		fake  string   // in the fake's Errors, if it rejected something
	}{
		{
			name:  "not installed",
			setup: func(s *forgetest.Server) { s.SetInstallation("acme", "app", 0) },
			id:    appID, key: pemKey,
			want: []string{"setting status byop/build on 0123456789ab: ", "finding GitHub App 4242's installation on acme/app: ", "not installed", "404"},
		},
		{
			name: "JWT signed with another key",
			id:   appID, key: otherPEM,
			want: []string{"finding GitHub App 4242's installation on acme/app: ", "401"},
			fake: "signature does not verify",
		},
		{
			name: "another App's ID",
			id:   99, key: pemKey,
			want: []string{"finding GitHub App 99's installation on acme/app: ", "401"},
			fake: "issuer",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := forgetest.NewServer(t)
			s.EnableApp(appID, pub, 7)
			if tt.setup != nil {
				tt.setup(s)
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			app, err := forge.NewApp(s.URL(), tt.id, tt.key, forge.WithLogger(log))
			if err != nil {
				t.Fatal(err)
			}
			c, err := forge.NewWithAuth(s.URL(), app, forge.WithLogger(log))
			if err != nil {
				t.Fatal(err)
			}
			err = c.SetStatus(ctx, "acme", "app", status(forge.StatePending))
			if err == nil {
				t.Fatal("SetStatus succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want %q in it", err, w)
				}
			}
			if len(s.Statuses("acme", "app", sha)) != 0 {
				t.Error("a status was set")
			}
			errs := s.Errors()
			if tt.fake == "" && len(errs) != 0 || tt.fake != "" && (len(errs) != 1 || !strings.Contains(errs[0], tt.fake)) {
				t.Errorf("fake GitHub's errors = %q, want %q", errs, tt.fake)
			}
			assertNoSecrets(t, s, err.Error()+logs.String(), tt.key)
		})
	}

	t.Run("token fetch refused", func(t *testing.T) {
		s := forgetest.NewServer(t)
		a := newAppClient(t, s)
		s.SetTokenLifetime(30 * time.Second) // every use fetches a token
		if err := a.c.SetStatus(ctx, "acme", "app", status(forge.StatePending)); err != nil {
			t.Fatal(err)
		}
		s.FailNext(1, http.StatusForbidden, nil) // the token fetch: a plain 403 is not retried
		err := a.c.SetStatus(ctx, "acme", "app", status(forge.StateSuccess))
		if err == nil {
			t.Fatal("SetStatus succeeded without a token")
		}
		for _, w := range []string{"setting status byop/build on 0123456789ab: ", "getting a token for acme/app from GitHub App 4242's installation 7: ", "403", `GitHub said "injected failure: Forbidden"`} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("err = %q, want %q in it", err, w)
			}
		}
		_, errToken := a.app.Token(ctx, "", "")
		if errToken == nil || !strings.Contains(errToken.Error(), "no repository given") {
			t.Errorf("Token without a repository: err = %v", errToken)
		}
		assertNoSecrets(t, s, err.Error()+a.logs.String(), pemKey)
		var sent int
		for _, h := range a.sent.all() {
			tok := strings.TrimPrefix(h.auth, "Bearer ")
			sent++
			if strings.Contains(err.Error()+a.logs.String(), tok) {
				t.Errorf("the error or the logs contain the credential sent with %s", h.req)
			}
		}
		if !strings.Contains(a.logs.String(), "Authorization:[[redacted]]") || sent < 4 {
			t.Errorf("debug log lacks redacted requests (%d sent):\n%s", sent, a.logs.String())
		}
	})
}

// assertNoSecrets fails if text holds the PAT, an installation token or
// any line of the private key.
func assertNoSecrets(t *testing.T, s *forgetest.Server, text string, key []byte) {
	t.Helper()
	secrets := []string{s.Token()}
	for _, tok := range s.InstallationTokens() {
		secrets = append(secrets, tok.Token)
	}
	for _, line := range strings.Split(string(key), "\n") {
		if len(line) > 20 && !strings.HasPrefix(line, "-----") {
			secrets = append(secrets, line)
		}
	}
	for _, sec := range secrets {
		if strings.Contains(text, sec) {
			t.Errorf("a secret leaked into errors or logs:\n%s", text)
			return
		}
	}
}

func TestNewAppRefusesBadInput(t *testing.T) {
	pemKey, _ := appKey()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})
	garbled := bytes.Replace(pemKey, []byte("\n"), []byte("\nAAAA"), 3)
	tests := []struct {
		name string
		url  string
		id   int64
		key  []byte
		want string
	}{
		{"no key", "https://api.github.com/", appID, nil, "no PEM block"},
		{"a key that is not PEM", "https://api.github.com/", appID, []byte("ghp_notakey"), "no PEM block"},
		{"a garbled RSA key", "https://api.github.com/", appID, garbled, "does not parse as PKCS#1"},
		{"an EC key", "https://api.github.com/", appID, ecPEM, "not an RSA key"},
		{"a certificate", "https://api.github.com/", appID, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), `"CERTIFICATE"`},
		{"no app ID", "https://api.github.com/", 0, pemKey, "app ID 0"},
		{"credentials in the URL", "https://x:ghp_secret123@api.github.com/", appID, pemKey, "must not carry credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := forge.NewApp(tt.url, tt.id, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			for _, line := range strings.Split(string(tt.key), "\n") {
				if len(line) > 20 && strings.Contains(err.Error(), line) {
					t.Errorf("err = %q repeats the key", err)
				}
			}
		})
	}
	// PKCS#8 RSA keys are accepted too.
	block, _ := pem.Decode(pemKey)
	rsaKey, _ := x509.ParsePKCS1PrivateKey(block.Bytes)
	der, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	if _, err := forge.NewApp("https://api.github.com/", appID, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		t.Errorf("NewApp with a PKCS#8 RSA key: %v", err)
	}
}

func TestNewWithAuth(t *testing.T) {
	ctx := context.Background()
	t.Run("a PAT works as with New", func(t *testing.T) {
		s := forgetest.NewServer(t)
		c, err := forge.NewWithAuth(s.URL(), forge.PAT(config.Secret(s.Token())))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetStatus(ctx, "acme", "app", status(forge.StatePending)); err != nil {
			t.Fatal(err)
		}
		if got := s.Statuses("acme", "app", sha); len(got) != 1 {
			t.Errorf("statuses = %+v", got)
		}
		tok, err := forge.PAT("ghp_x").Token(ctx, "any", "repo")
		if err != nil || tok.Reveal() != "ghp_x" {
			t.Errorf("PAT Token = %v, %v", tok, err)
		}
		noErrors(t, s)
	})
	t.Run("refuses missing credentials", func(t *testing.T) {
		for _, auth := range []forge.Auth{nil, forge.PAT("")} {
			if _, err := forge.NewWithAuth("https://api.github.com/", auth); err == nil || !strings.Contains(err.Error(), "no ") {
				t.Errorf("NewWithAuth(%#v): err = %v", auth, err)
			}
		}
	})
	t.Run("an Auth's error fails the call without sending it", func(t *testing.T) {
		s := forgetest.NewServer(t)
		c, err := forge.NewWithAuth(s.URL(), failingAuth{})
		if err != nil {
			t.Fatal(err)
		}
		err = c.SetStatus(ctx, "acme", "app", status(forge.StatePending))
		if !errors.Is(err, errNoToken) {
			t.Errorf("err = %v, want the Auth's error", err)
		}
		if got := s.Requests(); len(got) != 0 {
			t.Errorf("sent %q", got)
		}
	})
}

var errNoToken = errors.New("no token today")

type failingAuth struct{}

func (failingAuth) Token(context.Context, string, string) (config.Secret, error) {
	return "", errNoToken
}

func TestAppLoginFindsTheCommentsItWrote(t *testing.T) {
	ctx := context.Background()
	s := forgetest.NewServer(t)
	a := newAppClient(t, s)
	first, err := a.c.UpsertComment(ctx, "acme", "app", 2, 0, "building")
	if err != nil {
		t.Fatal(err)
	}
	s.AddComment("acme", "app", 2, "mallory", forge.Marker+"\nnot byop's")

	for range 2 {
		login, err := a.app.Login(ctx)
		if err != nil || login != "byop[bot]" {
			t.Fatalf("Login = %q, %v; want byop[bot]", login, err)
		}
	}
	if n := count(s, "GET /app"); n != 1 {
		t.Errorf("asked for the App %d times, want once", n)
	}
	login, _ := a.app.Login(ctx)
	pemKey, _ := appKey()
	app, err := forge.NewApp(s.URL(), appID, pemKey)
	if err != nil {
		t.Fatal(err)
	}
	restarted, err := forge.NewWithAuth(s.URL(), app, forge.WithLogin(login))
	if err != nil {
		t.Fatal(err)
	}
	id, err := restarted.UpsertComment(ctx, "acme", "app", 2, 0, "deployed")
	if err != nil || id != first {
		t.Errorf("UpsertComment after a restart = %d, %v; want the App's comment %d", id, err, first)
	}
	if got := s.Comments("acme", "app", 2); len(got) != 2 || got[0].Author != "byop[bot]" || got[0].Edits != 1 || got[1].Edits != 0 {
		t.Errorf("comments = %+v, want the App's edited, mallory's untouched", got)
	}
	noErrors(t, s)
}
