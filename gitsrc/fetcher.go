package gitsrc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/storage/memory"
)

const (
	// tokenUser is the basic-auth user GitHub expects with a token.
	tokenUser = "x-access-token"
	// commitRefPrefix holds, in a cache, one ref per fetched commit, so that
	// the next fetch can tell the host what it already has.
	commitRefPrefix = "refs/byop/commits/"
	// refFetchRef is where a cache receives Spec.Ref during the fallback.
	refFetchRef = "refs/byop/fetch-ref"

	defaultDeepenLimit = 100
	defaultKeepCommits = 16
)

// Option configures a Fetcher.
type Option func(*Fetcher)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(f *Fetcher) { f.log = l }
}

// WithDeepenLimit sets, for a Fetcher without a cache, how many commits
// below Spec.Ref's tip the fallback looks for the commit when the ref has
// moved past it (default 100). A cache receives the ref's whole history.
func WithDeepenLimit(n int) Option {
	return func(f *Fetcher) {
		if n > 0 {
			f.deepenLimit = n
		}
	}
}

// WithKeptCommits sets how many recently fetched commits (newest by commit
// date) a repository cache keeps refs to and offers the host as already
// present (default 16).
func WithKeptCommits(n int) Option {
	return func(f *Fetcher) {
		if n > 0 {
			f.keepCommits = n
		}
	}
}

// Fetcher checks out single commits, caching each repository's objects.
// It is safe for concurrent use; fetches of the same repository take turns.
type Fetcher struct {
	cacheDir    string
	log         *slog.Logger
	deepenLimit int
	keepCommits int
	locks       keyedLocks
}

// New returns a Fetcher that keeps a bare cache per repository under
// cacheDir (created as needed), at host/owner/name.git. The first fetch of a
// repository brings its history (of the commit fetched); later fetches bring
// only what is new, as `git fetch` into a clone does. With cacheDir ""
// nothing is cached: every fetch is a shallow fetch of depth 1. A cacheDir
// must be used by one Fetcher (one process) only.
func New(cacheDir string, opts ...Option) *Fetcher {
	f := &Fetcher{
		cacheDir:    cacheDir,
		log:         slog.New(slog.DiscardHandler),
		deepenLimit: defaultDeepenLimit,
		keepCommits: defaultKeepCommits,
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Fetch leaves in dir (absent or empty) a work tree checked out at exactly
// s.SHA, with HEAD detached at it, a remote "origin" at s.CloneURL and,
// where the commit has parents, a shallow history of depth 1 (whatever the
// cache holds). It fetches the sha directly and, if the host refuses and
// s.Ref is set, fetches s.Ref and looks for the commit in its history. On
// error dir is left empty. Errors never contain s.Token.
func (f *Fetcher) Fetch(ctx context.Context, s Spec, dir string) (err error) {
	if err := s.Validate(); err != nil {
		return err
	}
	defer func() { err = redact(err, s.Token) }()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fetching %s at %s: %w", s.CloneURL, s.SHA, err)
	}
	start := time.Now()
	if err := prepareDir(dir); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			emptyDir(dir)
		}
	}()

	log := f.log.With("repo", s.CloneURL, "sha", s.SHA)
	var via string
	if f.cacheDir == "" {
		src := memory.NewStorage()
		if via, err = f.fetchInto(ctx, log, src, s, true); err != nil {
			return err
		}
		if err = copyCommit(src, s, dir); err != nil {
			return err
		}
	} else if via, err = f.fetchThroughCache(ctx, log, s, dir); err != nil {
		return err
	}
	fetched := time.Now()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fetching %s at %s: %w", s.CloneURL, s.SHA, err)
	}
	// The work dir has its own copy now: the cache is free for others.
	if err := checkoutHead(s, dir); err != nil {
		return err
	}
	log.Info("fetched commit", "via", via, "dir", dir,
		"fetch_duration", fetched.Sub(start), "checkout_duration", time.Since(fetched))
	return nil
}

// fetchThroughCache brings s.SHA into the repository's cache and copies it
// into dir, holding the cache's lock.
func (f *Fetcher) fetchThroughCache(ctx context.Context, log *slog.Logger, s Spec, dir string) (string, error) {
	path := filepath.Join(f.cacheDir, cacheKey(s.CloneURL))
	unlock, err := f.locks.lock(ctx, path)
	if err != nil {
		return "", fmt.Errorf("waiting for the cache of %s: %w", s.CloneURL, err)
	}
	defer unlock()
	cache, err := openCache(log, path)
	if err != nil {
		return "", err
	}
	defer cache.Close()
	via, err := f.fetchInto(ctx, log, cache, s, false)
	if err != nil {
		return "", err
	}
	if err := f.pruneCommitRefs(cache); err != nil {
		log.Warn("pruning cache refs", "err", err)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("fetching %s at %s: %w", s.CloneURL, s.SHA, err)
	}
	return via, copyCommit(cache, s, dir)
}

// fetchInto makes s.SHA and its tree present in st, and returns how: from
// the cache, by sha or by ref.
//
// A shallow fetch (no cache) asks for depth 1. A cache instead receives
// whole histories: the host then sends only what the cache's recent commits
// do not already reach, as `git fetch` into a clone does. A depth-limited
// fetch cannot be incremental with go-git, which does not ask for thin
// packs: given a depth and no thin-pack capability, git's upload-pack sends
// the commit's whole tree whatever the client says it has.
func (f *Fetcher) fetchInto(ctx context.Context, log *slog.Logger, st storage.Storer, s Spec, shallow bool) (string, error) {
	want := plumbing.NewHash(s.SHA)
	keep := plumbing.ReferenceName(commitRefPrefix + s.SHA)
	if hasCommit(st, want) {
		// A commit is only ever stored with its whole tree.
		log.Debug("commit already in cache")
		return "cache", st.SetReference(plumbing.NewHashReference(keep, want))
	}

	var auth transport.AuthMethod
	if !s.Token.IsZero() {
		auth = &githttp.BasicAuth{Username: tokenUser, Password: s.Token.Reveal()}
	}
	remote := git.NewRemote(st, &gitconfig.RemoteConfig{Name: git.DefaultRemoteName, URLs: []string{s.CloneURL}})
	shallows, err := st.Shallow()
	if err != nil {
		return "", fmt.Errorf("reading shallow commits: %w", err)
	}
	fetch := func(spec string, depth int) error {
		err := remote.FetchContext(ctx, &git.FetchOptions{
			RefSpecs: []gitconfig.RefSpec{gitconfig.RefSpec(spec)},
			Depth:    depth,
			Auth:     auth,
			Tags:     git.NoTags,
		})
		if errors.Is(err, git.NoErrAlreadyUpToDate) {
			err = nil
		}
		if err != nil {
			// go-git records new shallow commits before it receives the
			// pack; a failed fetch must not leave claims to commits the
			// storage does not hold.
			if rerr := st.SetShallow(shallows); rerr != nil {
				log.Warn("restoring shallow commits", "err", rerr)
			}
			if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
				err = fmt.Errorf("%w (%w)", cerr, err)
			}
		}
		return err
	}
	depths := []int{0}
	if shallow {
		depths = deepenSteps(f.deepenLimit)
	}

	shaErr := fetch("+"+s.SHA+":"+string(keep), depths[0])
	if shaErr == nil && hasCommit(st, want) {
		return "sha", nil
	}
	if shaErr == nil {
		shaErr = errors.New("the host answered without the commit")
	}
	if s.Ref == "" || !mayFallBack(shaErr) {
		return "", fmt.Errorf("fetching commit %s from %s: %w", s.SHA, s.CloneURL, notFound(shaErr))
	}
	log.Debug("host refused the bare sha; fetching the ref", "ref", s.Ref, "err", redact(shaErr, s.Token))

	defer func() { _ = st.RemoveReference(refFetchRef) }()
	for _, depth := range depths {
		if err := fetch("+"+s.Ref+":"+refFetchRef, depth); err != nil {
			return "", fmt.Errorf("fetching commit %s from %s: by sha: %w; by %s: %w",
				s.SHA, s.CloneURL, shaErr, s.Ref, notFound(err))
		}
		if hasCommit(st, want) {
			return "ref", st.SetReference(plumbing.NewHashReference(keep, want))
		}
		log.Debug("ref does not reach the commit at this depth", "ref", s.Ref, "depth", depth)
	}
	tip := "unknown"
	if r, err := st.Reference(refFetchRef); err == nil {
		tip = r.Hash().String()
	}
	reach := "its history"
	if shallow {
		reach = fmt.Sprintf("the %d newest commits of its history", f.deepenLimit)
	}
	return "", fmt.Errorf("fetching commit %s from %s: the host refused the bare sha (%w) and %s (now at %s) does not have it among %s: %w",
		s.SHA, s.CloneURL, shaErr, s.Ref, tip, reach, ErrCommitNotFound)
}

// mayFallBack reports whether fetching Spec.Ref could succeed where
// fetching the sha failed: not when the context ended, access was denied or
// the host could not be reached.
func mayFallBack(err error) bool {
	for _, e := range []error{
		context.Canceled, context.DeadlineExceeded,
		transport.ErrAuthenticationRequired, transport.ErrAuthorizationFailed, transport.ErrRepositoryNotFound,
	} {
		if errors.Is(err, e) {
			return false
		}
	}
	return !isNetworkError(err)
}

// isNetworkError looks for a net.Error, also inside go-git's error wrappers,
// which do not unwrap.
func isNetworkError(err error) bool {
	var (
		ne net.Error
		ue *plumbing.UnexpectedError
		pe *plumbing.PermanentError
	)
	switch {
	case errors.As(err, &ne):
		return true
	case errors.As(err, &ue):
		return isNetworkError(ue.Err)
	case errors.As(err, &pe):
		return isNetworkError(pe.Err)
	}
	return false
}

// notFound marks a host's refusal to serve a want as ErrCommitNotFound.
func notFound(err error) error {
	msg := err.Error()
	if errors.Is(err, git.ErrExactSHA1NotSupported) || errors.Is(err, git.NoMatchingRefSpecError{}) ||
		strings.Contains(msg, "not our ref") || strings.Contains(msg, "couldn't find remote ref") ||
		strings.Contains(msg, "answered without the commit") {
		return fmt.Errorf("%w: %w", ErrCommitNotFound, err)
	}
	return err
}

// deepenSteps returns the depths tried in turn when fetching a ref.
func deepenSteps(limit int) []int {
	steps := []int{1}
	for d := 10; d < limit; d *= 10 {
		steps = append(steps, d)
	}
	if limit > 1 {
		steps = append(steps, limit)
	}
	return steps
}

func hasCommit(st storage.Storer, h plumbing.Hash) bool {
	_, err := object.GetCommit(st, h)
	return err == nil
}

// pruneCommitRefs keeps refs to the newest keepCommits fetched commits.
// Objects of dropped commits stay in the cache's packs.
func (f *Fetcher) pruneCommitRefs(st storage.Storer) error {
	iter, err := st.IterReferences()
	if err != nil {
		return err
	}
	type kept struct {
		name plumbing.ReferenceName
		when time.Time
	}
	var refs []kept
	err = iter.ForEach(func(r *plumbing.Reference) error {
		if !strings.HasPrefix(string(r.Name()), commitRefPrefix) {
			return nil
		}
		k := kept{name: r.Name()}
		if c, err := object.GetCommit(st, r.Hash()); err == nil {
			k.when = c.Committer.When
		}
		refs = append(refs, k)
		return nil
	})
	if err != nil || len(refs) <= f.keepCommits {
		return err
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].when.After(refs[j].when) })
	for _, r := range refs[f.keepCommits:] {
		if err := st.RemoveReference(r.name); err != nil {
			return err
		}
	}
	return nil
}

// openCache opens the bare cache at path, creating it, or recreating it when
// it cannot be opened. The caller holds the path's lock and closes the
// storage.
func openCache(log *slog.Logger, path string) (*filesystem.Storage, error) {
	open := func() *filesystem.Storage {
		return filesystem.NewStorageWithOptions(osfs.New(path), cache.NewObjectLRUDefault(),
			filesystem.Options{KeepDescriptors: true, ExclusiveAccess: true})
	}
	st := open()
	_, err := git.Open(st, nil)
	if err == nil {
		return st, nil
	}
	_ = st.Close()
	if _, statErr := os.Stat(path); statErr == nil {
		log.Warn("recreating an unreadable repository cache", "path", path, "err", err)
		if err := os.RemoveAll(path); err != nil {
			return nil, fmt.Errorf("removing unreadable cache %s: %w", path, err)
		}
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, fmt.Errorf("creating cache dir: %w", err)
	}
	st = open()
	if _, err := git.Init(st, nil); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("creating cache %s: %w", path, err)
	}
	return st, nil
}

// keyedLocks serialises work per key; waiting honours ctx.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (l *keyedLocks) lock(ctx context.Context, key string) (func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]chan struct{})
	}
	ch, ok := l.m[key]
	if !ok {
		ch = make(chan struct{}, 1)
		l.m[key] = ch
	}
	l.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
