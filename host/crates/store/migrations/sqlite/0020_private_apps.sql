-- Issue 30: tenants' own apps. A tenant's private apps live in the namespace `~tenant`
-- (a row of `partners`, so apps, certificates, quarantine and the partner row lock
-- work for them as for a partner's apps; no partner name can start with `~`).
--
-- The operator's switch: one row per tenant, or tenant '' for every tenant without a
-- row of its own. `open_ranges` (JSON array of CIDR ranges) are the non-public
-- addresses the tenant's registries may resolve to; `plain_http` lets its registries
-- be plain HTTP (an on-premises registry without TLS); `limits` (JSON, as
-- limit_layers) caps each of the tenant's private apps.
CREATE TABLE private_app_policies (
    tenant      TEXT PRIMARY KEY,
    enabled     BIGINT NOT NULL,
    max_apps    BIGINT NOT NULL,
    open_ranges TEXT NOT NULL,
    plain_http  BIGINT NOT NULL,
    limits      TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
-- Registries a tenant connected for its private apps; credentials sealed (write-only).
CREATE TABLE tenant_registries (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    host        TEXT NOT NULL,
    insecure    BIGINT NOT NULL,
    ca_pem      TEXT,
    username    TEXT,
    secret      BLOB,
    blob_hosts  TEXT NOT NULL,
    token_hosts TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant, host)
);
