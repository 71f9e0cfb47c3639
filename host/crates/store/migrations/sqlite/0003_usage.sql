-- The metering ledger (SPEC §7): every usage event once per (source, idempotency key).
CREATE TABLE usage_events (
    source       TEXT NOT NULL,              -- host | guest | report | partner
    idem_key     TEXT NOT NULL,
    tenant       TEXT NOT NULL,
    installation TEXT NOT NULL,
    app          TEXT NOT NULL,
    version      TEXT NOT NULL,
    sku          TEXT NOT NULL,
    quantity     BIGINT NOT NULL,
    at_ms        BIGINT NOT NULL,            -- when the usage happened
    recorded_ms  BIGINT NOT NULL,            -- when the ledger committed it
    PRIMARY KEY (source, idem_key)
);
CREATE INDEX usage_by_tenant ON usage_events (tenant, at_ms);
CREATE INDEX usage_by_app ON usage_events (app, at_ms);
