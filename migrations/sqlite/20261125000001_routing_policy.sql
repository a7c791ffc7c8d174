-- Routing policy: a buyer's own time zone (business hours and cap periods are in it), operator
-- resets of cap counters, and indexes for rebuilding cap counters and live legs at start-up.

ALTER TABLE buyers ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
-- Business hours used to carry the time zone; it moves to the buyer.
UPDATE buyers
   SET time_zone = COALESCE(json_extract(business_hours, '$.time_zone'), 'UTC'),
       business_hours = json_remove(business_hours, '$.time_zone')
 WHERE business_hours IS NOT NULL;

-- Counting for a cap restarts at its reset (until the cap's next period begins anyway).
CREATE TABLE cap_resets (
    buyer_id    TEXT    NOT NULL REFERENCES buyers (id) ON DELETE CASCADE,
    cap         TEXT    NOT NULL CHECK (cap IN ('hourly', 'daily', 'monthly', 'lifetime')),
    reset_at_ms INTEGER NOT NULL,
    PRIMARY KEY (buyer_id, cap)
);

CREATE INDEX call_attempts_answered ON call_attempts (answered_at_ms) WHERE answered_at_ms IS NOT NULL;
CREATE INDEX call_attempts_open ON call_attempts (started_at_ms) WHERE dial_status IS NULL;
CREATE INDEX conversions_at ON conversions (converted_at_ms);
