package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/byop-dev/byop/config"
	"github.com/byop-dev/byop/forge"
)

// newGitHub returns byop's GitHub client and the credentials it fetches
// repositories with: as a GitHub App, with a token, or (nil, nil) not at
// all. A GitHub App learns its own login here when cfg does not give one.
func newGitHub(ctx context.Context, cfg *config.Config, log *slog.Logger) (*forge.Client, forge.Auth, error) {
	var auth forge.Auth
	switch {
	case cfg.GitHubAppID != 0:
		key, err := os.ReadFile(cfg.GitHubAppKeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("reading the GitHub App's key: %w", err)
		}
		app, err := forge.NewApp(cfg.GitHubAPIURL, cfg.GitHubAppID, key, forge.WithLogger(log))
		if err != nil {
			return nil, nil, err
		}
		if cfg.GitHubLogin == "" {
			// byop must know its own login to leave its own comments alone.
			if cfg.GitHubLogin, err = app.Login(ctx); err != nil {
				return nil, nil, fmt.Errorf("asking GitHub for the App's login: %w", err)
			}
		}
		auth = app
	case !cfg.GitHubToken.IsZero():
		auth = forge.PAT(cfg.GitHubToken)
	default:
		return nil, nil, nil
	}
	opts := []forge.Option{forge.WithLogger(log)}
	if cfg.GitHubLogin != "" {
		opts = append(opts, forge.WithLogin(cfg.GitHubLogin))
	}
	gh, err := forge.NewWithAuth(cfg.GitHubAPIURL, auth, opts...)
	if err != nil {
		return nil, nil, err
	}
	return gh, auth, nil
}
