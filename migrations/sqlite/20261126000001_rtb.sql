-- RTB: whether a campaign bids for pings without a caller number, the reservations bids make
-- (held until claimed by the caller's call or expired), and the log of every ping.

ALTER TABLE campaigns ADD COLUMN rtb_caller_number_optional INTEGER NOT NULL DEFAULT 0
    CHECK (rtb_caller_number_optional IN (0, 1));

-- No foreign keys to the plan: the RTB log outlives the campaigns and buyers it mentions.
CREATE TABLE rtb_reservations (
    uuid          TEXT    PRIMARY KEY NOT NULL,
    campaign_id   TEXT    NOT NULL,
    caller_number TEXT,              -- E.164; NULL for a ping without one (nothing to claim)
    buyer_id      TEXT    NOT NULL,
    payout_cents  INTEGER NOT NULL,
    seconds       INTEGER NOT NULL,
    inbound_number TEXT   NOT NULL,
    reserved_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    claimed_at_ms INTEGER,
    call_sid      TEXT               -- the call that claimed it
);
-- Start-up reloads the reservations not expired.
CREATE INDEX rtb_reservations_expiry ON rtb_reservations (expires_at_ms);

CREATE TABLE rtb_pings (
    id             TEXT    PRIMARY KEY NOT NULL,  -- UUIDv7: sorts by arrival
    received_at_ms INTEGER NOT NULL,
    campaign_id    TEXT    NOT NULL,
    publisher_id   TEXT,
    caller_number  TEXT,                          -- E.164, when it was one
    request        TEXT    NOT NULL,              -- JSON object: every parameter but the key
    outcome        TEXT    NOT NULL CHECK (outcome IN ('reserved', 'no-target', 'rejected')),
    cached         INTEGER NOT NULL CHECK (cached IN (0, 1)),
    reason         TEXT,                          -- no-target reason or error code
    reservation    TEXT,                          -- rtb_reservations.uuid
    answer         TEXT    NOT NULL               -- JSON: the body returned
);
CREATE INDEX rtb_pings_campaign ON rtb_pings (campaign_id, id);
CREATE INDEX rtb_pings_publisher ON rtb_pings (publisher_id, id);
CREATE INDEX rtb_pings_caller ON rtb_pings (caller_number, id);
CREATE INDEX rtb_pings_received ON rtb_pings (received_at_ms);
