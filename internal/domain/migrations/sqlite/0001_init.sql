-- The git-hosting domain, SQLite dialect. Times are Unix milliseconds;
-- permissions are 1 READ, 2 WRITE, 3 ADMIN.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    display_name  TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    password_hash TEXT    NOT NULL DEFAULT '',
    admin         BOOLEAN NOT NULL DEFAULT FALSE,
    created       BIGINT  NOT NULL
);

CREATE TABLE access_tokens (
    id         INTEGER PRIMARY KEY,
    user_id    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    token_hash BLOB    NOT NULL UNIQUE,
    created    BIGINT  NOT NULL,
    UNIQUE (user_id, name)
);

CREATE TABLE projects (
    id          INTEGER PRIMARY KEY,
    project_key TEXT   NOT NULL UNIQUE,
    name        TEXT   NOT NULL,
    description TEXT   NOT NULL DEFAULT '',
    created     BIGINT NOT NULL
);

CREATE TABLE repositories (
    id            INTEGER PRIMARY KEY,
    project_id    BIGINT  NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    slug          TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    public        BOOLEAN NOT NULL DEFAULT FALSE,
    created       BIGINT  NOT NULL,
    last_modified BIGINT  NOT NULL,
    UNIQUE (project_id, slug)
);

CREATE TABLE pull_requests (
    id            INTEGER PRIMARY KEY,
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    title         TEXT   NOT NULL,
    description   TEXT   NOT NULL DEFAULT '',
    state         TEXT   NOT NULL CHECK (state IN ('OPEN', 'MERGED', 'DECLINED')),
    from_branch   TEXT   NOT NULL,
    to_branch     TEXT   NOT NULL,
    author_id     BIGINT NOT NULL REFERENCES users (id),
    version       BIGINT NOT NULL DEFAULT 0,
    created       BIGINT NOT NULL,
    updated       BIGINT NOT NULL
);
CREATE INDEX pull_requests_by_repo ON pull_requests (repository_id, id);
CREATE INDEX pull_requests_by_repo_state ON pull_requests (repository_id, state, id);

CREATE TABLE comments (
    id              INTEGER PRIMARY KEY,
    pull_request_id BIGINT NOT NULL REFERENCES pull_requests (id) ON DELETE CASCADE,
    author_id       BIGINT NOT NULL REFERENCES users (id),
    text            TEXT   NOT NULL,
    created         BIGINT NOT NULL
);
CREATE INDEX comments_by_pr ON comments (pull_request_id, id);

CREATE TABLE project_permissions (
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    perm       INTEGER NOT NULL CHECK (perm BETWEEN 1 AND 3),
    PRIMARY KEY (project_id, user_id)
);

CREATE TABLE repository_permissions (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    user_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    perm          INTEGER NOT NULL CHECK (perm BETWEEN 1 AND 3),
    PRIMARY KEY (repository_id, user_id)
);
