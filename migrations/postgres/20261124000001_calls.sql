-- Live calls: each call's state, the buyers it was offered to and its timeline; conversions
-- and the de-dupe marks they leave; and the plan revision that routing caches check.
-- No foreign keys to the plan: call history outlives the buyers and campaigns it mentions.
-- Integers are BIGINT (the code binds i64), flags INTEGER 0/1, as in the SQLite set.

CREATE TABLE plan_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT  NOT NULL
);
INSERT INTO plan_revision (id, revision) VALUES (1, 0);

CREATE TABLE calls (
    call_sid            TEXT    PRIMARY KEY,
    caller              TEXT    NOT NULL,  -- `From` as sent
    caller_number       TEXT,              -- E.164 when the caller id is one
    called              TEXT    NOT NULL,  -- `To` as sent
    company_id          TEXT,
    campaign_id         TEXT,              -- the campaign routing it now
    visited_campaigns   TEXT    NOT NULL,  -- JSON array of campaign ids, in order
    state               TEXT    NOT NULL CHECK (state IN ('routing', 'dialing', 'connected', 'ended')),
    outcome             TEXT,
    drop_reason         TEXT,
    buyer_id            TEXT,              -- the buyer reached, else the last one dialed
    duplicate           INTEGER,           -- for the buyer reached; NULL when unknown
    converted           INTEGER NOT NULL,
    attempts            BIGINT  NOT NULL,
    duplicate_buyers    TEXT    NOT NULL,  -- JSON array: buyers skipped as duplicates
    used_fallback       INTEGER NOT NULL,
    redirects           BIGINT  NOT NULL,
    timeline_len        BIGINT  NOT NULL,
    started_at_ms       BIGINT  NOT NULL,
    state_changed_at_ms BIGINT  NOT NULL,
    ended_at_ms         BIGINT
);
CREATE INDEX calls_live ON calls (state) WHERE state <> 'ended';
CREATE INDEX calls_started ON calls (started_at_ms);
CREATE INDEX calls_caller ON calls (caller_number);

CREATE TABLE call_attempts (
    call_sid          TEXT    NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
    number            BIGINT  NOT NULL,
    buyer_id          TEXT    NOT NULL,
    campaign_id       TEXT    NOT NULL,
    kind              TEXT    NOT NULL CHECK (kind IN ('buyer', 'fallback')),
    duplicate         INTEGER,
    dial_status       TEXT,
    connected_seconds BIGINT,
    converted         INTEGER NOT NULL,
    started_at_ms     BIGINT  NOT NULL,
    answered_at_ms    BIGINT,
    ended_at_ms       BIGINT,
    PRIMARY KEY (call_sid, number)
);
CREATE INDEX call_attempts_buyer ON call_attempts (buyer_id, started_at_ms);

CREATE TABLE call_events (
    call_sid TEXT    NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
    seq      BIGINT  NOT NULL,
    at_ms    BIGINT  NOT NULL,
    kind     TEXT    NOT NULL,
    detail   TEXT    NOT NULL,  -- JSON
    PRIMARY KEY (call_sid, seq)
);

CREATE TABLE conversions (
    call_sid          TEXT    NOT NULL,
    attempt           BIGINT  NOT NULL,
    buyer_id          TEXT    NOT NULL,
    campaign_id       TEXT    NOT NULL,
    caller_number     TEXT,
    connected_seconds BIGINT  NOT NULL,
    payout_cents      BIGINT  NOT NULL,
    revenue_cents     BIGINT  NOT NULL,
    converted_at_ms   BIGINT  NOT NULL,
    PRIMARY KEY (call_sid, attempt)
);
CREATE INDEX conversions_buyer ON conversions (buyer_id, converted_at_ms);

-- The latest touch of each caller in each de-dupe scope: all the de-dupe index needs, loaded
-- whole at start-up, one row per caller and scope however many calls there were.
CREATE TABLE dedupe_marks (
    caller_number     TEXT    NOT NULL,
    scope             TEXT    NOT NULL,
    last_connected_ms BIGINT,
    last_converted_ms BIGINT,
    PRIMARY KEY (caller_number, scope)
);
