package main

import (
	"context"
	"fmt"

	"github.com/byop-dev/byop/internal/gitrepo"
)

// committer commits everything the bench writes to its repositories.
const committer = "byop bench <bench@byop.invalid>"

// gitRepo is one of benchOwner's repositories on the bench's git host
// (b.git: bare repositories served by `git http-backend`, commits by sha
// too, as GitHub serves pull request heads).
type gitRepo struct {
	gitrepo.Repo
	owner, name string
	cloneURL    string
}

func (r *gitRepo) fullName() string { return r.owner + "/" + r.name }

// createRepo makes an empty repository benchOwner/name whose default branch
// is main.
func (b *bench) createRepo(ctx context.Context, name string) (*gitRepo, error) {
	full := benchOwner + "/" + name
	r, err := b.git.CreateRepo(ctx, full, "main")
	if err != nil {
		return nil, err
	}
	return &gitRepo{Repo: r, owner: benchOwner, name: name, cloneURL: b.git.CloneURL(full)}, nil
}

// commit writes one commit to ref whose tree is parent's (a sha or ref; ""
// for a root commit) with files written over it, and returns its sha.
func (r *gitRepo) commit(ctx context.Context, ref, parent string, files map[string][]byte, msg string) (string, error) {
	sha, err := r.Commit(ctx, gitrepo.Commit{Ref: ref, Parent: parent, Files: files, Message: msg, Committer: committer})
	if err != nil {
		return "", fmt.Errorf("committing to %s: %w", r.fullName(), err)
	}
	return sha, nil
}

// sampleApp creates repository name with the sample app (appDockerfile on
// the bench's base image, serving "main") on main, and returns it with that
// commit's sha.
func (b *bench) sampleApp(ctx context.Context, name string) (*gitRepo, string, error) {
	repo, err := b.createRepo(ctx, name)
	if err != nil {
		return nil, "", err
	}
	base, err := repo.commit(ctx, "refs/heads/main", "", map[string][]byte{
		"Dockerfile": fmt.Appendf(nil, appDockerfile, b.o.baseImage),
		"index.html": []byte("main\n"),
	}, "sample app")
	if err != nil {
		return nil, "", err
	}
	return repo, base, nil
}
