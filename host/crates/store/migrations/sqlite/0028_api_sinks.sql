-- Issue 29: usage sinks set through the API (beside the config file's `[[sinks]]`): the
-- settings as the API took them (JSON, validated), and the signing key sealed with the
-- secrets key (never shown again).
CREATE TABLE api_sinks (
    name       TEXT PRIMARY KEY,
    settings   TEXT NOT NULL,
    secret     BLOB NOT NULL,
    updated_ms BIGINT NOT NULL
);
