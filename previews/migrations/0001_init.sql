CREATE TABLE builds (
	id         INTEGER PRIMARY KEY,
	task_id    TEXT NOT NULL UNIQUE,
	owner      TEXT NOT NULL,
	repo       TEXT NOT NULL,
	pr         INTEGER NOT NULL,
	sha        TEXT NOT NULL,
	state      TEXT NOT NULL,
	reason     TEXT NOT NULL DEFAULT '',
	image      TEXT NOT NULL DEFAULT '',
	digest     TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
);
CREATE INDEX builds_by_pr ON builds (owner, repo, pr, id);

CREATE TABLE build_logs (
	build_id INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
	seq      INTEGER NOT NULL,
	at       INTEGER NOT NULL,
	line     TEXT NOT NULL,
	PRIMARY KEY (build_id, seq)
) WITHOUT ROWID;

CREATE TABLE previews (
	owner      TEXT NOT NULL,
	repo       TEXT NOT NULL,
	pr         INTEGER NOT NULL,
	sha        TEXT NOT NULL DEFAULT '',
	state      TEXT NOT NULL,
	url        TEXT NOT NULL DEFAULT '',
	upstream   TEXT NOT NULL DEFAULT '',
	build_id   INTEGER NOT NULL DEFAULT 0,
	comment_id INTEGER NOT NULL DEFAULT 0,
	comment    TEXT NOT NULL DEFAULT '',
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (owner, repo, pr)
);

CREATE TABLE reports (
	id          INTEGER PRIMARY KEY,
	owner       TEXT NOT NULL,
	repo        TEXT NOT NULL,
	sha         TEXT NOT NULL,
	context     TEXT NOT NULL,
	state       TEXT NOT NULL,
	description TEXT NOT NULL,
	target_url  TEXT NOT NULL,
	at          INTEGER NOT NULL
);
CREATE INDEX reports_by_sha ON reports (owner, repo, sha, id);
