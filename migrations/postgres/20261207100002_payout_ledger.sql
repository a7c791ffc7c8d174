-- Publishers' payouts as a ledger: a row per payout paid and, later, per payout reversed (a
-- reversal never edits the row it reverses). A caller's mark for a publisher is its latest
-- paid row not reversed; whether a call may earn the publisher a payout is decided against it
-- and written in one step, in the store every node shares (see PayoutStore::pay_once).

CREATE TABLE publisher_payouts (
    id            TEXT   NOT NULL PRIMARY KEY,   -- "<call_sid>:<publisher_id>:paid" for a payment
    call_sid      TEXT   NOT NULL,
    publisher_id  TEXT   NOT NULL,
    caller_number TEXT,                          -- NULL: a withheld caller, never a repeat
    amount_cents  BIGINT NOT NULL,
    kind          TEXT   NOT NULL CHECK (kind IN ('paid', 'reversed')),
    reverses      TEXT,                          -- the paid row a reversal reverses
    at_ms         BIGINT NOT NULL
);
CREATE INDEX publisher_payouts_mark ON publisher_payouts (caller_number, publisher_id, at_ms);
CREATE INDEX publisher_payouts_reverses ON publisher_payouts (reverses);

-- Payouts settled before the ledger: each call's, as of its end (or its last change).
INSERT INTO publisher_payouts (id, call_sid, publisher_id, caller_number, amount_cents, kind, at_ms)
SELECT call_sid || ':' || publisher_id || ':paid', call_sid, publisher_id, caller_number,
       publisher_payout_cents, 'paid', COALESCE(ended_at_ms, state_changed_at_ms)
FROM calls
WHERE publisher_id IS NOT NULL AND publisher_payout_cents > 0;

-- Ended calls whose publisher's payout is not settled yet (its store did not answer in time):
-- the reaper settles them.
CREATE INDEX calls_unsettled ON calls (ended_at_ms)
    WHERE publisher_id IS NOT NULL AND publisher_payout_cents IS NULL AND state = 'ended';
