-- Issue 28: exactly once per client request. A tenant's request sent with an
-- `Idempotency-Key` header has its first answer kept here, written in the transaction
-- that keeps the call's effects (usage, key-value changes, log lines): the answer exists
-- if and only if the effects do. A retry with the same key (on any replica) gets this
-- answer and runs nothing; the same key with another request (`fingerprint`: a SHA-256
-- of what was asked) is refused. Keys are the tenant's own; the log sweep forgets them
-- after the retention (24 h).
CREATE TABLE idempotency_keys (
    tenant       TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    call_id      TEXT NOT NULL,
    answer       TEXT NOT NULL,
    at_ms        BIGINT NOT NULL,
    PRIMARY KEY (tenant, idem_key)
);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys(at_ms);
