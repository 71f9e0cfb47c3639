-- Issue 31: an uninstall claims the installation before the app's hook runs:
-- `uninstalling` is the time (ms) until which the claim holds, 0 when none does. While it
-- holds, configure and upgrade write nothing and another uninstall is refused before its
-- hook runs, so a losing uninstall never runs the app's hook. A claim whose process died
-- lapses at that time; one whose removal failed is given back (set to 0).
ALTER TABLE installations ADD COLUMN uninstalling BIGINT NOT NULL DEFAULT 0;
