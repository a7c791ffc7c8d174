-- Turns taken without a call's stored record (the store slow or down, after a restart or on
-- another node) are merged into it, never written over it: what such a record knew of buyers
-- dialed before it (from its callback URL's trail), and which blind turns the store merged
-- already, so that a retried save merges none twice.

ALTER TABLE calls ADD COLUMN dialed_before TEXT NOT NULL DEFAULT '[]';   -- JSON [buyer id]
ALTER TABLE calls ADD COLUMN blind_turns TEXT NOT NULL DEFAULT '[]';     -- JSON [turn key]
