-- Issue 29: usage pushed to billing systems, derived from the ledger (no second source
-- of truth). Every usage event gets `seq`, a number in commit order: the ledger's group
-- takes its numbers from the one `usage_seq` row just before its insert, and that row
-- stays locked until the group commits, so a number is visible only after every smaller
-- one is (or never will be). A sink's cursor is a `seq`: everything at or below it was
-- acknowledged by the sink's receiver or parked.
ALTER TABLE usage_events ADD COLUMN seq BIGINT;
UPDATE usage_events SET seq = numbered.n
FROM (
    SELECT source AS s, idem_key AS k, row_number() OVER (ORDER BY recorded_ms, source, idem_key) AS n
    FROM usage_events
) AS numbered
WHERE numbered.s = usage_events.source AND numbered.k = usage_events.idem_key;
-- A binary from before this migration cannot insert an unnumbered event (it would never be
-- exported): every replica runs this version or none does.
ALTER TABLE usage_events ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX usage_by_seq ON usage_events (seq);
CREATE TABLE usage_seq (
    id   INTEGER PRIMARY KEY,
    next BIGINT NOT NULL
);
INSERT INTO usage_seq (id, next) SELECT 1, COALESCE(MAX(seq), 0) FROM usage_events;

-- One row per configured sink: its cursor, the replica pushing it (a lease), and how
-- its last push went.
CREATE TABLE sink_cursors (
    sink            TEXT PRIMARY KEY,
    cursor          BIGINT NOT NULL,
    leased_by       TEXT,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    last_success_ms BIGINT,
    last_error      TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL DEFAULT 0,
    sent            BIGINT NOT NULL DEFAULT 0
);

-- Events a sink's receiver refused for good, or that its mapping cannot name: kept with
-- the reason until the operator re-drives them (after fixing the mapping).
CREATE TABLE sink_parked (
    sink      TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    reason    TEXT NOT NULL,
    parked_ms BIGINT NOT NULL,
    redrive   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (sink, seq)
);
