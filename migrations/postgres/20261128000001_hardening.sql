-- Hardening: API tokens issued through the API (kept only as SHA-256 digests), and the status
-- callbacks each call has taken, keyed by leg and `SequenceNumber`, so a retried one changes
-- nothing.

CREATE TABLE api_tokens (
    id            TEXT    PRIMARY KEY NOT NULL,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'supervisor')),
    digest_sha256 TEXT    NOT NULL UNIQUE,  -- 64 hex digits; the secret itself is never stored
    created_at_ms BIGINT  NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT
);

ALTER TABLE calls ADD COLUMN status_callbacks TEXT NOT NULL DEFAULT '[]';  -- JSON [{"leg", "sequence"}, …]
