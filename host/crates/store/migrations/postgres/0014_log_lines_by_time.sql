-- The oldest log lines across all installations, for the global byte bound
-- (`[logs] max-bytes-total`): the sweep reads them in this order, never the whole table.
CREATE INDEX installation_logs_by_time ON installation_logs (at_ms);
-- One replica trims at a time.
INSERT INTO pass_leases (name, lease_until) VALUES ('log-trim', 0);
