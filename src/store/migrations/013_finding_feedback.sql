-- Migration 13 (issue #15): a clinician's verdict on one AI finding (agree / disagree, with an
-- optional comment). The finding's model, version, label, probability and threshold are kept as
-- the reviewer saw them, so agreement per model version can be counted after a model is
-- replaced or a finding re-scored. A new verdict of the same reviewer on the same finding
-- replaces theirs: the old row stays as history with is_current = 0.
CREATE TABLE finding_feedback (
    id INTEGER PRIMARY KEY,
    finding_id INTEGER NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    label TEXT NOT NULL,
    probability REAL NOT NULL,
    threshold REAL,
    facility TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL,
    reviewer_name TEXT NOT NULL DEFAULT '',
    reviewer_role TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('agree', 'disagree')),
    comment TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    is_current INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX finding_feedback_current ON finding_feedback(finding_id, subject) WHERE is_current = 1;
CREATE INDEX finding_feedback_study ON finding_feedback(study_instance_uid);
CREATE INDEX finding_feedback_created ON finding_feedback(created_at);
