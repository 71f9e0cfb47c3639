-- Guest log lines per installation, in the database so every replica serves them.
-- `seq` is the installation's own cursor: handed out by bumping `installations.log_seq`,
-- which also takes the installation's row lock, so the writers of one installation
-- commit in cursor order (a reader never skips a line committed late) and nothing is
-- written for an installation that is gone.
ALTER TABLE installations ADD COLUMN log_seq BIGINT NOT NULL DEFAULT 0;
CREATE TABLE installation_logs (
    tenant       TEXT NOT NULL,
    installation TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    at_ms        BIGINT NOT NULL,
    call_id      TEXT NOT NULL,
    operation    TEXT NOT NULL,
    level        TEXT NOT NULL,
    message      TEXT NOT NULL,
    bytes        BIGINT NOT NULL,   -- UTF-8 length of message, for the per-installation bound
    PRIMARY KEY (tenant, installation, seq)
);
