-- The routing plan: companies, buyers, campaigns (with their numbers and buyer lists), publishers.
-- Conventions shared with the PostgreSQL set: ids TEXT (UUIDv7), times epoch milliseconds,
-- flags INTEGER 0/1, money integer cents.

CREATE TABLE companies (
    id                        TEXT    PRIMARY KEY NOT NULL,
    name                      TEXT    NOT NULL UNIQUE,
    duplicate_caller_handling INTEGER NOT NULL DEFAULT 0 CHECK (duplicate_caller_handling IN (0, 1)),
    created_at_ms             INTEGER NOT NULL,
    updated_at_ms             INTEGER NOT NULL
);

CREATE TABLE buyers (
    id                   TEXT    PRIMARY KEY NOT NULL,
    company_id           TEXT    NOT NULL REFERENCES companies (id),
    name                 TEXT    NOT NULL,
    destination          TEXT    NOT NULL,
    ring_timeout_seconds INTEGER NOT NULL,
    conversion_seconds   INTEGER NOT NULL,
    dedupe_seconds       INTEGER NOT NULL,
    duplicate_after      TEXT    NOT NULL CHECK (duplicate_after IN ('converted', 'connected')),
    dedupe_group         TEXT,
    payout_cents         INTEGER NOT NULL,
    revenue_cents        INTEGER NOT NULL,
    cap_concurrency      INTEGER,
    cap_hourly           INTEGER,
    cap_daily            INTEGER,
    cap_monthly          INTEGER,
    cap_lifetime         INTEGER,
    caps_counted_on      TEXT    NOT NULL CHECK (caps_counted_on IN ('connected', 'converted')),
    business_hours       TEXT,   -- JSON, read and written whole
    send_digits          TEXT,
    paused               INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    created_at_ms        INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL,
    UNIQUE (company_id, name)
);

CREATE TABLE campaigns (
    id                        TEXT    PRIMARY KEY NOT NULL,
    company_id                TEXT    NOT NULL REFERENCES companies (id),
    name                      TEXT    NOT NULL,
    duplicate_caller_handling TEXT    NOT NULL CHECK (duplicate_caller_handling IN ('off', 'new_convertible_buyer')),
    fallback_buyer_id         TEXT    REFERENCES buyers (id),
    redirect_campaign_id      TEXT    REFERENCES campaigns (id),
    rtb_key_sha256            TEXT    UNIQUE,
    rtb_reservation_seconds   INTEGER NOT NULL,
    created_at_ms             INTEGER NOT NULL,
    updated_at_ms             INTEGER NOT NULL,
    UNIQUE (company_id, name)
);
CREATE INDEX campaigns_fallback_buyer ON campaigns (fallback_buyer_id);
CREATE INDEX campaigns_redirect_campaign ON campaigns (redirect_campaign_id);

-- A tracking number belongs to one campaign at most: the primary key enforces it.
CREATE TABLE campaign_numbers (
    number      TEXT    PRIMARY KEY NOT NULL,
    campaign_id TEXT    NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL
);
CREATE INDEX campaign_numbers_campaign ON campaign_numbers (campaign_id);

CREATE TABLE campaign_buyers (
    campaign_id TEXT    NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    buyer_id    TEXT    NOT NULL REFERENCES buyers (id),
    position    INTEGER NOT NULL,
    priority    INTEGER NOT NULL,
    weight      INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, buyer_id)
);
CREATE INDEX campaign_buyers_buyer ON campaign_buyers (buyer_id);

CREATE TABLE publishers (
    id            TEXT    PRIMARY KEY NOT NULL,
    company_id    TEXT    NOT NULL REFERENCES companies (id),
    name          TEXT    NOT NULL,
    external_id   TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (company_id, name),
    UNIQUE (company_id, external_id)
);
