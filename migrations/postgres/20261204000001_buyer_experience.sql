-- What the buyer hears and sees (caller ID, whisper, press-1 screening, recording, ringback),
-- where callers may come from (states, area codes), and each company's block list.

ALTER TABLE buyers ADD COLUMN caller_id  TEXT NOT NULL DEFAULT 'caller';  -- caller, tracking_number or +E.164
ALTER TABLE buyers ADD COLUMN whisper    TEXT;                            -- JSON {"say": …} or {"play": …}
ALTER TABLE buyers ADD COLUMN screen     TEXT NOT NULL DEFAULT 'none' CHECK (screen IN ('none', 'press-1'));
ALTER TABLE buyers ADD COLUMN record     TEXT CHECK (record IN ('off', 'from-answer', 'from-ringing'));  -- NULL: the campaign's
ALTER TABLE buyers ADD COLUMN states     TEXT;                            -- JSON array of USPS codes; NULL: anywhere
ALTER TABLE buyers ADD COLUMN area_codes TEXT;                            -- JSON {"allow": […], "deny": […]}; NULL: any

ALTER TABLE campaigns ADD COLUMN answer_on_bridge BIGINT NOT NULL DEFAULT 1 CHECK (answer_on_bridge IN (0, 1));
ALTER TABLE campaigns ADD COLUMN record           TEXT NOT NULL DEFAULT 'off' CHECK (record IN ('off', 'from-answer', 'from-ringing'));
ALTER TABLE campaigns ADD COLUMN whisper          TEXT;

-- The caller's US state (provider's FromState, else the area code's) and the call's recordings.
ALTER TABLE calls ADD COLUMN caller_state TEXT;
ALTER TABLE calls ADD COLUMN recordings   TEXT NOT NULL DEFAULT '[]';     -- JSON [{"attempt", "sid", "url", …}]
-- A screened attempt: pending, accepted, refused or no_key.
ALTER TABLE call_attempts ADD COLUMN screening TEXT;

CREATE TABLE blocked_callers (
    id            TEXT   PRIMARY KEY NOT NULL,
    company_id    TEXT   NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    pattern       TEXT   NOT NULL,                                        -- +E.164, or a prefix ending in *
    reason        TEXT,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (company_id, pattern)
);
