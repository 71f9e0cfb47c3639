-- Bytes each key-value scope holds (key bytes + value bytes per entry), kept by the
-- writer that applies a call's changes: the quota is checked against this row and the
-- sizes of the changed keys, never by re-reading the whole scope.
CREATE TABLE kv_usage (
    tenant       TEXT NOT NULL,
    installation TEXT NOT NULL,
    bytes        INTEGER NOT NULL,
    PRIMARY KEY (tenant, installation)
);
INSERT INTO kv_usage (tenant, installation, bytes)
    SELECT tenant, installation, SUM(length(CAST(key AS BLOB)) + length(value)) FROM kv GROUP BY tenant, installation;
