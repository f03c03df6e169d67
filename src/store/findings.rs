//! Reads of triage results: a study's findings, the worklist, and the job queue.

use rusqlite::{params, Connection};
use serde::Serialize;

/// One label's result on one instance (or frame).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Frame (1-based; 1 for single-frame images).
    pub frame: i64,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// Label.
    pub label: String,
    /// Probability.
    pub probability: f64,
    /// At or above the label's threshold.
    pub flagged: bool,
    /// Urgency of the label.
    pub urgency: String,
    /// The model's use statement (research use only, and so on).
    pub statement: String,
    /// When it was found.
    pub created_at: String,
}

/// The findings of a study, flagged first, then by probability.
pub fn for_study(conn: &Connection, study: &str) -> rusqlite::Result<Vec<Finding>> {
    conn.prepare_cached(
        "SELECT series_instance_uid, sop_instance_uid, frame, model, model_version, label, probability, \
         flagged, urgency, statement, created_at FROM findings WHERE study_instance_uid = ?1 \
         ORDER BY flagged DESC, probability DESC",
    )?
    .query_map([study], |r| {
        Ok(Finding {
            series_instance_uid: r.get(0)?,
            sop_instance_uid: r.get(1)?,
            frame: r.get(2)?,
            model: r.get(3)?,
            model_version: r.get(4)?,
            label: r.get(5)?,
            probability: r.get(6)?,
            flagged: r.get(7)?,
            urgency: r.get(8)?,
            statement: r.get(9)?,
            created_at: r.get(10)?,
        })
    })?
    .collect()
}

/// A worklist entry: a study with its most urgent flag and its triage state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorklistEntry {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Patient's Name.
    pub patient_name: String,
    /// Patient ID.
    pub patient_id: String,
    /// Study Date.
    pub study_date: String,
    /// Modalities in Study.
    pub modalities: String,
    /// When the study arrived.
    pub arrived_at: String,
    /// Most urgent flagged finding: `emergency`, `urgent`, `routine`, or `none`.
    pub urgency: String,
    /// Labels flagged, e.g. `["pneumonia"]`.
    pub flags: Vec<String>,
    /// Jobs still queued or running.
    pub pending_jobs: i64,
    /// Jobs that failed for good.
    pub failed_jobs: i64,
}

/// Studies by urgency of their flags (emergency first), then by arrival (oldest first).
pub fn worklist(
    conn: &Connection,
    limit: i64,
    offset: i64,
) -> rusqlite::Result<Vec<WorklistEntry>> {
    conn.prepare_cached(
        "SELECT st.study_instance_uid, p.patient_name, p.patient_id, st.study_date, st.modalities_in_study, \
         st.created_at, \
         COALESCE((SELECT MAX(CASE f.urgency WHEN 'emergency' THEN 3 WHEN 'urgent' THEN 2 ELSE 1 END) \
                   FROM findings f WHERE f.study_instance_uid = st.study_instance_uid AND f.flagged), 0) AS rank, \
         COALESCE((SELECT group_concat(DISTINCT f.label) FROM findings f \
                   WHERE f.study_instance_uid = st.study_instance_uid AND f.flagged), ''), \
         (SELECT COUNT(*) FROM triage_jobs j JOIN instances i ON i.sop_instance_uid = j.sop_instance_uid \
          JOIN series se ON i.series_fk = se.id WHERE se.study_fk = st.id AND j.state IN ('queued', 'running')), \
         (SELECT COUNT(*) FROM triage_jobs j JOIN instances i ON i.sop_instance_uid = j.sop_instance_uid \
          JOIN series se ON i.series_fk = se.id WHERE se.study_fk = st.id AND j.state = 'dead') \
         FROM studies st JOIN patients p ON st.patient_fk = p.id \
         ORDER BY rank DESC, st.created_at ASC, st.id ASC LIMIT ?1 OFFSET ?2",
    )?
    .query_map(params![limit, offset], |r| {
        let rank: i64 = r.get(6)?;
        let flags: String = r.get(7)?;
        Ok(WorklistEntry {
            study_instance_uid: r.get(0)?,
            patient_name: r.get(1)?,
            patient_id: r.get(2)?,
            study_date: r.get(3)?,
            modalities: r.get(4)?,
            arrived_at: r.get(5)?,
            urgency: match rank {
                3 => "emergency",
                2 => "urgent",
                1 => "routine",
                _ => "none",
            }
            .to_string(),
            flags: flags.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect(),
            pending_jobs: r.get(8)?,
            failed_jobs: r.get(9)?,
        })
    })?
    .collect()
}

/// A triage job as the admin view shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Model.
    pub model: String,
    /// queued, running, done or dead.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: String,
    /// When it was queued.
    pub created_at: String,
}

/// Jobs in `state` (any when `None`), newest first.
pub fn jobs(conn: &Connection, state: Option<&str>, limit: i64) -> rusqlite::Result<Vec<JobView>> {
    conn.prepare_cached(
        "SELECT sop_instance_uid, model, state, attempts, last_error, created_at FROM triage_jobs \
         WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2",
    )?
    .query_map(params![state, limit], |r| {
        Ok(JobView {
            sop_instance_uid: r.get(0)?,
            model: r.get(1)?,
            state: r.get(2)?,
            attempts: r.get(3)?,
            last_error: r.get(4)?,
            created_at: r.get(5)?,
        })
    })?
    .collect()
}
