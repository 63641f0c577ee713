package forge

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"

	"github.com/byop-dev/byop/config"
)

// Auth gives the credentials for one repository: a PAT for every
// repository, or a GitHub App's installation token for the repository's
// installation.
type Auth interface {
	// Token returns a token valid for owner/repo (for git clones over HTTPS
	// basic auth, user "x-access-token").
	Token(ctx context.Context, owner, repo string) (config.Secret, error)
}

// PAT returns an Auth that gives token for every repository.
func PAT(token config.Secret) Auth { return patAuth{token: token} }

type patAuth struct{ token config.Secret }

func (p patAuth) Token(context.Context, string, string) (config.Secret, error) {
	if p.token.IsZero() {
		return "", errors.New("no GitHub token given")
	}
	return p.token, nil
}

// App authenticates as a GitHub App. For each repository it finds the App's
// installation (GET /repos/{owner}/{repo}/installation, signed with the
// App's JWT), remembers it, and hands out that installation's token, which
// is fetched when first needed and fetched again a minute before it expires.
// Its methods are safe for concurrent use.
type App struct {
	id      int64
	key     *rsa.PrivateKey
	apiBase string            // the API's URL without the trailing slash, for ghinstallation
	tr      http.RoundTripper // what JWT-signed requests go through: User-Agent, retries, logging
	gh      *github.Client    // signs every request with the App's JWT
	log     *slog.Logger

	mu     sync.Mutex
	repos  map[string]*installation            // "owner/repo", lower case
	tokens map[int64]*ghinstallation.Transport // by installation ID
	login  string                              // "<slug>[bot]", once asked
}

// installation is a repository's installation ID, once found. Its mutex
// makes concurrent first calls for one repository look it up once.
type installation struct {
	mu sync.Mutex
	id int64 // 0 until found
}

var _ Auth = (*App)(nil)

// NewApp returns the GitHub App appID for the API at baseURL (the same URL
// given to NewWithAuth). privateKeyPEM is the contents of the App's private
// key file (PKCS#1 "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY"). The options
// WithHTTPClient, WithLogger, WithRetry and WithUserAgent apply to the
// requests the App makes for itself: finding installations and fetching
// their tokens.
func NewApp(baseURL string, appID int64, privateKeyPEM []byte, opts ...Option) (*App, error) {
	base, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if appID <= 0 {
		return nil, fmt.Errorf("creating GitHub App client: app ID %d is not a positive number", appID)
	}
	key, err := parsePrivateKey(privateKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("creating GitHub App client: reading the private key: %w", err)
	}
	o := newOptions(opts)
	hc := o.client()
	tr := &userAgentTransport{
		next: &retryTransport{next: &logTransport{next: hc.Transport, log: o.log}, policy: o.retry, log: o.log},
		ua:   o.userAgent,
	}
	hc.Transport = ghinstallation.NewAppsTransportFromPrivateKey(tr, appID, key)
	// The JWT is set by the transport on every request, redirects included:
	// follow none that leave the API host.
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 || !strings.EqualFold(req.URL.Host, base.Host) || !strings.EqualFold(req.URL.Scheme, base.Scheme) {
			return http.ErrUseLastResponse
		}
		return nil
	}
	gh, err := github.NewClient(hc).WithEnterpriseURLs(base.String(), base.String())
	if err != nil {
		return nil, fmt.Errorf("creating GitHub App client: %w", err)
	}
	gh.UserAgent = o.userAgent
	return &App{
		id:      appID,
		key:     key,
		apiBase: strings.TrimSuffix(gh.BaseURL.String(), "/"),
		tr:      tr,
		gh:      gh,
		log:     o.log,
		repos:   map[string]*installation{},
		tokens:  map[int64]*ghinstallation.Transport{},
	}, nil
}

// parsePrivateKey reads an RSA private key from PEM. Its errors never
// repeat any of the key.
func parsePrivateKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("the RSA PRIVATE KEY block does not parse as PKCS#1")
		}
		return key, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("the PRIVATE KEY block does not parse as PKCS#8")
		}
		key, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("the key is a %T, not an RSA key as GitHub Apps use", k)
		}
		return key, nil
	}
	return nil, fmt.Errorf("PEM block is a %q, not an RSA PRIVATE KEY or PRIVATE KEY", block.Type)
}

// ID returns the App's ID.
func (a *App) ID() int64 { return a.id }

// Login returns the login the App acts as, "<slug>[bot]" (e.g.
// "byop[bot]"): the author of the comments it writes, for WithLogin. It asks
// GitHub (GET /app) the first time.
func (a *App) Login(ctx context.Context) (string, error) {
	a.mu.Lock()
	login := a.login
	a.mu.Unlock()
	if login != "" {
		return login, nil
	}
	info, _, err := a.gh.Apps.Get(ctx, "")
	if err != nil {
		return "", fmt.Errorf("getting GitHub App %d's slug: %w", a.id, err)
	}
	if info.GetSlug() == "" {
		return "", fmt.Errorf("getting GitHub App %d's slug: GitHub answered without one", a.id)
	}
	login = info.GetSlug() + "[bot]"
	a.mu.Lock()
	a.login = login
	a.mu.Unlock()
	return login, nil
}

// Token returns the installation token for the App's installation on
// owner/repo. A token still valid for more than a minute is reused.
func (a *App) Token(ctx context.Context, owner, repo string) (config.Secret, error) {
	if owner == "" || repo == "" {
		return "", errors.New("getting a GitHub App token: no repository given (an App's tokens are per installation)")
	}
	where := owner + "/" + repo
	id, err := a.installationID(ctx, owner, repo)
	if err != nil {
		return "", fmt.Errorf("finding GitHub App %d's installation on %s: %w", a.id, where, err)
	}
	tok, err := a.installationToken(ctx, id)
	if err != nil && installationGone(err) {
		// Uninstalled, perhaps installed again under a new ID: look once more.
		a.forget(owner, repo, id)
		a.log.LogAttrs(ctx, slog.LevelInfo, "GitHub App installation is gone, looking for it again",
			slog.String("repo", where), slog.Int64("installation", id))
		if id, err = a.installationID(ctx, owner, repo); err != nil {
			return "", fmt.Errorf("finding GitHub App %d's installation on %s again: %w", a.id, where, err)
		}
		tok, err = a.installationToken(ctx, id)
	}
	if err != nil {
		return "", fmt.Errorf("getting a token for %s from GitHub App %d's installation %d: %w", where, a.id, id, err)
	}
	return tok, nil
}

// installationID returns owner/repo's installation ID, asking GitHub only
// the first time.
func (a *App) installationID(ctx context.Context, owner, repo string) (int64, error) {
	key := strings.ToLower(owner + "/" + repo)
	a.mu.Lock()
	in := a.repos[key]
	if in == nil {
		in = &installation{}
		a.repos[key] = in
	}
	a.mu.Unlock()

	in.mu.Lock()
	defer in.mu.Unlock()
	if in.id != 0 {
		return in.id, nil
	}
	inst, _, err := a.gh.Apps.FindRepositoryInstallation(ctx, owner, repo)
	if err != nil {
		if isStatus(err, http.StatusNotFound) {
			return 0, fmt.Errorf("the App is not installed on the repository, or the repository does not exist: %w", err)
		}
		return 0, err
	}
	if inst.GetID() == 0 {
		return 0, errors.New("GitHub answered without an installation ID")
	}
	in.id = inst.GetID()
	a.log.LogAttrs(ctx, slog.LevelDebug, "found GitHub App installation",
		slog.String("repo", owner+"/"+repo), slog.Int64("installation", in.id))
	return in.id, nil
}

// forget drops owner/repo's installation if it is still id.
func (a *App) forget(owner, repo string, id int64) {
	key := strings.ToLower(owner + "/" + repo)
	a.mu.Lock()
	in := a.repos[key]
	delete(a.tokens, id)
	a.mu.Unlock()
	if in == nil {
		return
	}
	in.mu.Lock()
	if in.id == id {
		in.id = 0
	}
	in.mu.Unlock()
}

// refused is told that GitHub answered 401 to owner/repo's token: the
// installation may have been deleted, or its token revoked. The next Token
// call for owner/repo looks up its installation and fetches a token afresh.
func (a *App) refused(ctx context.Context, owner, repo string) {
	key := strings.ToLower(owner + "/" + repo)
	a.mu.Lock()
	in := a.repos[key]
	a.mu.Unlock()
	if in == nil {
		return
	}
	in.mu.Lock()
	id := in.id
	in.mu.Unlock()
	if id == 0 {
		return
	}
	a.log.LogAttrs(ctx, slog.LevelWarn, "GitHub refused the App's installation token; will fetch another",
		slog.String("repo", owner+"/"+repo), slog.Int64("installation", id))
	a.forget(owner, repo, id)
}

var _ refusable = (*App)(nil)

// installationToken returns installation id's token, fetched or refreshed
// by its ghinstallation.Transport when needed.
func (a *App) installationToken(ctx context.Context, id int64) (config.Secret, error) {
	a.mu.Lock()
	t := a.tokens[id]
	if t == nil {
		// An AppsTransport per installation: ghinstallation writes to it
		// while refreshing, under the installation's own lock.
		atr := ghinstallation.NewAppsTransportFromPrivateKey(a.tr, a.id, a.key)
		atr.BaseURL = a.apiBase
		t = ghinstallation.NewFromAppsTransport(atr, id)
		a.tokens[id] = t
	}
	a.mu.Unlock()

	tok, err := t.Token(ctx)
	if err != nil {
		var herr *ghinstallation.HTTPError
		if errors.As(err, &herr) && herr.Response != nil {
			// ghinstallation leaves an error answer's body open; its message
			// says why (e.g. the installation is suspended).
			if msg := drainMessage(herr.Response); msg != "" {
				return "", fmt.Errorf("%w: GitHub said %q", err, msg)
			}
		}
		return "", err
	}
	return config.Secret(tok), nil
}

// installationGone reports whether err is GitHub's 404 for an installation
// token: the installation was deleted.
func installationGone(err error) bool {
	var herr *ghinstallation.HTTPError
	return errors.As(err, &herr) && herr.Response != nil && herr.Response.StatusCode == http.StatusNotFound
}
