-- The registry (issue #9): facilities (tenants), the AE titles that speak for them, and tramy's
-- own API tokens (only their SHA-256 is kept). Times are RFC 3339 UTC text, as elsewhere.

CREATE TABLE facilities (
    code       TEXT PRIMARY KEY,            -- the national facility code
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('commune_station', 'hospital', 'hub')),
    parent     TEXT REFERENCES facilities(code),  -- referral parent
    created_at TEXT NOT NULL
);

CREATE TABLE application_entities (
    ae_title   TEXT PRIMARY KEY,
    facility   TEXT NOT NULL REFERENCES facilities(code),
    host       TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX application_entities_facility ON application_entities(facility);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,          -- the public id inside the token
    hash         TEXT NOT NULL,             -- SHA-256 of the whole token, hex
    facility     TEXT REFERENCES facilities(code),  -- NULL only for a superadmin token
    role         TEXT NOT NULL CHECK (role IN ('admin', 'clinician', 'modality', 'researcher', 'node', 'superadmin')),
    name         TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT,
    CHECK ((role = 'superadmin') = (facility IS NULL))
);
CREATE INDEX api_tokens_facility ON api_tokens(facility);
