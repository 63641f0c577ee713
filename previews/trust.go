package previews

import (
	"context"
	"fmt"
)

// Approve records that by trusted the pull request's head sha (/ok-to-test).
func (s *Store) Approve(ctx context.Context, key Key, sha, by string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO approvals (owner, repo, pr, sha, by, at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (owner, repo, pr, sha) DO UPDATE SET by = excluded.by, at = excluded.at`,
		key.Owner, key.Repo, key.PR, sha, by, s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("recording approval of %s at %s: %w", key, sha, err)
	}
	return nil
}

// Approved reports whether someone trusted the pull request at sha, or, if
// sha is empty, at any head.
func (s *Store) Approved(ctx context.Context, key Key, sha string) (bool, error) {
	q := `SELECT COUNT(*) FROM approvals WHERE owner = ? AND repo = ? AND pr = ?`
	args := []any{key.Owner, key.Repo, key.PR}
	if sha != "" {
		q += ` AND sha = ?`
		args = append(args, sha)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return false, fmt.Errorf("reading approvals of %s: %w", key, err)
	}
	return n > 0, nil
}

// SetInstalled records repositories an App installation added and removed.
func (s *Store) SetInstalled(ctx context.Context, added, removed []string) error {
	return s.inTx(ctx, func(tx *sqlTx) error {
		for _, r := range added {
			if _, err := tx.ExecContext(ctx, `INSERT INTO installed_repos (full_name, at) VALUES (?, ?) ON CONFLICT DO NOTHING`, r, s.now().UnixMilli()); err != nil {
				return fmt.Errorf("recording installed %s: %w", r, err)
			}
		}
		for _, r := range removed {
			if _, err := tx.ExecContext(ctx, `DELETE FROM installed_repos WHERE full_name = ?`, r); err != nil {
				return fmt.Errorf("removing installed %s: %w", r, err)
			}
		}
		return nil
	})
}

// Installed reports whether an App installation gave byop the repository.
func (s *Store) Installed(ctx context.Context, fullName string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM installed_repos WHERE full_name = ?`, fullName).Scan(&n); err != nil {
		return false, fmt.Errorf("reading installed repositories: %w", err)
	}
	return n > 0, nil
}

// PushedImage returns the image and digest a finished build of sha pushed,
// if any.
func (s *Store) PushedImage(ctx context.Context, owner, repo, sha string) (image, digest string, ok bool, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT image, digest FROM builds WHERE owner = ? AND repo = ? AND sha = ? AND digest != '' ORDER BY id DESC LIMIT 1`,
		owner, repo, sha).Scan(&image, &digest)
	if err == errNoRows {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("looking up the image of %s: %w", sha, err)
	}
	return image, digest, true, nil
}
