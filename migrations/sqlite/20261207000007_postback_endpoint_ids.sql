-- Postback endpoints get stable ids, and queued postbacks name their endpoint by owner and id
-- (no longer by its position in the owner's list, which a reorder or a removal shifted onto
-- another endpoint's URL and secret). Each try goes to the endpoint as it is then, its secret
-- read there; a postback whose endpoint is removed, or no longer takes its event, is `cancelled`.

-- 1. Every endpoint stored so far gets an id (a random UUID), in its list's order.
UPDATE buyers SET postbacks = (
    SELECT json_group_array(json_set(e.value, '$.id', lower(
        hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
        || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-'
        || hex(randomblob(6)))))
    FROM (SELECT value FROM json_each(buyers.postbacks) ORDER BY key) e
) WHERE postbacks <> '[]';

UPDATE publishers SET postbacks = (
    SELECT json_group_array(json_set(e.value, '$.id', lower(
        hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
        || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-'
        || hex(randomblob(6)))))
    FROM (SELECT value FROM json_each(publishers.postbacks) ORDER BY key) e
) WHERE postbacks <> '[]';

-- 2. The outbox, rebuilt: SQLite cannot widen the status CHECK in place (nothing refers to this
-- table, so rebuilding it is safe).
CREATE TABLE postbacks_by_id (
    id              TEXT    PRIMARY KEY NOT NULL,      -- also the Idempotency-Key receivers see
    event_key       TEXT    NOT NULL,                  -- call_sid:event:attempt
    endpoint        TEXT    NOT NULL,                  -- <owner_kind>:<owner_id>:<endpoint_id> (before ids: :<position>)
    owner_kind      TEXT    NOT NULL CHECK (owner_kind IN ('buyer', 'publisher')),
    owner_id        TEXT    NOT NULL,
    endpoint_id     TEXT,                              -- NULL: queued before ids, its endpoint unknown (see below)
    event           TEXT    NOT NULL,
    call_sid        TEXT    NOT NULL,
    url             TEXT    NOT NULL,                  -- where the last try went (before any: the URL when queued)
    secret          TEXT,                              -- only for a NULL endpoint_id: the secret when queued
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error      TEXT,
    last_status_code INTEGER,
    created_at_ms   INTEGER NOT NULL,
    delivered_at_ms INTEGER,
    lease_owner     TEXT,                              -- the node delivering it now
    lease_until_ms  INTEGER,
    UNIQUE (event_key, endpoint)
);

-- A postback queued so far names `<kind>:<owner uuid, 36 characters>:<position>`.
INSERT INTO postbacks_by_id (id, event_key, endpoint, owner_kind, owner_id, event, call_sid, url, secret,
    body, status, attempts, next_attempt_at_ms, last_error, last_status_code, created_at_ms,
    delivered_at_ms, lease_owner, lease_until_ms)
SELECT id, event_key, endpoint, substr(endpoint, 1, instr(endpoint, ':') - 1),
    substr(endpoint, instr(endpoint, ':') + 1, 36), event, call_sid, url, secret, body, status, attempts,
    next_attempt_at_ms, last_error, last_status_code, created_at_ms, delivered_at_ms, lease_owner,
    lease_until_ms
FROM postbacks;

-- Its endpoint is the owner's endpoint with the URL it was queued to: the one still at its
-- position if that one has it, else the first that has it. Positions alone cannot be trusted
-- (a list reordered since the postback was queued points them at another endpoint); a URL is
-- what the postback was being sent to. One whose URL no endpoint has any more (edited, or the
-- endpoint removed: nothing tells which) keeps a NULL endpoint and is delivered as before this
-- migration, to the URL and with the secret it was queued with, unless its owner is removed.
CREATE TEMP VIEW queued_endpoints AS
SELECT q.id, e.key AS position, e.value ->> 'id' AS endpoint_id,
    CAST(substr(q.endpoint, instr(q.endpoint, ':') + 38) AS INTEGER) AS queued_position
FROM postbacks_by_id q, json_each(CASE q.owner_kind
    WHEN 'buyer' THEN (SELECT b.postbacks FROM buyers b WHERE b.id = q.owner_id)
    WHEN 'publisher' THEN (SELECT p.postbacks FROM publishers p WHERE p.id = q.owner_id)
END) e
WHERE e.value ->> 'url' = q.url;

UPDATE postbacks_by_id SET endpoint_id = COALESCE(
    (SELECT endpoint_id FROM queued_endpoints e WHERE e.id = postbacks_by_id.id AND e.position = e.queued_position),
    (SELECT endpoint_id FROM queued_endpoints e WHERE e.id = postbacks_by_id.id ORDER BY e.position LIMIT 1)
);
DROP VIEW queued_endpoints;
-- The secret is read from the endpoint at each try: no copy of it is kept here (a rotated
-- secret leaves none behind).
UPDATE postbacks_by_id SET secret = NULL WHERE endpoint_id IS NOT NULL;

DROP TABLE postbacks;
ALTER TABLE postbacks_by_id RENAME TO postbacks;
CREATE INDEX postbacks_due ON postbacks (status, next_attempt_at_ms);
CREATE INDEX postbacks_call ON postbacks (call_sid);
-- What is queued for an owner's endpoints: cancelled when they go.
CREATE INDEX postbacks_owner ON postbacks (owner_id, status);
