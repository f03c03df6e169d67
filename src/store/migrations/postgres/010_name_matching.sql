-- Migration 10 (issue #12), PostgreSQL twin: person names found however they were typed, and
-- link suggestions. Each patient's name as folded words (accents and case folded,
-- src/dicom/person_name.rs), one row per distinct word with the patient's name key beside it
-- (INCLUDEd in the index: a search of several words reads one word's range and checks the
-- others there), so a word-prefix search is an index range on both engines (collation "C": the
-- same bytewise order as SQLite's, whatever the database's collation); the sorted words as one
-- key (`name_key`) and the patient's other IDs, which link suggestions compare. Rows of patients
-- filed before this migration are filled at the next open (`store/names.rs`, `backfill`):
-- folding needs Unicode tables that SQL lacks.
ALTER TABLE patients ADD COLUMN name_key TEXT;
CREATE INDEX patients_name_key ON patients(name_key, birth_date);
CREATE TABLE patient_name_words (
    word       TEXT COLLATE "C" NOT NULL,
    patient_fk BIGINT NOT NULL REFERENCES patients(id),
    name_key   TEXT NOT NULL,
    PRIMARY KEY (word, patient_fk) INCLUDE (name_key)
);
CREATE TABLE patient_other_ids (
    other_id   TEXT NOT NULL,
    patient_fk BIGINT NOT NULL REFERENCES patients(id),
    PRIMARY KEY (other_id, patient_fk)
);
CREATE INDEX patient_other_ids_patient ON patient_other_ids(patient_fk);
