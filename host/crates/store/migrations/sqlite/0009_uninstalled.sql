-- Installations that were removed, as facts (not parsed back out of audit text): usage
-- a partner reports later for the time an installation existed is still accepted.
CREATE TABLE uninstalled (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    app TEXT NOT NULL,
    version TEXT NOT NULL,
    removed_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX uninstalled_by_app ON uninstalled (tenant, app, removed_ms);
