-- What a window's collection found (records accepted and refused, or why it failed), kept
-- on the window: the audit log holds one summary row per collection pass instead of a
-- row per window (issue 12), and tenants read the details per installation.
ALTER TABLE usage_windows ADD COLUMN detail TEXT;
