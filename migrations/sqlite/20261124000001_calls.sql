-- Live calls: each call's state, the buyers it was offered to and its timeline; conversions
-- and the de-dupe marks they leave; and the plan revision that routing caches check.
-- No foreign keys to the plan: call history outlives the buyers and campaigns it mentions.

CREATE TABLE plan_revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO plan_revision (id, revision) VALUES (1, 0);

CREATE TABLE calls (
    call_sid            TEXT    PRIMARY KEY NOT NULL,
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
    attempts            INTEGER NOT NULL,
    duplicate_buyers    TEXT    NOT NULL,  -- JSON array: buyers skipped as duplicates
    used_fallback       INTEGER NOT NULL,
    redirects           INTEGER NOT NULL,
    timeline_len        INTEGER NOT NULL,
    started_at_ms       INTEGER NOT NULL,
    state_changed_at_ms INTEGER NOT NULL,
    ended_at_ms         INTEGER
);
CREATE INDEX calls_live ON calls (state) WHERE state <> 'ended';
CREATE INDEX calls_started ON calls (started_at_ms);
CREATE INDEX calls_caller ON calls (caller_number);

CREATE TABLE call_attempts (
    call_sid          TEXT    NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
    number            INTEGER NOT NULL,
    buyer_id          TEXT    NOT NULL,
    campaign_id       TEXT    NOT NULL,
    kind              TEXT    NOT NULL CHECK (kind IN ('buyer', 'fallback')),
    duplicate         INTEGER,
    dial_status       TEXT,
    connected_seconds INTEGER,
    converted         INTEGER NOT NULL,
    started_at_ms     INTEGER NOT NULL,
    answered_at_ms    INTEGER,
    ended_at_ms       INTEGER,
    PRIMARY KEY (call_sid, number)
);
CREATE INDEX call_attempts_buyer ON call_attempts (buyer_id, started_at_ms);

CREATE TABLE call_events (
    call_sid TEXT    NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    detail   TEXT    NOT NULL,  -- JSON
    PRIMARY KEY (call_sid, seq)
);

CREATE TABLE conversions (
    call_sid          TEXT    NOT NULL,
    attempt           INTEGER NOT NULL,
    buyer_id          TEXT    NOT NULL,
    campaign_id       TEXT    NOT NULL,
    caller_number     TEXT,
    connected_seconds INTEGER NOT NULL,
    payout_cents      INTEGER NOT NULL,
    revenue_cents     INTEGER NOT NULL,
    converted_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (call_sid, attempt)
);
CREATE INDEX conversions_buyer ON conversions (buyer_id, converted_at_ms);

-- The latest touch of each caller in each de-dupe scope: all the de-dupe index needs, loaded
-- whole at start-up, one row per caller and scope however many calls there were.
CREATE TABLE dedupe_marks (
    caller_number     TEXT    NOT NULL,
    scope             TEXT    NOT NULL,
    last_connected_ms INTEGER,
    last_converted_ms INTEGER,
    PRIMARY KEY (caller_number, scope)
);
