-- Issue 31: the share of collection work a tenant's installations may take: percent
-- (1-100) of the collector's concurrent report calls on a replica. Tenant '' holds the
-- operator's (`[sandbox] tenant-collection-share`, written at every start); a tenant's
-- own may only be lower. NULL: not set here. Read once per collection pass.
ALTER TABLE tenant_quotas ADD COLUMN collection_share BIGINT;
