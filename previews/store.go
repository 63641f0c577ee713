package previews

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go, no cgo)
)

// State is where a build stands.
type State string

// The states of a build, in the order a build goes through them. A build
// ends running, failed or cancelled.
const (
	Pending   State = "pending"
	Fetching  State = "fetching"
	Building  State = "building"
	Pushing   State = "pushing"
	Deploying State = "deploying"
	Running   State = "running"
	// Pushed ends a build of a branch push, which has no preview.
	Pushed    State = "pushed"
	Failed    State = "failed"
	Cancelled State = "cancelled"
	// Closed is a preview's state once its pull request closed and it was removed.
	Closed State = "closed"
)

// Done reports whether the state is final.
func (s State) Done() bool {
	return s == Running || s == Pushed || s == Failed || s == Cancelled || s == Closed
}

// Build is one commit going through the pipeline.
type Build struct {
	ID        int64
	TaskID    string
	Key       Key
	SHA       string
	State     State
	Reason    string
	Image     string
	Digest    string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Preview is what runs for a pull request, and the one comment about it.
type Preview struct {
	Key       Key
	SHA       string
	State     State
	URL       string
	Upstream  string
	BuildID   int64
	CommentID int64
	Comment   string
	// Seq is the order of the newest work seen for the pull request.
	Seq       int64
	UpdatedAt time.Time
}

// Report is a commit status byop set, kept so that its own pages show them
// whether or not GitHub was told.
type Report struct {
	Owner, Repo, SHA string
	Context          string
	State            string
	Description      string
	TargetURL        string
	At               time.Time
}

// LogLine is one line of a build's log.
type LogLine struct {
	Seq  int64
	At   time.Time
	Line string
}

// ErrNotFound is returned when a build does not exist.
var ErrNotFound = errors.New("not found")

//go:embed migrations/*.sql
var migrations embed.FS

// Store is byop's store of record, an SQLite database.
type Store struct {
	db  *sql.DB
	now func() time.Time
}

// Open opens (creating if needed) the database at path and brings its
// schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	s := &Store{db: db, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating store %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
		return err
	}
	var current int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return err
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with a number", name)
		}
		if version <= current {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		if err := s.inTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("applying %s: %w", base, err)
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, version)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

type sqlTx = sql.Tx

var errNoRows = sql.ErrNoRows

func (s *Store) inTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	return s.db.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
}

// StartBuild records a build for a task. A task that runs again (asynq is
// at-least-once) starts its build afresh: same ID, state pending, log cleared.
func (s *Store) StartBuild(ctx context.Context, taskID string, key Key, sha string) (Build, error) {
	now := s.now().UnixMilli()
	var id int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `
			INSERT INTO builds (task_id, owner, repo, pr, sha, state, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, reason = '', image = '', digest = '', updated_at = excluded.updated_at
			RETURNING id`,
			taskID, key.Owner, key.Repo, key.PR, sha, Pending, now, now).Scan(&id)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM build_logs WHERE build_id = ?`, id)
		return err
	})
	if err != nil {
		return Build{}, fmt.Errorf("starting build of %s at %s: %w", key, sha, err)
	}
	return s.Build(ctx, id)
}

// SetBuildState moves a build to state, with a reason for failures.
func (s *Store) SetBuildState(ctx context.Context, id int64, state State, reason string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE builds SET state = ?, reason = ?, updated_at = ? WHERE id = ?`,
		state, reason, s.now().UnixMilli(), id)
	if err != nil {
		return fmt.Errorf("setting build %d %s: %w", id, state, err)
	}
	return nil
}

// SetBuildImage records the image a build pushed.
func (s *Store) SetBuildImage(ctx context.Context, id int64, image, digest string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE builds SET image = ?, digest = ?, updated_at = ? WHERE id = ?`,
		image, digest, s.now().UnixMilli(), id)
	if err != nil {
		return fmt.Errorf("recording image of build %d: %w", id, err)
	}
	return nil
}

const buildColumns = `id, task_id, owner, repo, pr, sha, state, reason, image, digest, created_at, updated_at`

func scanBuild(row interface{ Scan(...any) error }) (Build, error) {
	var b Build
	var created, updated int64
	err := row.Scan(&b.ID, &b.TaskID, &b.Key.Owner, &b.Key.Repo, &b.Key.PR, &b.SHA, &b.State, &b.Reason, &b.Image, &b.Digest, &created, &updated)
	b.CreatedAt, b.UpdatedAt = time.UnixMilli(created), time.UnixMilli(updated)
	return b, err
}

// Build returns one build.
func (s *Store) Build(ctx context.Context, id int64) (Build, error) {
	b, err := scanBuild(s.db.QueryRowContext(ctx, `SELECT `+buildColumns+` FROM builds WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Build{}, fmt.Errorf("build %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Build{}, fmt.Errorf("reading build %d: %w", id, err)
	}
	return b, nil
}

// Builds returns the newest builds, at most limit; of one pull request if
// key is not zero.
func (s *Store) Builds(ctx context.Context, key Key, limit int) ([]Build, error) {
	q := `SELECT ` + buildColumns + ` FROM builds`
	var args []any
	if key != (Key{}) {
		q += ` WHERE owner = ? AND repo = ? AND pr = ?`
		args = append(args, key.Owner, key.Repo, key.PR)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing builds: %w", err)
	}
	defer rows.Close()
	var out []Build
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, fmt.Errorf("listing builds: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// AppendLog adds lines to a build's log, in one transaction.
func (s *Store) AppendLog(ctx context.Context, buildID int64, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	at := s.now().UnixMilli()
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var next int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM build_logs WHERE build_id = ?`, buildID).Scan(&next); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO build_logs (build_id, seq, at, line) VALUES (?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, line := range lines {
			if _, err := stmt.ExecContext(ctx, buildID, next+int64(i), at, line); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("appending to log of build %d: %w", buildID, err)
	}
	return nil
}

// Log returns a build's log lines after seq (0 for all).
func (s *Store) Log(ctx context.Context, buildID, after int64) ([]LogLine, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, at, line FROM build_logs WHERE build_id = ? AND seq > ? ORDER BY seq`, buildID, after)
	if err != nil {
		return nil, fmt.Errorf("reading log of build %d: %w", buildID, err)
	}
	defer rows.Close()
	var out []LogLine
	for rows.Next() {
		var l LogLine
		var at int64
		if err := rows.Scan(&l.Seq, &at, &l.Line); err != nil {
			return nil, fmt.Errorf("reading log of build %d: %w", buildID, err)
		}
		l.At = time.UnixMilli(at)
		out = append(out, l)
	}
	return out, rows.Err()
}

const previewColumns = `owner, repo, pr, sha, state, url, upstream, build_id, comment_id, comment, seq, updated_at`

func scanPreview(row interface{ Scan(...any) error }) (Preview, error) {
	var p Preview
	var updated int64
	err := row.Scan(&p.Key.Owner, &p.Key.Repo, &p.Key.PR, &p.SHA, &p.State, &p.URL, &p.Upstream, &p.BuildID, &p.CommentID, &p.Comment, &p.Seq, &updated)
	p.UpdatedAt = time.UnixMilli(updated)
	return p, err
}

// Preview returns the preview of a pull request; ok is false if byop never
// made one.
func (s *Store) Preview(ctx context.Context, key Key) (p Preview, ok bool, err error) {
	p, err = scanPreview(s.db.QueryRowContext(ctx, `SELECT `+previewColumns+` FROM previews WHERE owner = ? AND repo = ? AND pr = ?`, key.Owner, key.Repo, key.PR))
	if errors.Is(err, sql.ErrNoRows) {
		return Preview{Key: key}, false, nil
	}
	if err != nil {
		return Preview{}, false, fmt.Errorf("reading preview %s: %w", key, err)
	}
	return p, true, nil
}

// SavePreview writes a preview, replacing what was known of it.
func (s *Store) SavePreview(ctx context.Context, p Preview) error {
	_, err := s.db.ExecContext(ctx, `
		INSERT INTO previews (`+previewColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (owner, repo, pr) DO UPDATE SET sha = excluded.sha, state = excluded.state, url = excluded.url,
			upstream = excluded.upstream, build_id = excluded.build_id, comment_id = excluded.comment_id,
			comment = excluded.comment, seq = MAX(previews.seq, excluded.seq), updated_at = excluded.updated_at`,
		p.Key.Owner, p.Key.Repo, p.Key.PR, p.SHA, p.State, p.URL, p.Upstream, p.BuildID, p.CommentID, p.Comment, p.Seq, s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("saving preview %s: %w", p.Key, err)
	}
	return nil
}

// Previews returns every preview byop knows, newest first.
func (s *Store) Previews(ctx context.Context) ([]Preview, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+previewColumns+` FROM previews ORDER BY updated_at DESC`)
	if err != nil {
		return nil, fmt.Errorf("listing previews: %w", err)
	}
	defer rows.Close()
	var out []Preview
	for rows.Next() {
		p, err := scanPreview(rows)
		if err != nil {
			return nil, fmt.Errorf("listing previews: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// AddReport records a commit status byop set.
func (s *Store) AddReport(ctx context.Context, r Report) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO reports (owner, repo, sha, context, state, description, target_url, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Owner, r.Repo, r.SHA, r.Context, r.State, r.Description, r.TargetURL, s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("recording status %s on %s: %w", r.Context, r.SHA, err)
	}
	return nil
}

// Reports returns the statuses recorded for a commit, oldest first.
func (s *Store) Reports(ctx context.Context, owner, repo, sha string) ([]Report, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT owner, repo, sha, context, state, description, target_url, at FROM reports WHERE owner = ? AND repo = ? AND sha = ? ORDER BY id`, owner, repo, sha)
	if err != nil {
		return nil, fmt.Errorf("listing statuses of %s: %w", sha, err)
	}
	defer rows.Close()
	var out []Report
	for rows.Next() {
		var r Report
		var at int64
		if err := rows.Scan(&r.Owner, &r.Repo, &r.SHA, &r.Context, &r.State, &r.Description, &r.TargetURL, &at); err != nil {
			return nil, fmt.Errorf("listing statuses of %s: %w", sha, err)
		}
		r.At = time.UnixMilli(at)
		out = append(out, r)
	}
	return out, rows.Err()
}
