-- Registries are an operator allowlist (SPEC §2 step 5): repository prefixes per
-- partner (JSON object partner -> [prefix]; none: no partner may use the registry),
-- the other hosts the registry may send Kiosk to (JSON arrays: blob storage it
-- redirects to, its token service), and whether its names may resolve to private
-- addresses (an internal registry).
ALTER TABLE registries ADD COLUMN partners TEXT NOT NULL DEFAULT '{}';
ALTER TABLE registries ADD COLUMN blob_hosts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE registries ADD COLUMN token_hosts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE registries ADD COLUMN private_addresses BIGINT NOT NULL DEFAULT 0;
