-- Buyer-reported conversions (issue 31): a buyer's conversion rule and windows; its conversion
-- key (kept only as a SHA-256 digest, like campaigns' RTB keys); each call's reported
-- conversion and its return; and every report's idempotency key with the answer it got.

ALTER TABLE buyers ADD COLUMN conversion_rule TEXT NOT NULL DEFAULT 'seconds';
ALTER TABLE buyers ADD COLUMN conversion_report_window_seconds BIGINT NOT NULL DEFAULT 259200;
ALTER TABLE buyers ADD COLUMN return_window_seconds BIGINT NOT NULL DEFAULT 90;
ALTER TABLE buyers ADD COLUMN conversion_key_sha256 TEXT;
CREATE UNIQUE INDEX buyers_conversion_key ON buyers (conversion_key_sha256);

-- A call converts once: its buyer's report, one row per call (also written to `conversions`,
-- as every conversion is, for statistics).
CREATE TABLE reported_conversions (
    call_sid        TEXT   NOT NULL PRIMARY KEY,
    attempt         BIGINT NOT NULL,
    buyer_id        TEXT   NOT NULL,
    caller_number   TEXT,
    revenue_cents   BIGINT NOT NULL,
    external_id     TEXT,
    converted_at_ms BIGINT NOT NULL
);
CREATE INDEX reported_conversions_caller ON reported_conversions (caller_number, buyer_id);

-- A return is a new row: the conversion it reverses is never edited.
CREATE TABLE conversion_returns (
    call_sid       TEXT   NOT NULL PRIMARY KEY REFERENCES reported_conversions (call_sid),
    reason         TEXT   NOT NULL,
    returned_at_ms BIGINT NOT NULL
);

-- One row per idempotency key of a buyer: the key is claimed in the transaction that makes
-- the report's changes, so two nodes given the same report at once make them once.
CREATE TABLE conversion_requests (
    buyer_id        TEXT   NOT NULL,
    idempotency_key TEXT   NOT NULL,
    action          TEXT   NOT NULL CHECK (action IN ('report', 'return')),
    call_sid        TEXT   NOT NULL,
    request_sha256  TEXT   NOT NULL,
    response        TEXT   NOT NULL,
    at_ms           BIGINT NOT NULL,
    PRIMARY KEY (buyer_id, idempotency_key)
);
