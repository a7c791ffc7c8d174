-- Tenants: tokens carry a role among five and a scope (companies, publishers or buyers), and
-- every change to the plan, tokens, block lists, caps and money is recorded in an audit log.

ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check
    CHECK (role IN ('admin', 'analyst', 'supervisor', 'publisher', 'buyer'));
-- JSON {"companies"|"publishers"|"buyers": [ids]}; NULL: the whole install (tokens issued before).
ALTER TABLE api_tokens ADD COLUMN scope TEXT;

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
