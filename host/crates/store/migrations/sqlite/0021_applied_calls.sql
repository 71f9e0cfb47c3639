-- Issue 31: a call's effects apply at most once. The ledger's group transaction records
-- the id of every call whose key-value changes and lines it applies; a submitter written
-- again after a failed group (its COMMIT may have landed with only the reply lost) finds
-- its id here and applies nothing twice. On PostgreSQL the insert of an id another
-- transaction holds waits for that transaction, so even a COMMIT still in flight is seen.
-- Kept for an hour (the log sweep forgets older ids): retries come within seconds.
CREATE TABLE applied_calls (
    call_id TEXT PRIMARY KEY,
    at_ms   BIGINT NOT NULL
);
CREATE INDEX applied_calls_by_time ON applied_calls(at_ms);
