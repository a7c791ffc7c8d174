-- Provider fidelity: SIP buyers' digest credentials, answering-machine screening, and a buyer
-- leg's own duration (from its status callback, in case the dial's action is lost).

ALTER TABLE buyers ADD COLUMN sip_auth TEXT;                              -- JSON {"username", "password"}
ALTER TABLE call_attempts ADD COLUMN leg_seconds INTEGER;                 -- CallDuration of the leg's completed callback

-- How a buyer's calls are screened, now also by answering machine detection. It replaces
-- `screen`, whose CHECK SQLite cannot widen in place (that would take rebuilding the table
-- under every foreign key to it); `screen` is no longer read or written.
ALTER TABLE buyers ADD COLUMN screen_mode TEXT NOT NULL DEFAULT 'none'
    CHECK (screen_mode IN ('none', 'press-1', 'machine-detection'));
UPDATE buyers SET screen_mode = screen;
