-- Issue 31: tenant quotas. Tenant '' holds the operator's defaults (`[sandbox]
-- tenant-installations` and `tenant-kv-bytes`, written at every start); a tenant's own
-- row may only lower them (`PUT /v1/tenants/{t}/quotas`). NULL: not set here. Enforced
-- in the writing transaction, after the tenant's row is locked: installations per
-- tenant at install, key-value bytes over all the tenant's installations at every
-- commit that grows them.
CREATE TABLE tenant_quotas (
    tenant        TEXT PRIMARY KEY,
    installations BIGINT,
    kv_bytes      BIGINT,
    updated_ms    BIGINT NOT NULL
);
