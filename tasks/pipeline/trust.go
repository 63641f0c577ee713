package pipeline

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/byop-dev/byop/forge"
	"github.com/byop-dev/byop/previews"
	"github.com/byop-dev/byop/tasks"
)

// trusted decides whether byop builds this head of a pull request. Byop
// runs other people's code, so it builds only:
//   - heads pushed to the repository itself (only people with write access
//     can push there),
//   - pull requests whose author has write, maintain or admin permission
//     (asked from GitHub: author_association alone is not enough),
//   - heads a maintainer approved with /ok-to-test (or, with
//     TrustOncePerPR, any head of a pull request approved once).
func (p *Pipeline) trusted(ctx context.Context, key previews.Key, pl tasks.DeployPayload) (bool, error) {
	if pl.HeadRepo != "" && strings.EqualFold(pl.HeadRepo, key.FullName()) {
		return true, nil
	}
	sha := pl.SHA
	if p.Settings.TrustOncePerPR {
		sha = ""
	}
	if ok, err := p.Store.Approved(ctx, key, sha); ok || err != nil {
		return ok, err
	}
	if p.Reporter == nil || pl.Author == "" {
		return false, nil
	}
	perm, err := p.permission(ctx, key.Owner, key.Repo, pl.Author)
	if err != nil {
		return false, err
	}
	return canWrite(perm), nil
}

// waitForApproval reports that the head waits for a maintainer.
func (p *Pipeline) waitForApproval(ctx context.Context, key previews.Key, pl tasks.DeployPayload, pv previews.Preview, log *slog.Logger) error {
	log.Info("untrusted pull request: waiting for /ok-to-test", "author", pl.Author, "head_repo", pl.HeadRepo)
	p.report(ctx, key, forge.Status{SHA: pl.SHA, Context: ContextBuild, State: forge.StatePending, Description: "Waiting for /ok-to-test from a maintainer"}, log)
	p.saveComment(ctx, &pv, commentBody(commentWaiting, pl.SHA, "", previews.Build{}, pv), log)
	return nil
}

func canWrite(perm string) bool {
	switch perm {
	case "admin", "maintain", "write":
		return true
	}
	return false
}

// permissionTTL is how long a permission GitHub gave is believed.
const permissionTTL = time.Minute

// permissionCache remembers GitHub's answers about who may do what.
type permissionCache struct {
	mu sync.Mutex
	m  map[string]cachedPermission
}

type cachedPermission struct {
	perm string
	at   time.Time
}

// permission asks GitHub for user's permission on owner/repo, or answers
// from what it asked in the last minute.
func (p *Pipeline) permission(ctx context.Context, owner, repo, user string) (string, error) {
	k := strings.ToLower(owner + "/" + repo + "/" + user)
	c := &p.perms
	c.mu.Lock()
	got, ok := c.m[k]
	c.mu.Unlock()
	if ok && time.Since(got.at) < permissionTTL {
		return got.perm, nil
	}
	perm, err := p.Reporter.Permission(ctx, owner, repo, user)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]cachedPermission)
	}
	c.m[k] = cachedPermission{perm: perm, at: time.Now()}
	c.mu.Unlock()
	return perm, nil
}
