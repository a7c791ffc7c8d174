-- Supervision: each call's entry campaign (the tracking number's, where its statistics count)
-- and how many buyers it skipped as duplicates, as plain columns so statistics need no JSON.

ALTER TABLE calls ADD COLUMN entry_campaign_id TEXT;
ALTER TABLE calls ADD COLUMN duplicates_avoided INTEGER NOT NULL DEFAULT 0;
UPDATE calls
   SET entry_campaign_id = visited_campaigns::json ->> 0,
       duplicates_avoided = json_array_length(duplicate_buyers::json);

CREATE INDEX calls_entry_campaign ON calls (entry_campaign_id, started_at_ms);
CREATE INDEX calls_buyer ON calls (buyer_id, started_at_ms);
