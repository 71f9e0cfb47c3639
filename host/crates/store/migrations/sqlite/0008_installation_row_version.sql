-- Concurrency-safe lifecycle: every write of an installation (configure, upgrade,
-- uninstall) applies only if the row is still at the version its writer read, and bumps
-- it; a request that lost the race writes nothing and is told so (409).
ALTER TABLE installations ADD COLUMN row_version BIGINT NOT NULL DEFAULT 0;
