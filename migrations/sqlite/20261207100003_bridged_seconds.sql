-- Conversion seconds count from the bridge: when the buyer picked up, when the caller was put
-- through to it (after its whisper, its press-1 prompt, machine detection), and how long they
-- talked from then on (what a buyer's conversion_seconds is measured against).

ALTER TABLE call_attempts ADD COLUMN picked_up_at_ms BIGINT;
ALTER TABLE call_attempts ADD COLUMN bridged_at_ms BIGINT;
ALTER TABLE call_attempts ADD COLUMN bridged_seconds BIGINT;
-- Dials settled before: nothing is known of their bridge; they talked what the provider said.
UPDATE call_attempts SET bridged_seconds = connected_seconds WHERE connected_seconds IS NOT NULL;
