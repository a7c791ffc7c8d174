-- Postback endpoints get stable ids, and queued postbacks name their endpoint by owner and id
-- (no longer by its position in the owner's list, which a reorder or a removal shifted onto
-- another endpoint's URL and secret). Each try goes to the endpoint as it is then, its secret
-- read there; a postback whose endpoint is removed, or no longer takes its event, is `cancelled`.

-- 1. Every endpoint stored so far gets an id (a random UUID), in its list's order.
UPDATE buyers SET postbacks = (
    SELECT jsonb_agg(e.value || jsonb_build_object('id', gen_random_uuid()::text) ORDER BY e.n)::text
    FROM jsonb_array_elements(buyers.postbacks::jsonb) WITH ORDINALITY AS e(value, n)
) WHERE postbacks <> '[]';

UPDATE publishers SET postbacks = (
    SELECT jsonb_agg(e.value || jsonb_build_object('id', gen_random_uuid()::text) ORDER BY e.n)::text
    FROM jsonb_array_elements(publishers.postbacks::jsonb) WITH ORDINALITY AS e(value, n)
) WHERE postbacks <> '[]';

-- 2. The outbox: whose endpoint each postback is for, and a status for those never to be sent.
ALTER TABLE postbacks
    ADD COLUMN owner_kind  TEXT CHECK (owner_kind IN ('buyer', 'publisher')),
    ADD COLUMN owner_id    TEXT,
    ADD COLUMN endpoint_id TEXT;               -- NULL: queued before ids, its endpoint unknown (see below)
ALTER TABLE postbacks DROP CONSTRAINT postbacks_status_check;
ALTER TABLE postbacks ADD CONSTRAINT postbacks_status_check
    CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled'));
COMMENT ON COLUMN postbacks.endpoint IS '<owner_kind>:<owner_id>:<endpoint_id> (before ids: :<position>)';
COMMENT ON COLUMN postbacks.url IS 'where the last try went (before any: the URL when queued)';

-- A postback queued so far names `<kind>:<owner id>:<position>`.
UPDATE postbacks SET owner_kind = split_part(endpoint, ':', 1), owner_id = split_part(endpoint, ':', 2);

-- Its endpoint is the owner's endpoint with the URL it was queued to: the one still at its
-- position if that one has it, else the first that has it. Positions alone cannot be trusted
-- (a list reordered since the postback was queued points them at another endpoint); a URL is
-- what the postback was being sent to. One whose URL no endpoint has any more (edited, or the
-- endpoint removed: nothing tells which) keeps a NULL endpoint and is delivered as before this
-- migration, to the URL and with the secret it was queued with, unless its owner is removed.
UPDATE postbacks SET endpoint_id = (
    SELECT e.value ->> 'id'
    FROM jsonb_array_elements(CASE postbacks.owner_kind
        WHEN 'buyer' THEN (SELECT b.postbacks FROM buyers b WHERE b.id = postbacks.owner_id)
        WHEN 'publisher' THEN (SELECT p.postbacks FROM publishers p WHERE p.id = postbacks.owner_id)
    END::jsonb) WITH ORDINALITY AS e(value, n)
    WHERE e.value ->> 'url' = postbacks.url
    ORDER BY e.n - 1 <> split_part(postbacks.endpoint, ':', 3)::bigint, e.n
    LIMIT 1
);

-- The secret is read from the endpoint at each try: no copy of it is kept here (a rotated
-- secret leaves none behind).
ALTER TABLE postbacks ALTER COLUMN secret DROP NOT NULL;
UPDATE postbacks SET secret = NULL WHERE endpoint_id IS NOT NULL;
COMMENT ON COLUMN postbacks.secret IS 'only for a NULL endpoint_id: the secret when queued';

ALTER TABLE postbacks ALTER COLUMN owner_kind SET NOT NULL, ALTER COLUMN owner_id SET NOT NULL;
-- What is queued for an owner's endpoints: cancelled when they go.
CREATE INDEX postbacks_owner ON postbacks (owner_id, status);
