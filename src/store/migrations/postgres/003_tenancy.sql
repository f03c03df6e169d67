-- Migration 3 (issue #9): every instance belongs to the facility that sent it; patients'
-- consents; referral grants and share links; links of provisional patients to identified ones.
-- Times are RFC 3339 UTC text with milliseconds (`2026-11-30T04:00:00.000Z`), so text order is
-- time order; study dates are DICOM DA (YYYYMMDD).

-- Instances filed before facilities existed belong to the first facility, LOCAL.
ALTER TABLE instances ADD COLUMN facility TEXT NOT NULL DEFAULT 'LOCAL';

-- Which facilities hold instances of a study: the scoping of study, series and patient queries
-- probes this instead of every instance.
CREATE TABLE study_facilities (
    study_fk BIGINT NOT NULL REFERENCES studies(id),
    facility TEXT NOT NULL,
    PRIMARY KEY (study_fk, facility)
);
CREATE INDEX study_facilities_facility ON study_facilities(facility, study_fk);
INSERT INTO study_facilities (study_fk, facility)
    SELECT DISTINCT se.study_fk, i.facility FROM instances i JOIN series se ON i.series_fk = se.id
    ON CONFLICT DO NOTHING;

-- A patient's consent (Decree 13/2023): for what, to whom, how long, on what evidence.
CREATE TABLE consents (
    id               TEXT PRIMARY KEY,
    patient_fk       BIGINT NOT NULL REFERENCES patients(id),
    purpose          TEXT NOT NULL CHECK (purpose IN ('referral', 'research', 'emergency')),
    recipient        TEXT REFERENCES facilities(code),     -- NULL: any facility
    valid_from       TEXT NOT NULL,
    valid_until      TEXT,                                 -- NULL: until revoked
    source           TEXT NOT NULL CHECK (source IN ('vneid', 'paper', 'verbal')),
    evidence         TEXT NOT NULL DEFAULT '',
    recorded_by      TEXT NOT NULL,                        -- the principal's subject
    recorded_facility TEXT,
    recorded_at      TEXT NOT NULL,
    revoked_at       TEXT,
    revoked_by       TEXT
);
CREATE INDEX consents_patient ON consents(patient_fk);

-- A grant lets `to_facility` see one study, or a patient's studies since a date, of
-- `from_facility`, under a consent or as break-glass. A share link is a grant with no
-- recipient facility and a token of its own (only its SHA-256 is kept).
CREATE TABLE grants (
    id                 TEXT PRIMARY KEY,
    from_facility      TEXT NOT NULL REFERENCES facilities(code),
    to_facility        TEXT REFERENCES facilities(code),
    study_instance_uid TEXT,
    patient_fk         BIGINT REFERENCES patients(id),
    since              TEXT,                               -- YYYYMMDD, patient grants only
    scope_metadata     BIGINT NOT NULL,
    scope_images       BIGINT NOT NULL,
    scope_findings     BIGINT NOT NULL,
    purpose            TEXT NOT NULL CHECK (purpose IN ('referral', 'research', 'emergency')),
    expires_at         TEXT NOT NULL,
    consent_id         TEXT REFERENCES consents(id),
    break_glass_reason TEXT,
    share_token_hash   TEXT UNIQUE,
    created_by         TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    revoked_at         TEXT,
    revoked_by         TEXT,
    CHECK ((study_instance_uid IS NULL) <> (patient_fk IS NULL)),
    CHECK ((consent_id IS NULL) <> (break_glass_reason IS NULL)),
    CHECK ((to_facility IS NULL) = (share_token_hash IS NOT NULL))
);
CREATE INDEX grants_to_facility ON grants(to_facility);
CREATE INDEX grants_from_facility ON grants(from_facility);

-- A provisional patient (arrived without an ID) linked to an identified one; undone by
-- setting unlinked_at. At most one live link per provisional patient.
CREATE TABLE patient_links (
    id             TEXT PRIMARY KEY,
    provisional_fk BIGINT NOT NULL REFERENCES patients(id),
    patient_fk     BIGINT NOT NULL REFERENCES patients(id),
    linked_by      TEXT NOT NULL,
    linked_at      TEXT NOT NULL,
    unlinked_at    TEXT,
    unlinked_by    TEXT
);
CREATE UNIQUE INDEX patient_links_live ON patient_links(provisional_fk) WHERE unlinked_at IS NULL;
CREATE INDEX patient_links_patient ON patient_links(patient_fk);

-- The studies each live grant covers, with what decides whether it is in force now (the
-- caller compares the times): not revoked, its consent not revoked.
CREATE VIEW grant_studies AS
SELECT g.id AS grant_id, g.to_facility, g.from_facility, g.purpose,
       g.scope_metadata, g.scope_images, g.scope_findings, g.expires_at, g.share_token_hash,
       c.valid_from AS consent_from, c.valid_until AS consent_until,
       s.id AS study_fk
FROM grants g
JOIN study_facilities sf ON sf.facility = g.from_facility
JOIN studies s ON s.id = sf.study_fk
LEFT JOIN consents c ON c.id = g.consent_id
WHERE g.revoked_at IS NULL
  AND (g.consent_id IS NULL OR c.revoked_at IS NULL)
  AND (s.study_instance_uid = g.study_instance_uid
       OR (g.patient_fk IS NOT NULL
           AND (g.since IS NULL OR s.study_date >= g.since)
           AND (s.patient_fk = g.patient_fk
                OR s.patient_fk IN (SELECT l.provisional_fk FROM patient_links l
                                    WHERE l.patient_fk = g.patient_fk AND l.unlinked_at IS NULL))));
