-- What readiness writes while the database refuses writes (a full disk), to see them go through
-- again without waiting for traffic: one row, changed at each probe.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY,
    probed_at_ms BIGINT NOT NULL
);
