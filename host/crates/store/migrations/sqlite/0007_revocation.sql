-- Trust revocation (SPEC §2 step 6, §8): a certificate revoked or removed quarantines
-- every version it signed; the operator yanks, quarantines and releases versions;
-- tokens can expire. Booleans are integers 0/1.
ALTER TABLE versions ADD COLUMN quarantined BIGINT NOT NULL DEFAULT 0;
ALTER TABLE versions ADD COLUMN quarantine_reason TEXT;
ALTER TABLE versions ADD COLUMN quarantined_ms BIGINT;
CREATE INDEX versions_by_signer ON versions (signer);
-- A certificate whose versions were quarantined because it was revoked, removed over the
-- API, or found missing (no longer registered, e.g. gone from the config file): the
-- quarantine is applied once per fingerprint (an operator's release sticks), and a
-- version registered later with that signer starts quarantined.
CREATE TABLE distrusted_certs (
    fingerprint TEXT PRIMARY KEY,
    partner     TEXT NOT NULL REFERENCES partners(name),
    state       TEXT NOT NULL CHECK (state IN ('revoked', 'removed', 'missing')),
    reason      TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);
-- Tokens may expire (NULL: never).
ALTER TABLE tokens ADD COLUMN expires_ms BIGINT;
