-- Catalog metadata (SPEC §3). A version's icon layer, verified at registration, is kept
-- once per content digest with its media type (PNG or JPEG), and served as it was
-- signed. A version's publisher (the manifest's `publisher`, JSON) is copied beside it
-- so the catalog lists apps without reading every manifest; the changelog is read from
-- the manifest (versions.manifest). Versions registered before have neither.
CREATE TABLE icons (
    digest      TEXT PRIMARY KEY,
    media_type  TEXT NOT NULL,
    bytes       BYTEA NOT NULL
);
ALTER TABLE versions ADD COLUMN icon_digest TEXT REFERENCES icons(digest);
ALTER TABLE versions ADD COLUMN publisher TEXT;
