-- Bytes each key-value scope holds (key bytes + value bytes per entry), kept by the
-- writer that applies a call's changes: the quota is checked against this row and the
-- sizes of the changed keys, never by re-reading the whole scope.
CREATE TABLE kv_usage (
    tenant       TEXT NOT NULL,
    installation TEXT NOT NULL,
    bytes        BIGINT NOT NULL,
    PRIMARY KEY (tenant, installation)
);
INSERT INTO kv_usage (tenant, installation, bytes)
    SELECT tenant, installation, SUM(octet_length(key) + octet_length(value)) FROM kv GROUP BY tenant, installation;

-- Bytes of an installation's kept log lines, kept by the writing transaction beside
-- `log_seq`: trimming to the byte bound reads only the lines it removes.
ALTER TABLE installations ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE installations SET log_bytes = COALESCE(
    (SELECT SUM(bytes) FROM installation_logs l WHERE l.tenant = installations.tenant AND l.installation = installations.id),
    0);
