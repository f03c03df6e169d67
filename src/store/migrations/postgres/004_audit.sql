-- Migration 4 (issue #9 item 9): the audit trail. Every access and change is one row, appended
-- by the index writer in a hash chain: `hash` is SHA-256 over `prev_hash` and a canonical
-- serialization of the row's other fields (version `chain_version`; see `audit::chain`), so
-- `tramy audit verify` detects an edited, inserted or deleted event. Ids are given by the
-- writer (the chain's head plus one, under a lock), so they are contiguous. Times are RFC 3339 UTC with milliseconds.
CREATE TABLE audit_events (
    id                 BIGINT PRIMARY KEY,
    chain_version      BIGINT NOT NULL,
    time               TEXT NOT NULL,
    actor              TEXT NOT NULL,          -- the principal's subject: token:<id>, ae:<AE>, system
    facility           TEXT,                   -- the acting facility's code; NULL: system-wide
    roles              TEXT NOT NULL,          -- role names, comma-separated
    address            TEXT,                   -- the client's network address
    action             TEXT NOT NULL,
    outcome            TEXT NOT NULL,
    study_instance_uid TEXT,
    patient_id         TEXT,                   -- the study's patient when it has an ID, else
    patient_issuer     TEXT,                   --   the patient the event named
    detail             TEXT NOT NULL,
    prev_hash          TEXT NOT NULL,
    hash               TEXT NOT NULL
);
CREATE INDEX audit_events_study ON audit_events(study_instance_uid) WHERE study_instance_uid IS NOT NULL;
CREATE INDEX audit_events_patient ON audit_events(patient_id, patient_issuer) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_events_facility ON audit_events(facility);
CREATE INDEX audit_events_actor ON audit_events(actor);
CREATE INDEX audit_events_time ON audit_events(time);

-- The facilities that held the event's study when it was recorded: a facility's administrator
-- reads the events about its studies, whoever acted. Part of the hashed event.
CREATE TABLE audit_event_facilities (
    facility TEXT NOT NULL,
    event_id BIGINT NOT NULL REFERENCES audit_events(id),
    PRIMARY KEY (facility, event_id)
);

-- How many event ids were ever given (SQLite's sqlite_sequence for AUTOINCREMENT): a deleted
-- newest event still leaves its number behind. Its one row is locked by each append, so the
-- writers of several nodes extend the chain one at a time.
CREATE TABLE audit_head (id BIGINT NOT NULL);
INSERT INTO audit_head (id) VALUES (0);

-- Append-only: the archive never changes or removes an event. (Whoever owns the database can
-- drop these; the chain still shows what they changed.)
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit events are append-only'; END $$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_event_facilities_no_change BEFORE UPDATE OR DELETE ON audit_event_facilities
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
