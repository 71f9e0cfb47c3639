-- Registries the operator manages over the API; credentials are sealed (write-only).
CREATE TABLE registries (
    host        TEXT PRIMARY KEY,
    insecure    BIGINT NOT NULL DEFAULT 0,
    ca_pem      TEXT,
    username    TEXT,
    secret      BLOB,            -- sealed JSON {"password"|"token": …}
    updated_ms  BIGINT NOT NULL
);
