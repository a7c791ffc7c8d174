-- Money flows: which publisher sent each call and what it earned, the postbacks (outbound
-- webhooks) buyers and publishers are sent, and their outbox.

ALTER TABLE publishers ADD COLUMN numbers   TEXT NOT NULL DEFAULT '[]';  -- JSON array of the tracking numbers given to it
ALTER TABLE publishers ADD COLUMN payout    TEXT;                        -- JSON {"rule", "amount", "seconds", "dedupe_seconds"}
ALTER TABLE publishers ADD COLUMN postbacks TEXT NOT NULL DEFAULT '[]';  -- JSON [{"url", "secret", "events"}]
ALTER TABLE buyers     ADD COLUMN postbacks TEXT NOT NULL DEFAULT '[]';
ALTER TABLE campaigns  ADD COLUMN publisher_payout TEXT;                 -- its publishers' terms, unless they have their own

ALTER TABLE calls ADD COLUMN publisher_id          TEXT;
ALTER TABLE calls ADD COLUMN publisher_duplicate   BIGINT CHECK (publisher_duplicate IN (0, 1));  -- NULL: not judged (nothing earned)
ALTER TABLE calls ADD COLUMN publisher_payout_cents BIGINT;             -- NULL: not settled yet
ALTER TABLE calls ADD COLUMN bid_payout_cents BIGINT;                  -- what the RTB bid it claimed promised its publisher
CREATE INDEX calls_publisher ON calls (publisher_id, started_at_ms);

-- The publisher whose ping made the bid: a call claiming it is that publisher's.
ALTER TABLE rtb_reservations ADD COLUMN publisher_id TEXT;

-- The outbox: written in the transaction that saves the call, delivered by a worker. One row
-- per event and endpoint; `event_key` + `endpoint` make a retried save insert nothing.
CREATE TABLE postbacks (
    id              TEXT    PRIMARY KEY NOT NULL,      -- also the Idempotency-Key receivers see
    event_key       TEXT    NOT NULL,                  -- call_sid:event:attempt
    endpoint        TEXT    NOT NULL,                  -- buyer:<id>:<n> or publisher:<id>:<n>
    event           TEXT    NOT NULL,
    call_sid        TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    last_error      TEXT,
    last_status_code BIGINT,
    created_at_ms   BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    lease_owner     TEXT,                              -- the node delivering it now
    lease_until_ms  BIGINT,
    UNIQUE (event_key, endpoint)
);
CREATE INDEX postbacks_due ON postbacks (status, next_attempt_at_ms);
CREATE INDEX postbacks_call ON postbacks (call_sid);

-- Every node hears of a plan change the moment it commits, whoever made it (a node's API, a
-- CLI import): the news is sent by the database, in the changing transaction, on the channel
-- the nodes of this schema listen on.
CREATE FUNCTION switchboard_plan_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify(
        left('switchboard_news:' || TG_TABLE_SCHEMA, 63),
        json_build_object('from', 'database',
                          'news', json_build_object('plan', json_build_object('revision', NEW.revision)))::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER plan_changed AFTER UPDATE ON plan_revision
    FOR EACH ROW EXECUTE FUNCTION switchboard_plan_changed();
