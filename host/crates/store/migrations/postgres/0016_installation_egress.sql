-- The tenant's layer of an installation's outbound HTTP (issue 26): switched off, or
-- narrowed to some of the destinations the app declares (a JSON list of them as the
-- manifest writes them; NULL: every declared destination). No row: on, not narrowed.
-- Removed with the installation's other data.
CREATE TABLE installation_egress (
    tenant TEXT NOT NULL,
    installation TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    destinations TEXT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, installation)
);
