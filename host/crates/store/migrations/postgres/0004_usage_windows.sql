-- One row per (installation, usage window): the lease that makes usage.report run once
-- per window across replicas, and survive a replica dying mid-collection.
CREATE TABLE usage_windows (
    installation TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    done         BIGINT NOT NULL DEFAULT 0,
    leased_by    TEXT,
    lease_until  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (installation, window_start)
);
