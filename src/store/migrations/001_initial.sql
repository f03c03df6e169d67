-- Migration 1: the schema as it stood before migrations were versioned (tramy up to issue #7).
-- Every statement says IF NOT EXISTS because a data folder from before this migration has no
-- user_version yet (0) but may hold any earlier state of these tables (instance_damage and
-- instances_sop_class came late): this migration brings each of them to the same schema.
-- Never edit this file: add the next migration instead (see migrations.rs).
CREATE TABLE IF NOT EXISTS patients (
    id INTEGER PRIMARY KEY,
    patient_key TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    patient_name_norm TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    sex TEXT NOT NULL,
    num_studies INTEGER NOT NULL DEFAULT 0,
    num_series INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS patients_patient_id ON patients(patient_id);
CREATE INDEX IF NOT EXISTS patients_name ON patients(patient_name_norm);

CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    study_instance_uid TEXT NOT NULL UNIQUE,
    patient_fk INTEGER NOT NULL REFERENCES patients(id),
    study_date TEXT NOT NULL,
    study_time TEXT NOT NULL,
    accession_number TEXT NOT NULL,
    study_id TEXT NOT NULL,
    referring_physician_name TEXT NOT NULL,
    referring_physician_name_norm TEXT NOT NULL,
    study_description TEXT NOT NULL,
    modalities_in_study TEXT NOT NULL DEFAULT '',
    num_series INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_patient ON studies(patient_fk);
CREATE INDEX IF NOT EXISTS studies_date ON studies(study_date);
CREATE INDEX IF NOT EXISTS studies_accession ON studies(accession_number);

CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    series_instance_uid TEXT NOT NULL UNIQUE,
    study_fk INTEGER NOT NULL REFERENCES studies(id),
    modality TEXT NOT NULL,
    series_number INTEGER,
    series_description TEXT NOT NULL,
    body_part_examined TEXT NOT NULL,
    series_date TEXT NOT NULL,
    series_time TEXT NOT NULL,
    num_instances INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_fk);
CREATE INDEX IF NOT EXISTS series_modality ON series(modality);

CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL UNIQUE,
    series_fk INTEGER NOT NULL REFERENCES series(id),
    sop_class_uid TEXT NOT NULL,
    instance_number INTEGER,
    rows INTEGER,
    columns INTEGER,
    number_of_frames INTEGER,
    transfer_syntax_uid TEXT NOT NULL,
    object_key TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    source_address TEXT NOT NULL,
    metadata_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_fk);

CREATE TABLE IF NOT EXISTS triage_jobs (
    id INTEGER PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL,
    model TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    UNIQUE (sop_instance_uid, model)
);
CREATE INDEX IF NOT EXISTS triage_jobs_ready ON triage_jobs(state, priority DESC, id);

CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    frame INTEGER NOT NULL DEFAULT 0,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    label TEXT NOT NULL,
    probability REAL NOT NULL,
    flagged INTEGER NOT NULL,
    urgency TEXT NOT NULL,
    statement TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (sop_instance_uid, model, label, frame)
);
CREATE INDEX IF NOT EXISTS findings_study ON findings(study_instance_uid);
CREATE INDEX IF NOT EXISTS instances_sop_class ON instances(sop_class_uid);

-- Instances whose stored object failed verification (see store/damage.rs); kept apart from the
-- instance row so a restored object clears the mark without touching what was indexed.
CREATE TABLE IF NOT EXISTS instance_damage (
    sop_instance_uid TEXT PRIMARY KEY,
    problem TEXT NOT NULL,
    reason TEXT NOT NULL,
    detected_at TEXT NOT NULL
);
