package forgetest_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/forge/forgetest"
)

// signJWT makes an RS256 JWT (or one claiming alg) with claims.
func signJWT(t *testing.T, key *rsa.PrivateKey, alg string, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": alg, "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func newKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func claims(iss any, iat, exp time.Duration) map[string]any {
	now := time.Now()
	return map[string]any{"iss": iss, "iat": now.Add(iat).Unix(), "exp": now.Add(exp).Unix()}
}

func TestAppEndpointsCheckTheJWT(t *testing.T) {
	key, other := newKey(t), newKey(t)
	valid := signJWT(t, key, "RS256", claims("42", -30*time.Second, 90*time.Second))
	tests := []struct {
		name, auth string
		wantCode   int
		wantErr    string // "" : accepted
	}{
		{"a JWT the App signed", "Bearer " + valid, 200, ""},
		{"a numeric issuer", "Bearer " + signJWT(t, key, "RS256", claims(42, -30*time.Second, 90*time.Second)), 200, ""},
		{"no Authorization", "-", 401, `needs "Bearer <JWT>"`},
		{"the token scheme", "token " + valid, 401, `needs "Bearer <JWT>"`},
		{"the PAT", "", 401, "not a JWT"},
		{"another key's signature", "Bearer " + signJWT(t, other, "RS256", claims("42", 0, time.Minute)), 401, "signature does not verify"},
		{"a tampered claim", "Bearer " + strings.Replace(valid, strings.Split(valid, ".")[1], base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"42","iat":1,"exp":9999999999}`)), 1), 401, "signature does not verify"},
		{"alg HS256", "Bearer " + signJWT(t, key, "HS256", claims("42", 0, time.Minute)), 401, `alg "HS256"`},
		{"another App's ID", "Bearer " + signJWT(t, key, "RS256", claims("43", 0, time.Minute)), 401, "issuer 43 is not the App's ID 42"},
		{"expired", "Bearer " + signJWT(t, key, "RS256", claims("42", -11*time.Minute, -time.Minute)), 401, "expired"},
		{"issued in the future", "Bearer " + signJWT(t, key, "RS256", claims("42", 5*time.Minute, 7*time.Minute)), 401, "issued in the future"},
		{"valid too long", "Bearer " + signJWT(t, key, "RS256", claims("42", 0, 11*time.Minute)), 401, "more than the 10 minutes"},
		{"no exp", "Bearer " + signJWT(t, key, "RS256", map[string]any{"iss": "42", "iat": time.Now().Unix()}), 401, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := forgetest.NewServer(t)
			s.EnableApp(42, &key.PublicKey, 7)
			for _, path := range []string{"/repos/acme/app/installation", "/app/installations/7/access_tokens"} {
				method := "GET"
				if strings.HasPrefix(path, "/app/") {
					method = "POST"
				}
				resp := do(t, s, method, path, tt.auth, "")
				if want := tt.wantCode; resp.StatusCode != want && !(want == 200 && resp.StatusCode == 201) {
					t.Errorf("%s %s: status %d, want %d", method, path, resp.StatusCode, want)
				}
			}
			errs := s.Errors()
			switch {
			case tt.wantErr == "" && len(errs) != 0:
				t.Errorf("Errors() = %q, want none", errs)
			case tt.wantErr != "" && (len(errs) != 2 || !strings.Contains(errs[0], tt.wantErr)):
				t.Errorf("Errors() = %q, want two containing %q", errs, tt.wantErr)
			}
		})
	}
}

func TestAppEndpointsNeedEnableApp(t *testing.T) {
	s := forgetest.NewServer(t)
	key := newKey(t)
	resp := do(t, s, "GET", "/repos/acme/app/installation", "Bearer "+signJWT(t, key, "RS256", claims("42", 0, time.Minute)), "")
	if resp.StatusCode != 401 {
		t.Errorf("status %d, want 401", resp.StatusCode)
	}
	if errs := s.Errors(); len(errs) != 1 || !strings.Contains(errs[0], "EnableApp") {
		t.Errorf("Errors() = %q", errs)
	}
}

func TestInstallationTokens(t *testing.T) {
	key := newKey(t)
	s := forgetest.NewServer(t)
	s.EnableApp(42, &key.PublicKey, 7)
	s.SetInstallation("acme", "web", 8)
	s.SetInstallation("acme", "none", 0)
	jwt := "Bearer " + signJWT(t, key, "RS256", claims("42", -30*time.Second, 90*time.Second))
	status := func(repo, auth string) int {
		return do(t, s, "POST", "/repos/acme/"+repo+"/statuses/"+sha, auth, `{"state":"pending","context":"byop/build"}`).StatusCode
	}
	issue := func(id int64) (int, string, time.Time) {
		resp := do(t, s, "POST", fmt.Sprintf("/api/v3/app/installations/%d/access_tokens", id), jwt, "")
		var body struct {
			Token     string    `json:"token"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		if resp.StatusCode == 201 {
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, body.Token, body.ExpiresAt
	}

	// Finding installations.
	for repo, want := range map[string]int64{"app": 7, "web": 8} {
		resp := do(t, s, "GET", "/repos/acme/"+repo+"/installation", jwt, "")
		var inst struct {
			ID              int64  `json:"id"`
			AppID           int64  `json:"app_id"`
			AccessTokensURL string `json:"access_tokens_url"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&inst); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET acme/%s installation: %d, %v", repo, resp.StatusCode, err)
		}
		if inst.ID != want || inst.AppID != 42 || !strings.HasSuffix(inst.AccessTokensURL, fmt.Sprintf("/app/installations/%d/access_tokens", want)) {
			t.Errorf("acme/%s's installation = %+v, want %d", repo, inst, want)
		}
	}
	if resp := do(t, s, "GET", "/repos/acme/none/installation", jwt, ""); resp.StatusCode != 404 {
		t.Errorf("installation on a repository without the App: status %d, want 404", resp.StatusCode)
	}
	if code, _, _ := issue(99); code != 404 {
		t.Errorf("a token for an unknown installation: status %d, want 404", code)
	}
	if errs := s.Errors(); len(errs) != 0 {
		t.Fatalf("a 404 for a missing installation is an answer, not a rejected request: %q", errs)
	}

	// Issuing and accepting tokens.
	code, tok7, exp := issue(7)
	if code != 201 || !strings.HasPrefix(tok7, "ghs_") {
		t.Fatalf("issuing a token: status %d, token %q", code, tok7)
	}
	if d := time.Until(exp); d < 59*time.Minute || d > time.Hour {
		t.Errorf("token expires in %s, want an hour", d)
	}
	if got := status("app", "token "+tok7); got != 201 {
		t.Errorf("status with installation 7's token on its repository: %d, want 201", got)
	}
	toks := s.InstallationTokens()
	if len(toks) != 1 || toks[0].Token != tok7 || toks[0].InstallationID != 7 || !toks[0].ExpiresAt.Equal(exp) ||
		len(toks[0].Used) != 1 || toks[0].Used[0] != "POST /repos/acme/app/statuses/"+sha {
		t.Errorf("InstallationTokens() = %+v", toks)
	}
	if errs := s.Errors(); len(errs) != 0 {
		t.Fatalf("Errors() = %q", errs)
	}

	// Refusing what GitHub would.
	refused := []struct {
		name, repo, auth string
		wantCode         int
		wantErr          string
	}{
		{"another installation's repository", "web", "Bearer " + tok7, 404, "whose installation is 8"},
		{"a repository without the App", "none", "Bearer " + tok7, 404, "whose installation is 0"},
		{"the PAT", "app", "", 401, "only installation tokens"},
		{"the JWT", "app", jwt, 401, "JWT was sent to a repository endpoint"},
		{"an unknown token", "app", "Bearer ghs_nope", 401, "wrong token"},
	}
	for _, tt := range refused {
		before := len(s.Errors())
		if got := status(tt.repo, tt.auth); got != tt.wantCode {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.wantCode)
		}
		if errs := s.Errors(); len(errs) != before+1 || !strings.Contains(errs[before], tt.wantErr) {
			t.Errorf("%s: Errors() = %q, want a new one containing %q", tt.name, errs[before:], tt.wantErr)
		}
	}
	if n := len(s.Statuses("acme", "app", sha)) + len(s.Statuses("acme", "web", sha)) + len(s.Statuses("acme", "none", sha)); n != 1 {
		t.Errorf("%d statuses recorded, want only the accepted one", n)
	}

	t.Run("expired tokens are refused", func(t *testing.T) {
		s.SetTokenLifetime(0)
		_, expired, _ := issue(7)
		before := len(s.Errors())
		if got := status("app", "Bearer "+expired); got != 401 {
			t.Errorf("status %d, want 401", got)
		}
		if errs := s.Errors(); len(errs) != before+1 || !strings.Contains(errs[before], "expired") {
			t.Errorf("Errors() = %q", errs[before:])
		}
		s.SetTokenLifetime(forgetest.DefaultTokenLifetime)
	})

	t.Run("uninstalling revokes the installation's tokens", func(t *testing.T) {
		_, tok8, _ := issue(8)
		if got := status("web", "Bearer "+tok8); got != 201 {
			t.Fatalf("status with installation 8's token: %d", got)
		}
		s.SetInstallation("acme", "web", 9)
		before := len(s.Errors())
		if got := status("web", "Bearer "+tok8); got != 401 {
			t.Errorf("status with a revoked token: %d, want 401", got)
		}
		if code, _, _ := issue(8); code != 404 {
			t.Errorf("a token for a deleted installation: status %d, want 404", code)
		}
		if errs := s.Errors(); len(errs) != before {
			t.Errorf("revocation is an answer, not a rejected request: %q", errs[before:])
		}
	})

	t.Run("token options are checked", func(t *testing.T) {
		before := len(s.Errors())
		if resp := do(t, s, "POST", "/app/installations/7/access_tokens", jwt, `{"repositories":["app"],"permissions":{"statuses":"write"}}`); resp.StatusCode != 201 {
			t.Errorf("a token limited to one repository: status %d", resp.StatusCode)
		}
		if resp := do(t, s, "POST", "/app/installations/7/access_tokens", jwt, `{"repos":["app"]}`); resp.StatusCode != 400 {
			t.Errorf("an unknown option: status %d, want 400", resp.StatusCode)
		}
		if errs := s.Errors(); len(errs) != before+1 || !strings.Contains(errs[before], "unknown field") {
			t.Errorf("Errors() = %q", errs[before:])
		}
	})

	t.Run("a token in the URL is refused", func(t *testing.T) {
		before := len(s.Errors())
		if resp := do(t, s, "GET", "/repos/acme/app/collaborators/x/permission?access_token="+tok7, "Bearer "+tok7, ""); resp.StatusCode != 401 {
			t.Errorf("status %d, want 401", resp.StatusCode)
		}
		if errs := s.Errors(); len(errs) != before+1 || !strings.Contains(errs[before], "in the URL") {
			t.Errorf("Errors() = %q", errs[before:])
		}
	})
}

func TestGenerateAppKey(t *testing.T) {
	pemKey, pub := forgetest.GenerateAppKey(t)
	if !strings.HasPrefix(string(pemKey), "-----BEGIN RSA PRIVATE KEY-----\n") || pub.N.BitLen() != 2048 {
		t.Errorf("GenerateAppKey gave %d bits, PEM starting %.40q", pub.N.BitLen(), pemKey)
	}
}

func TestServesPullRequests(t *testing.T) {
	s := forgetest.NewServer(t)
	s.SetPullRequest("acme", "app", forgePR(5, "mallory/app"))
	s.SetPullRequest("acme", "app", forgePR(6, ""))

	type branch struct {
		Ref   string `json:"ref"`
		SHA   string `json:"sha"`
		Label string `json:"label"`
		Repo  *struct {
			FullName string `json:"full_name"`
			Fork     bool   `json:"fork"`
		} `json:"repo"`
	}
	get := func(n int) (int, map[string]json.RawMessage, branch, branch) {
		resp := do(t, s, "GET", fmt.Sprintf("/repos/acme/app/pulls/%d", n), "", "")
		var raw map[string]json.RawMessage
		var heads struct{ Head, Base branch }
		if resp.StatusCode == 200 {
			var buf json.RawMessage
			if err := json.NewDecoder(resp.Body).Decode(&buf); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal(buf, &raw)
			_ = json.Unmarshal(buf, &heads)
		}
		return resp.StatusCode, raw, heads.Head, heads.Base
	}

	code, raw, head, base := get(5)
	if code != 200 || string(raw["number"]) != "5" || string(raw["state"]) != `"open"` || string(raw["draft"]) != "false" {
		t.Errorf("PR 5: status %d, body %s", code, raw)
	}
	if !strings.Contains(string(raw["user"]), `"login":"mallory"`) {
		t.Errorf("PR 5 user = %s", raw["user"])
	}
	if head.Repo == nil || head.Repo.FullName != "mallory/app" || !head.Repo.Fork || head.Label != "mallory:topic" || head.SHA != sha || head.Ref != "topic" {
		t.Errorf("PR 5 head = %+v", head)
	}
	if base.Repo == nil || base.Repo.FullName != "acme/app" || base.Repo.Fork {
		t.Errorf("PR 5 base = %+v, want acme/app defaulted", base)
	}
	if code, raw, head, _ := get(6); code != 200 || head.Repo != nil || !strings.Contains(string(raw["head"]), `"repo":null`) {
		t.Errorf("PR 6 (fork deleted): status %d, head %s", code, raw["head"])
	}
	if code, _, _, _ := get(7); code != 404 {
		t.Errorf("unknown PR: status %d, want 404", code)
	}
	if errs := s.Errors(); len(errs) != 0 {
		t.Errorf("a 404 for a missing pull request is an answer, not a rejected request: %q", errs)
	}
	if resp := do(t, s, "GET", "/repos/acme/app/pulls/abc", "", ""); resp.StatusCode != 404 {
		t.Errorf("non-numeric PR: status %d", resp.StatusCode)
	}
	if errs := s.Errors(); len(errs) != 1 || !strings.Contains(errs[0], "not a positive integer") {
		t.Errorf("Errors() = %q", errs)
	}
}

func forgePR(n int, headRepo string) forge.PullRequest {
	return forge.PullRequest{Number: n, HeadSHA: sha, HeadRef: "topic", HeadRepo: headRepo, Author: "mallory"}
}
