package forgetest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// InstallationToken is an installation token the fake issued.
type InstallationToken struct {
	Token          string
	InstallationID int64
	ExpiresAt      time.Time
	Used           []string // the requests it authenticated, as "METHOD /path" (without /api/v3), in order
}

// AppSlug is the fake App's slug: with EnableApp, the fake's Login is
// AppSlug+"[bot]", as GitHub names an App's bot user.
const AppSlug = "byop"

// DefaultTokenLifetime is how long installation tokens last, as on GitHub.
const DefaultTokenLifetime = time.Hour

// app is the fake's GitHub App: its key, where it is installed and the
// tokens it was given.
type app struct {
	id            int64
	pub           *rsa.PublicKey
	installation  int64            // on every repository not in repos
	repos         map[string]int64 // "owner/repo" -> installation ID; 0: not installed
	lifetime      time.Duration
	tokens        []*InstallationToken
	byToken       map[string]*InstallationToken
	installations map[int64]bool // every installation ID that exists
}

// GenerateAppKey makes a GitHub App private key as GitHub hands it out (a
// 2048-bit RSA key, PKCS#1 PEM) and returns it with its public half, for
// EnableApp.
func GenerateAppKey(t testing.TB) (privatePEM []byte, pub *rsa.PublicKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generating an RSA key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), &key.PublicKey
}

// EnableApp makes the fake run as GitHub does for GitHub App appID, whose
// JWTs pub verifies, installed on every repository as installationID.
// From then on the repository endpoints accept only unexpired installation
// tokens of the repository's installation: the PAT (Token) and the App's
// JWT are rejected there. What the tokens write is authored by the App's
// bot user, AppSlug+"[bot]", which Login returns from then on.
func (s *Server) EnableApp(appID int64, pub *rsa.PublicKey, installationID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.login = AppSlug + "[bot]"
	s.app = &app{
		id:            appID,
		pub:           pub,
		installation:  installationID,
		repos:         map[string]int64{},
		lifetime:      DefaultTokenLifetime,
		byToken:       map[string]*InstallationToken{},
		installations: map[int64]bool{installationID: true},
	}
}

// SetInstallation installs the App on owner/repo as installationID
// instead of the one given to EnableApp; 0 uninstalls it from owner/repo.
// An installation no repository has any more is deleted, as GitHub deletes
// an uninstalled App's installation: no token can be fetched for it and
// those it issued are refused as bad credentials. (To model reinstalling,
// give EnableApp installation 0, installed nowhere by default.)
func (s *Server) SetInstallation(owner, repo string, installationID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.mustApp("SetInstallation")
	a.repos[repoKey(owner, repo)] = installationID
	a.installations = map[int64]bool{a.installation: true}
	for _, id := range a.repos {
		a.installations[id] = true
	}
	delete(a.installations, 0)
}

// SetTokenLifetime sets how long installation tokens issued from now on
// last. A lifetime under a minute makes ghinstallation fetch a new token on
// every use, since it refreshes a minute before expiry.
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustApp("SetTokenLifetime").lifetime = d
}

// InstallationTokens returns the installation tokens issued, in order.
func (s *Server) InstallationTokens() []InstallationToken {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.app == nil {
		return nil
	}
	out := make([]InstallationToken, 0, len(s.app.tokens))
	for _, t := range s.app.tokens {
		c := *t
		c.Used = slices.Clone(t.Used)
		out = append(out, c)
	}
	return out
}

// mustApp needs s.mu held.
func (s *Server) mustApp(caller string) *app {
	if s.app == nil {
		panic("forgetest: " + caller + " called before EnableApp")
	}
	return s.app
}

// tokenInURL reports whether any token the fake knows is in r's URL; it
// needs s.mu held.
func (s *Server) tokenInURL(r *http.Request) bool {
	u := r.URL.String()
	if strings.Contains(u, s.token) {
		return true
	}
	if s.app != nil {
		for tok := range s.app.byToken {
			if strings.Contains(u, tok) {
				return true
			}
		}
	}
	return false
}

// installationOf returns owner/repo's installation ID, 0 if the App is not
// installed there; it needs s.mu held.
func (a *app) installationOf(owner, repo string) int64 {
	if id, ok := a.repos[repoKey(owner, repo)]; ok {
		return id
	}
	return a.installation
}

// checkInstallationToken needs s.mu held.
func (s *Server) checkInstallationToken(r *http.Request, tok, owner, repo string) *apiError {
	a := s.app
	t := a.byToken[tok]
	switch {
	case tok == s.token:
		return reject(http.StatusUnauthorized, "the PAT was sent, but the fake runs as a GitHub App: only installation tokens are accepted")
	case strings.Count(tok, ".") == 2 && strings.HasPrefix(tok, "eyJ"):
		return reject(http.StatusUnauthorized, "the App's JWT was sent to a repository endpoint, which takes an installation token")
	case t == nil:
		return reject(http.StatusUnauthorized, "wrong token")
	case !a.installations[t.InstallationID]:
		return answer(http.StatusUnauthorized, "Bad credentials") // revoked with its installation
	case !time.Now().Before(t.ExpiresAt):
		return reject(http.StatusUnauthorized, "installation token expired at %s", t.ExpiresAt.Format(time.RFC3339))
	}
	if owner != "" {
		if want := a.installationOf(owner, repo); want != t.InstallationID {
			return reject(http.StatusNotFound, "a token of installation %d was sent for %s/%s, whose installation is %d", t.InstallationID, owner, repo, want)
		}
	}
	t.Used = append(t.Used, r.Method+" "+apiPath(r))
	return nil
}

// checkJWT checks that r carries a JWT signed with the App's key, issued by
// the App, valid now and for at most ten minutes, as GitHub requires. It
// needs s.mu held.
func (s *Server) checkJWT(r *http.Request) *apiError {
	if s.app == nil {
		return reject(http.StatusUnauthorized, "an App endpoint was called, but no App is enabled (EnableApp)")
	}
	if s.tokenInURL(r) {
		return reject(http.StatusUnauthorized, "token sent in the URL")
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return reject(http.StatusUnauthorized, "an App endpoint needs \"Bearer <JWT>\" in the Authorization header")
	}
	claims, err := verifyJWT(tok, s.app.pub)
	if err != "" {
		return reject(http.StatusUnauthorized, "JWT: %s", err)
	}
	var iss string
	switch v := claims.Iss.(type) {
	case string:
		iss = v
	case float64:
		iss = strconv.FormatFloat(v, 'f', -1, 64)
	}
	now := time.Now()
	const skew = 60 * time.Second
	switch {
	case iss != strconv.FormatInt(s.app.id, 10):
		return reject(http.StatusUnauthorized, "JWT: issuer %v is not the App's ID %d", claims.Iss, s.app.id)
	case claims.Iat == nil || claims.Exp == nil:
		return reject(http.StatusUnauthorized, "JWT: iat or exp is missing")
	case time.Unix(*claims.Iat, 0).After(now.Add(skew)):
		return reject(http.StatusUnauthorized, "JWT: issued in the future (iat %d)", *claims.Iat)
	case !time.Unix(*claims.Exp, 0).After(now):
		return reject(http.StatusUnauthorized, "JWT: expired (exp %d)", *claims.Exp)
	case *claims.Exp-*claims.Iat > 600:
		return reject(http.StatusUnauthorized, "JWT: valid for %ds, more than the 10 minutes GitHub allows", *claims.Exp-*claims.Iat)
	}
	return nil
}

type jwtClaims struct {
	Iss any    `json:"iss"`
	Iat *int64 `json:"iat"`
	Exp *int64 `json:"exp"`
}

// verifyJWT checks tok's RS256 signature with pub and returns its claims,
// or why it is not acceptable.
func verifyJWT(tok string, pub *rsa.PublicKey) (jwtClaims, string) {
	var c jwtClaims
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, "not a JWT (want three dot-separated parts)"
	}
	var head struct {
		Alg string `json:"alg"`
	}
	if err := decodeJWTPart(parts[0], &head); err != "" {
		return c, "header: " + err
	}
	if head.Alg != "RS256" {
		return c, fmt.Sprintf("alg %q is not RS256", head.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return c, "signature is not base64url"
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) != nil {
		return c, "signature does not verify with the App's public key"
	}
	if err := decodeJWTPart(parts[1], &c); err != "" {
		return c, "claims: " + err
	}
	return c, ""
}

func decodeJWTPart(part string, v any) string {
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return "not base64url"
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Sprintf("not JSON: %v", err)
	}
	return ""
}

// findInstallation answers GET /repos/{owner}/{repo}/installation.
func (s *Server) findInstallation(owner, repo string) (int, any, *apiError) {
	id := s.app.installationOf(owner, repo)
	if id == 0 {
		return 0, nil, answer(http.StatusNotFound, "Not Found")
	}
	return http.StatusOK, s.installationJSON(id, owner), nil
}

func (s *Server) installationJSON(id int64, owner string) map[string]any {
	now := time.Now().UTC().Format(time.RFC3339)
	account := s.user(owner)
	account["type"] = "Organization"
	return map[string]any{
		"id":                   id,
		"app_id":               s.app.id,
		"app_slug":             AppSlug,
		"target_id":            account["id"],
		"target_type":          "Organization",
		"account":              account,
		"repository_selection": "all",
		"access_tokens_url":    fmt.Sprintf("%s/app/installations/%d/access_tokens", s.srv.URL, id),
		"repositories_url":     s.srv.URL + "/installation/repositories",
		"html_url":             fmt.Sprintf("https://github.example/organizations/%s/settings/installations/%d", owner, id),
		"permissions":          installationPermissions,
		"events":               []string{"pull_request", "issue_comment", "push"},
		"created_at":           now,
		"updated_at":           now,
	}
}

var installationPermissions = map[string]string{
	"contents": "read", "metadata": "read", "statuses": "write",
	"issues": "write", "pull_requests": "write", "deployments": "write",
}

// appJSON answers GET /app.
func (s *Server) appJSON() (int, any, *apiError) {
	now := time.Now().UTC().Format(time.RFC3339)
	return http.StatusOK, map[string]any{
		"id":          s.app.id,
		"slug":        AppSlug,
		"node_id":     fmt.Sprintf("A_%d", s.app.id),
		"name":        AppSlug,
		"owner":       s.user("acme"),
		"html_url":    "https://github.example/apps/" + AppSlug,
		"permissions": installationPermissions,
		"events":      []string{"pull_request", "issue_comment", "push"},
		"created_at":  now,
		"updated_at":  now,
	}, nil
}

// createInstallationToken answers POST /app/installations/{id}/access_tokens.
func (s *Server) createInstallationToken(r *http.Request, id int64) (int, any, *apiError) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return 0, nil, reject(http.StatusBadRequest, "reading body: %v", err)
	}
	if len(bytes.TrimSpace(b)) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(b))
		var req struct {
			Repositories  []string          `json:"repositories"`
			RepositoryIDs []int64           `json:"repository_ids"`
			Permissions   map[string]string `json:"permissions"`
		}
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
	}
	a := s.app
	if !a.installations[id] {
		return 0, nil, answer(http.StatusNotFound, "Not Found")
	}
	t := &InstallationToken{
		Token:          "ghs_" + rand.Text(),
		InstallationID: id,
		ExpiresAt:      time.Now().Add(a.lifetime).UTC().Truncate(time.Second),
	}
	a.tokens = append(a.tokens, t)
	a.byToken[t.Token] = t
	return http.StatusCreated, map[string]any{
		"token":                t.Token,
		"expires_at":           t.ExpiresAt.Format(time.RFC3339),
		"permissions":          installationPermissions,
		"repository_selection": "all",
	}, nil
}
