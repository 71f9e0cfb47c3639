-- Kiosk schema v1 (SQLite). Times are milliseconds since the Unix epoch.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,       -- SHA-256 of the secret; the secret is never stored
    role        TEXT NOT NULL CHECK (role IN ('operator', 'partner', 'tenant')),
    scope       TEXT,                        -- partner name or tenant id; NULL for operator
    label       TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    revoked     BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE partners (
    name        TEXT PRIMARY KEY,
    display     TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE partner_certs (
    fingerprint TEXT PRIMARY KEY,
    partner     TEXT NOT NULL REFERENCES partners(name),
    cert        BLOB NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    display     TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE apps (
    id          TEXT PRIMARY KEY,            -- partner/name
    partner     TEXT NOT NULL REFERENCES partners(name),
    display     TEXT NOT NULL,
    description TEXT NOT NULL,
    categories  TEXT NOT NULL,               -- JSON array
    created_ms  BIGINT NOT NULL
);
CREATE TABLE components (
    digest      TEXT PRIMARY KEY,
    bytes       BLOB NOT NULL
);
CREATE TABLE versions (
    app              TEXT NOT NULL REFERENCES apps(id),
    version          TEXT NOT NULL,
    major            BIGINT NOT NULL,
    minor            BIGINT NOT NULL,
    patch            BIGINT NOT NULL,
    prerelease       TEXT NOT NULL,
    manifest         TEXT NOT NULL,          -- the app manifest JSON as signed
    manifest_digest  TEXT NOT NULL,          -- OCI manifest digest: the pin
    component_digest TEXT NOT NULL REFERENCES components(digest),
    signer           TEXT NOT NULL,
    reference        TEXT NOT NULL,
    yanked           BIGINT NOT NULL DEFAULT 0,
    created_ms       BIGINT NOT NULL,
    PRIMARY KEY (app, version)
);
CREATE TABLE entitlements (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    app         TEXT NOT NULL REFERENCES apps(id),
    expires_ms  BIGINT,
    revoked     BIGINT NOT NULL DEFAULT 0,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant, app)
);
CREATE TABLE installations (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    app         TEXT NOT NULL,
    version     TEXT NOT NULL,
    config      TEXT NOT NULL,               -- JSON without writeOnly values
    secrets     BLOB NOT NULL,               -- AES-256-GCM sealed JSON of writeOnly values
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    FOREIGN KEY (app, version) REFERENCES versions(app, version)
);
CREATE INDEX installations_by_tenant ON installations(tenant);
CREATE TABLE kv (
    tenant       TEXT NOT NULL,
    installation TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        BLOB NOT NULL,
    PRIMARY KEY (tenant, installation, key)
);
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
