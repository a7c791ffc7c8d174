-- Several nodes on one database: the nodes, and the concurrency slots they hold for buyers.

-- Each node that ran, with where the provider reaches it: another node accepts callbacks
-- signed for that URL (the load balancer sends them there when the node is gone).
CREATE TABLE cluster_nodes (
    node_id       TEXT   PRIMARY KEY,
    public_url    TEXT   NOT NULL,
    started_at_ms BIGINT NOT NULL,
    seen_at_ms    BIGINT NOT NULL
);

-- A leg's concurrency slot while nodes share the buyers' caps: taken (atomically, per buyer)
-- before the leg is dialed, freed in the transaction that saves the leg's end, and leased, so
-- that a slot whose end never comes (its node died before saving the leg) frees itself.
CREATE TABLE capacity_slots (
    call_sid      TEXT   NOT NULL,
    attempt       BIGINT NOT NULL,
    buyer_id      TEXT   NOT NULL,
    held_at_ms    BIGINT NOT NULL,
    -- While unanswered: the buyer's ring timeout and a minute. Once the leg is answered, its
    -- answer (in call_attempts) holds it for LEG_LEASE instead.
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (call_sid, attempt)
);
CREATE INDEX capacity_slots_buyer ON capacity_slots (buyer_id);

-- Counting a buyer's connections in a period, at every slot taken.
CREATE INDEX call_attempts_buyer_answered ON call_attempts (buyer_id, answered_at_ms);
