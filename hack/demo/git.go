package main

import (
	"context"
	"fmt"
	"time"

	"github.com/byop-dev/byop/internal/githttp"
	"github.com/byop-dev/byop/internal/gitrepo"
)

const dockerfile = `FROM %s
COPY index.html /www/index.html
EXPOSE 8080
CMD ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
`

// indexHTML is the sample app's page; the demo waits for it at the preview URL.
const indexHTML = `<!doctype html>
<title>byop demo</title>
<h1>Hello from a byop preview</h1>
<p>This page was built from a pull request by BuildKit and is served by docker compose behind byop's router.</p>
`

// sampleRepo makes the sample app's repository under the git root: one
// commit on the pull request's branch, also under refs/pull/<n>/head as
// GitHub serves it. The commit has a fixed committer and date, so it is the
// same on every run. It returns the commit's sha.
func sampleRepo(ctx context.Context, root, baseImage string) (string, error) {
	r, err := githttp.CreateRepo(ctx, root, owner+"/"+repo, branch)
	if err != nil {
		return "", fmt.Errorf("making the sample repository: %w", err)
	}
	sha, err := r.Commit(ctx, gitrepo.Commit{
		Ref:       "refs/heads/" + branch,
		Message:   "Add a page served by busybox httpd",
		When:      time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		Committer: "byop demo <demo@byop.invalid>",
		Files: map[string][]byte{
			"Dockerfile": fmt.Appendf(nil, dockerfile, baseImage),
			"index.html": []byte(indexHTML),
		},
	})
	if err != nil {
		return "", fmt.Errorf("making the sample repository: %w", err)
	}
	if err := r.SetRef(ctx, fmt.Sprintf("refs/pull/%d/head", pr), sha); err != nil {
		return "", fmt.Errorf("making the sample repository: %w", err)
	}
	return sha, nil
}

// serveGit serves the repositories under root over git's smart HTTP
// protocol, commits by sha too, as GitHub serves pull request heads.
func serveGit(root string) (*githttp.Server, error) {
	g, err := githttp.Start(root, githttp.Options{AnySHA1InWant: true})
	if err != nil {
		return nil, fmt.Errorf("the demo serves its sample repository with git: %w", err)
	}
	return g, nil
}
