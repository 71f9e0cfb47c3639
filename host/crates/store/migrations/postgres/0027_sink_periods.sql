-- Issue 29: sinks that take aggregates (AWS BatchMeterUsage takes one record per customer,
-- dimension and hour) send each period once. `period_ms` is the start of the first
-- period not yet sent: an event recorded in a period already sent counts in this one.
ALTER TABLE sink_cursors ADD COLUMN period_ms BIGINT NOT NULL DEFAULT 0;
