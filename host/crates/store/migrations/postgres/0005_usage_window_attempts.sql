-- Bounded retries of usage collection: a failing report is retried with backoff
-- (lease_until doubles as the next attempt's time) and, after the last attempt,
-- marked failed (done = 2) with its last error, for the operator to see.
ALTER TABLE usage_windows ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_windows ADD COLUMN last_error TEXT;
