-- Operators in control (issue 11): registry watches, the outcome of every tag a watch
-- took, installation upgrade policies, and the automatic upgrades that failed (never
-- retried for the same version). Times are ms since the Unix epoch.

-- How far Kiosk upgrades an installation by itself.
ALTER TABLE installations ADD COLUMN upgrade_policy TEXT NOT NULL DEFAULT 'none'
    CHECK (upgrade_policy IN ('none', 'patch', 'minor'));
CREATE INDEX installations_by_upgrade_policy ON installations (upgrade_policy);

-- A repository the operator watches: its semver tags are registered as versions of `app`.
-- A replica polls a due watch (next_poll_ms <= now) only while it holds the lease.
CREATE TABLE watches (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    repository   TEXT NOT NULL,
    app          TEXT NOT NULL,              -- partner/name
    interval_ms  BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    next_poll_ms BIGINT NOT NULL,            -- later after transient failures (backoff)
    leased_by    TEXT,
    lease_until  BIGINT NOT NULL DEFAULT 0,
    failures     BIGINT NOT NULL DEFAULT 0,  -- consecutive polls that could not list tags
    polled_ms    BIGINT,                     -- when the last poll ended
    last_error   TEXT,                       -- why the last poll could not list, Kiosk's words
    last_tags    BIGINT NOT NULL DEFAULT 0,  -- tags the last poll listed
    last_ignored BIGINT NOT NULL DEFAULT 0,  -- of which not versions (not semver), ignored
    UNIQUE (host, repository, app)
);
CREATE INDEX watches_by_next_poll ON watches (next_poll_ms);

-- What became of each semver tag a watch took: registered, refused (never retried) or
-- retrying (a transient failure; not before retry_ms).
CREATE TABLE watch_tags (
    watch     TEXT NOT NULL REFERENCES watches(id),
    tag       TEXT NOT NULL,
    outcome   TEXT NOT NULL CHECK (outcome IN ('registered', 'refused', 'retrying')),
    problem   TEXT,                          -- the problem type of a refusal (signature-refused, …)
    detail    TEXT NOT NULL,
    attempts  BIGINT NOT NULL,
    retry_ms  BIGINT NOT NULL DEFAULT 0,
    at_ms     BIGINT NOT NULL,
    PRIMARY KEY (watch, tag)
);
CREATE INDEX watch_tags_by_time ON watch_tags (watch, at_ms);

-- An automatic upgrade of an installation to a version that failed: not tried again.
CREATE TABLE auto_upgrade_failures (
    installation TEXT NOT NULL,
    version      TEXT NOT NULL,
    reason       TEXT NOT NULL,
    at_ms        BIGINT NOT NULL,
    PRIMARY KEY (installation, version)
);

-- Work one replica at a time does in passes (the automatic-upgrade pass).
CREATE TABLE pass_leases (
    name        TEXT PRIMARY KEY,
    leased_by   TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
INSERT INTO pass_leases (name, lease_until) VALUES ('auto-upgrade', 0);
