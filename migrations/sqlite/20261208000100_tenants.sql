-- Tenants: tokens carry a role among five and a scope (companies, publishers or buyers), and
-- every change to the plan, tokens, block lists, caps and money is recorded in an audit log.

-- SQLite cannot change a CHECK constraint: the table is rebuilt, its rows kept.
CREATE TABLE api_tokens_scoped (
    id            TEXT    PRIMARY KEY NOT NULL,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'analyst', 'supervisor', 'publisher', 'buyer')),
    scope         TEXT,   -- JSON {"companies"|"publishers"|"buyers": [ids]}; NULL: the whole install
    digest_sha256 TEXT    NOT NULL UNIQUE,
    created_at_ms BIGINT  NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT
);
INSERT INTO api_tokens_scoped (id, name, role, scope, digest_sha256, created_at_ms, expires_at_ms, revoked_at_ms)
    SELECT id, name, role, NULL, digest_sha256, created_at_ms, expires_at_ms, revoked_at_ms FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_scoped RENAME TO api_tokens;

-- Who changed what, when, and how it was before and after. Rows are only ever added.
CREATE TABLE audit_log (
    id          TEXT    PRIMARY KEY NOT NULL,  -- UUIDv7: in the order recorded
    at_ms       BIGINT  NOT NULL,
    actor       TEXT    NOT NULL,              -- "ADMIN_TOKEN", "SUPERVISOR_TOKENS[1]", "token <name>"
    token_id    TEXT,                          -- the issued token, when it was one
    role        TEXT    NOT NULL,
    company_id  TEXT,                          -- whose data changed (NULL: the install's)
    action      TEXT    NOT NULL,              -- "buyer.update", "token.issue", "postback.retry", …
    target_id   TEXT,
    before_json TEXT,
    after_json  TEXT
);
CREATE INDEX audit_log_by_company ON audit_log (company_id, id);
