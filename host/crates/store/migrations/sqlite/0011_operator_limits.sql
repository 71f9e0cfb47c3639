-- Issue 11, operators in control.
-- Limit layers below the operator's ceilings (the config file), one row per layer:
-- (tenant, app) = ('', '') the operator's defaults, ('', app) an app's cap,
-- (tenant, '') a tenant's override, (tenant, app) a tenant's override for one app.
-- `limits` is the JSON of the values the layer sets (absent = inherit).
CREATE TABLE limit_layers (
    tenant     TEXT NOT NULL,
    app        TEXT NOT NULL,
    limits     TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, app)
);
-- A suspended tenant's calls, installs, configures and upgrades are refused.
ALTER TABLE tenants ADD COLUMN suspended BIGINT NOT NULL DEFAULT 0;
-- A disabled partner registers nothing, its apps leave the catalog and do not run.
ALTER TABLE partners ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;
