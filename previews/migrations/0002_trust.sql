-- /ok-to-test approvals: who trusted which head of a pull request.
CREATE TABLE approvals (
	owner TEXT NOT NULL,
	repo  TEXT NOT NULL,
	pr    INTEGER NOT NULL,
	sha   TEXT NOT NULL,
	by    TEXT NOT NULL,
	at    INTEGER NOT NULL,
	PRIMARY KEY (owner, repo, pr, sha)
);

-- Repositories a GitHub App installation gave byop.
CREATE TABLE installed_repos (
	full_name TEXT NOT NULL PRIMARY KEY COLLATE NOCASE,
	at        INTEGER NOT NULL
);

-- The newest work seen for a pull request, so that older work queued
-- before a restart is still recognised as superseded.
ALTER TABLE previews ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
