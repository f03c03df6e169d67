//! Triage in the index: a study's findings, the worklist, and the job queue (claimed, settled
//! and listed here; jobs are queued with their instance's rows in `index.rs`).

use super::db::{params, Connection, DbError, Engine, FromValue, ToValue, Value as SqlValue};
use chrono::Utc;
use serde::Serialize;

use super::index::{Index, IndexError};
use super::visibility::{study_filter, study_visible};
use crate::access::{Action, Principal, Visibility};
use crate::triage::intended_use::IntendedUse;
use crate::triage::manifest::Urgency;

/// The stored name of an urgency (the worklist ranks by these names).
fn urgency_name(urgency: Urgency) -> &'static str {
    match urgency {
        Urgency::Routine => "routine",
        Urgency::Urgent => "urgent",
        Urgency::Emergency => "emergency",
    }
}

/// Where a triage job stands (invariant 8: it ends `done`, `dead` or `skipped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for the worker (or for its back-off to pass).
    Queued,
    /// Claimed by the worker.
    Running,
    /// Findings recorded.
    Done,
    /// Failed for good; `last_error` says why.
    Dead,
    /// Ended without scoring on purpose (outside the model's intended use); `last_error` says
    /// why.
    Skipped,
}

impl JobState {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Skipped => "skipped",
        }
    }

    /// The state named `s`, if any.
    pub fn parse(s: &str) -> Option<JobState> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Done,
            JobState::Dead,
            JobState::Skipped,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

impl ToValue for JobState {
    fn to_value(&self) -> SqlValue {
        SqlValue::Text(self.as_str().to_owned())
    }
}

impl FromValue for JobState {
    fn from_value(value: &SqlValue, column: usize) -> super::db::Result<Self> {
        let s = String::from_value(value, column)?;
        JobState::parse(&s).ok_or_else(|| DbError::Conversion {
            column,
            source: format!("job state {s:?}").into(),
        })
    }
}

impl ToValue for IntendedUse {
    fn to_value(&self) -> SqlValue {
        SqlValue::Text(self.as_str().to_owned())
    }
}

impl FromValue for IntendedUse {
    fn from_value(value: &SqlValue, column: usize) -> super::db::Result<Self> {
        let s = String::from_value(value, column)?;
        IntendedUse::parse(&s).ok_or_else(|| DbError::Conversion {
            column,
            source: format!("intended use {s:?}").into(),
        })
    }
}

/// One label's result on one instance (or frame).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// The finding's id (feedback names it).
    pub id: i64,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Frame (1-based; 1 for single-frame images); 0 for a per-frame model's finding on the
    /// whole clip.
    pub frame: i64,
    /// For a finding on the whole clip: the frames (1-based) where its smoothed probability
    /// reached the threshold; empty otherwise.
    pub fired_frames: Vec<i64>,
    /// The endoscope's field of view the frame was cropped to (for the clip, its peak
    /// frame's); none when the model is not cropped to one or none was found.
    pub field_of_view: Option<crate::triage::field_of_view::FieldOfView>,
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
    /// `inside` or `outside` the model's declared population (an outside finding is never
    /// flagged), or `undeclared` when the model declares none.
    pub intended_use: IntendedUse,
    /// Why it is outside, or what was unknown inside (`age unknown`); empty otherwise.
    pub intended_use_note: String,
    /// The instance's View Position (0018,5101), e.g. `PA`; empty when absent.
    pub view_position: String,
    /// When it was found.
    pub created_at: String,
}

/// The findings of a study, flagged first, then by probability.
fn for_study(conn: &Connection, study: &str, v: &Visibility) -> super::db::Result<Vec<Finding>> {
    let (visible, mut params) = visible_where(
        v,
        "EXISTS (SELECT 1 FROM studies st WHERE st.study_instance_uid = findings.study_instance_uid AND {})",
        Some("(SELECT i.facility FROM instances i WHERE i.sop_instance_uid = findings.sop_instance_uid)"),
    );
    params.insert(0, SqlValue::Text(study.to_string()));
    conn.prepare_cached(&format!(
        "SELECT series_instance_uid, sop_instance_uid, frame, model, model_version, label, probability, \
         flagged, urgency, statement, created_at, intended_use, intended_use_note, view_position, fired_frames, \
         field_of_view, id FROM findings WHERE study_instance_uid = ? AND {visible} \
         ORDER BY flagged DESC, probability DESC"
    ))?
    .query_map(super::db::params_from_iter(params), |r| {
        Ok(Finding {
            id: r.get(16)?,
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
            intended_use: r.get(11)?,
            intended_use_note: r.get(12)?,
            view_position: r.get(13)?,
            fired_frames: frame_list(&r.get::<_, String>(14)?),
            field_of_view: serde_json::from_str(&r.get::<_, String>(15)?).ok(),
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
    /// Labels scored outside their model's intended use (never flagged, never ranked).
    pub outside_intended_use: Vec<String>,
    /// Jobs still queued or running.
    pub pending_jobs: i64,
    /// Jobs that failed for good.
    pub failed_jobs: i64,
    /// Jobs ended unscored on purpose (outside the model's intended use, or refused by its
    /// anatomy gate).
    pub skipped_jobs: i64,
    /// Why those jobs ended unscored, each reason once, e.g. `not a frontal chest radiograph:
    /// lung area 0.0%`.
    pub skipped_reasons: Vec<String>,
    /// Whether a reviewer gave feedback on any of its findings.
    pub reviewed: bool,
    /// The facilities holding instances of it (codes).
    pub facilities: Vec<String>,
}

/// The worklist's narrowing beyond the patient's name (`None`, `false`: no condition). Every
/// condition is applied in the index, so a filter finds its studies however far down the
/// urgency order they are.
#[derive(Debug, Clone, Default)]
pub struct WorklistFilter {
    /// Only studies with (`true`) or without (`false`) feedback on a finding.
    pub reviewed: Option<bool>,
    /// Only studies a facility with this code holds instances of.
    pub facility: Option<String>,
    /// Only studies with a series of this modality (e.g. `DX`).
    pub modality: Option<String>,
    /// Only studies dated on or after this day (DICOM DA, `YYYYMMDD`).
    pub study_date_from: Option<String>,
    /// Only studies dated on or before this day (DICOM DA); undated studies are left out.
    pub study_date_to: Option<String>,
    /// Only studies with a flagged finding.
    pub flagged_only: bool,
}

impl WorklistFilter {
    /// The SQL condition on study row `st` and its parameters. Each is a set the engine builds
    /// once (`IN (SELECT …)`), not a subquery per study: with a correlated `EXISTS` SQLite
    /// walked the modality index for every study (17 s for 10 000 studies).
    fn condition(&self) -> (String, Vec<SqlValue>) {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        if let Some(reviewed) = self.reviewed {
            let not = if reviewed { "" } else { "NOT " };
            conditions.push(format!("{not}{REVIEWED}"));
        }
        if let Some(facility) = &self.facility {
            conditions.push(
                "st.id IN (SELECT sf.study_fk FROM study_facilities sf WHERE sf.facility = ?)"
                    .into(),
            );
            params.push(SqlValue::Text(facility.clone()));
        }
        if let Some(modality) = &self.modality {
            conditions
                .push("st.id IN (SELECT sm.study_fk FROM series sm WHERE sm.modality = ?)".into());
            params.push(SqlValue::Text(modality.clone()));
        }
        if let Some(from) = &self.study_date_from {
            conditions.push("st.study_date >= ?".into());
            params.push(SqlValue::Text(from.clone()));
        }
        if let Some(to) = &self.study_date_to {
            conditions.push("st.study_date <> '' AND st.study_date <= ?".into());
            params.push(SqlValue::Text(to.clone()));
        }
        if self.flagged_only {
            conditions.push(
                "st.study_instance_uid IN (SELECT ff.study_instance_uid FROM findings ff WHERE ff.flagged = 1)"
                    .into(),
            );
        }
        let text = conditions
            .iter()
            .map(|c| format!(" AND {c}"))
            .collect::<String>();
        (text, params)
    }
}

/// The condition that study row `st` has a reviewer's current verdict on one of its findings.
const REVIEWED: &str = "EXISTS (SELECT 1 FROM finding_feedback ff \
    WHERE ff.study_instance_uid = st.study_instance_uid AND ff.is_current = 1)";

/// Studies by urgency of their flags (emergency first), then by arrival (oldest first).
fn worklist(
    conn: &Connection,
    limit: i64,
    offset: i64,
    patient_name: &str,
    filter: &WorklistFilter,
    v: &Visibility,
) -> super::db::Result<Vec<WorklistEntry>> {
    let (mut visible, mut params) = visible_where(v, "{}", None);
    if let Some((name, name_params)) =
        super::names::name_words_condition(conn, "p.id", patient_name)?
    {
        visible = format!("{visible} AND {name}");
        params.extend(name_params);
    }
    let (narrowed, filter_params) = filter.condition();
    visible.push_str(&narrowed);
    params.extend(filter_params);
    params.extend([SqlValue::Integer(limit), SqlValue::Integer(offset)]);
    conn.prepare_cached(&format!(
        "SELECT st.study_instance_uid, p.patient_name, p.patient_id, st.study_date, st.modalities_in_study, \
         st.created_at, \
         COALESCE((SELECT MAX(CASE f.urgency WHEN 'emergency' THEN 3 WHEN 'urgent' THEN 2 ELSE 1 END) \
                   FROM findings f WHERE f.study_instance_uid = st.study_instance_uid AND f.flagged = 1), 0) AS rank, \
         COALESCE((SELECT string_agg(d.label, ',' ORDER BY d.label) FROM (SELECT DISTINCT f.label FROM findings f \
                   WHERE f.study_instance_uid = st.study_instance_uid AND f.flagged = 1) AS d), ''), \
         COALESCE((SELECT string_agg(d.label, ',' ORDER BY d.label) FROM (SELECT DISTINCT f.label FROM findings f \
                   WHERE f.study_instance_uid = st.study_instance_uid AND f.intended_use = 'outside') AS d), ''), \
         (SELECT COUNT(*) FROM triage_jobs j JOIN instances i ON i.sop_instance_uid = j.sop_instance_uid \
          JOIN series se ON i.series_fk = se.id WHERE se.study_fk = st.id AND j.state IN ('queued', 'running')), \
         (SELECT COUNT(*) FROM triage_jobs j JOIN instances i ON i.sop_instance_uid = j.sop_instance_uid \
          JOIN series se ON i.series_fk = se.id WHERE se.study_fk = st.id AND j.state = 'dead'), \
         (SELECT COUNT(*) FROM triage_jobs j JOIN instances i ON i.sop_instance_uid = j.sop_instance_uid \
          JOIN series se ON i.series_fk = se.id WHERE se.study_fk = st.id AND j.state = 'skipped'), \
         COALESCE((SELECT string_agg(d.last_error, '\u{1f}' ORDER BY d.last_error) FROM (SELECT DISTINCT j.last_error \
                   FROM triage_jobs j JOIN instances i ON i.sop_instance_uid = j.sop_instance_uid \
                   JOIN series se ON i.series_fk = se.id WHERE se.study_fk = st.id AND j.state = 'skipped') AS d), ''), \
         CASE WHEN {REVIEWED} THEN 1 ELSE 0 END, \
         COALESCE((SELECT string_agg(sf.facility, ',' ORDER BY sf.facility) FROM study_facilities sf \
                   WHERE sf.study_fk = st.id), '') \
         FROM studies st JOIN patients p ON st.patient_fk = p.id WHERE {visible} \
         ORDER BY rank DESC, st.created_at ASC, st.id ASC LIMIT ? OFFSET ?"
    ))?
    .query_map(super::db::params_from_iter(params), |r| {
        let rank: i64 = r.get(6)?;
        let flags: String = r.get(7)?;
        let outside: String = r.get(8)?;
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
            flags: labels(&flags),
            outside_intended_use: labels(&outside),
            pending_jobs: r.get(9)?,
            failed_jobs: r.get(10)?,
            skipped_jobs: r.get(11)?,
            skipped_reasons: r
                .get::<_, String>(12)?
                .split('\u{1f}')
                .filter(|reason| !reason.is_empty())
                .map(str::to_string)
                .collect(),
            reviewed: r.get(13)?,
            facilities: labels(&r.get::<_, String>(14)?),
        })
    })?
    .collect()
}

/// The labels of a comma-joined list.
fn labels(joined: &str) -> Vec<String> {
    joined
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

/// A triage job as the admin view shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Model.
    pub model: String,
    /// queued, running, done, dead or skipped.
    pub state: JobState,
    /// Attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed, or why the job was skipped.
    pub last_error: String,
    /// When it was queued.
    pub created_at: String,
}

/// Jobs in `state` (any when `None`), newest first.
fn jobs(
    conn: &Connection,
    state: Option<JobState>,
    limit: i64,
    v: &Visibility,
) -> super::db::Result<Vec<JobView>> {
    let (visible, mut params) = visible_where(
        v,
        "EXISTS (SELECT 1 FROM instances i JOIN series se ON i.series_fk = se.id \
         JOIN studies st ON se.study_fk = st.id \
         WHERE i.sop_instance_uid = triage_jobs.sop_instance_uid AND {})",
        Some("i.facility"),
    );
    let state = state.map(|s| s.as_str().to_string());
    params.splice(
        0..0,
        [
            state.clone().map_or(SqlValue::Null, SqlValue::Text),
            state.map_or(SqlValue::Null, SqlValue::Text),
        ],
    );
    params.push(SqlValue::Integer(limit));
    conn.prepare_cached(&format!(
        "SELECT sop_instance_uid, model, state, attempts, last_error, created_at FROM triage_jobs \
         WHERE (CAST(? AS TEXT) IS NULL OR state = ?) AND {visible} ORDER BY id DESC LIMIT ?"
    ))?
    .query_map(super::db::params_from_iter(params), |r| {
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

/// A job the worker has claimed (now `running`).
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// Row id.
    pub id: i64,
    /// The instance to triage.
    pub sop_instance_uid: String,
    /// The model to run.
    pub model: String,
    /// This attempt's number (1 for the first).
    pub attempts: i64,
}

/// Frame numbers as the index keeps them: comma-separated.
fn frame_list(joined: &str) -> Vec<i64> {
    joined
        .split(',')
        .filter_map(|f| f.trim().parse().ok())
        .collect()
}

/// One label's score on one frame (or on a whole clip), to record.
#[derive(Debug, Clone)]
pub struct NewFinding {
    /// Frame (1-based); 0 for the whole clip.
    pub frame: i64,
    /// For the whole clip: the frames (1-based) where it fired.
    pub fired_frames: Vec<i64>,
    /// The field of view the frame was cropped to.
    pub field_of_view: Option<crate::triage::field_of_view::FieldOfView>,
    /// Label.
    pub label: String,
    /// Probability.
    pub probability: f64,
    /// At or above the threshold.
    pub flagged: bool,
    /// The label's urgency, from the model's manifest.
    pub urgency: Urgency,
}

/// A finished job's results: its instance, the model that ran, and every label's score.
#[derive(Debug, Clone)]
pub struct JobFindings {
    /// Study Instance UID of the instance.
    pub study_instance_uid: String,
    /// Series Instance UID of the instance.
    pub series_instance_uid: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// The model's use statement.
    pub statement: String,
    /// The instance against the model's intended use (outside: no score is flagged).
    pub intended_use: IntendedUse,
    /// Why it is outside, or what was unknown.
    pub intended_use_note: String,
    /// The instance's View Position.
    pub view_position: String,
    /// The scores.
    pub findings: Vec<NewFinding>,
    /// When a finding is flagged: the forwarding that waits for such a flag (issue #10).
    pub forwarding: Option<FlagForwarding>,
}

/// What a flag changes in the outbox: rules asking for it queue the instance (and the study's
/// findings report), and an urgent flag lifts the study's waiting instances ahead of the backlog.
#[derive(Debug, Clone)]
pub struct FlagForwarding {
    /// The forwarding rules.
    pub rules: std::sync::Arc<crate::forward::rules::ForwardRules>,
    /// The highest urgency flagged.
    pub urgency: Urgency,
    /// The source tramy files its findings reports under (they follow the instance).
    pub report_source: String,
}

/// `template` with `{}` replaced by the condition that study row `st` is visible to `v`, and
/// its parameters; `TRUE` when everything is visible.
fn visible_where(
    v: &Visibility,
    template: &str,
    instance_facility: Option<&str>,
) -> (String, Vec<SqlValue>) {
    let c = study_filter(v, "st.id", instance_facility);
    (template.replace("{}", &c.sql), c.params)
}

use super::times::now;

impl Index {
    /// The findings of a study, flagged first, then by probability; `None` when the caller may
    /// not see the study's findings (or it does not exist: the two are not told apart).
    pub async fn findings_for_study(
        &self,
        who: &Principal,
        study: &str,
    ) -> Result<Option<Vec<Finding>>, IndexError> {
        self.admit(who, Action::ReadFindings)?;
        let study = study.to_owned();
        let v = who.visibility(Action::ReadFindings);
        self.read(move |c| {
            if !study_visible(c, &v, &study)? {
                return Ok(None);
            }
            Ok(Some(for_study(c, &study, &v)?))
        })
        .await
    }

    /// Studies by urgency of their flags (emergency first), then by arrival (oldest first);
    /// with a `patient_name`, only those whose patient's name has its words, matched as QIDO-RS
    /// `fuzzymatching=true` matches them (empty: every study).
    pub async fn worklist(
        &self,
        who: &Principal,
        limit: i64,
        offset: i64,
        patient_name: String,
    ) -> Result<Vec<WorklistEntry>, IndexError> {
        self.worklist_filtered(who, limit, offset, patient_name, WorklistFilter::default())
            .await
    }

    /// [`Index::worklist`], narrowed by `filter` too (reviewed or not, a facility's).
    pub async fn worklist_filtered(
        &self,
        who: &Principal,
        limit: i64,
        offset: i64,
        patient_name: String,
        filter: WorklistFilter,
    ) -> Result<Vec<WorklistEntry>, IndexError> {
        self.admit(who, Action::ReadFindings)?;
        let v = who.visibility(Action::ReadFindings);
        self.read(move |c| Ok(worklist(c, limit, offset, &patient_name, &filter, &v)?))
            .await
    }

    /// The facilities holding the studies `who` may see on the worklist (codes, sorted): what
    /// its facility filter offers.
    pub async fn worklist_facilities(&self, who: &Principal) -> Result<Vec<String>, IndexError> {
        self.admit(who, Action::ReadFindings)?;
        let v = who.visibility(Action::ReadFindings);
        self.read(move |c| {
            let (visible, params) = visible_where(&v, "{}", None);
            let found = c
                .prepare_cached(&format!(
                    "SELECT DISTINCT sf.facility FROM study_facilities sf \
                     JOIN studies st ON st.id = sf.study_fk JOIN patients p ON st.patient_fk = p.id \
                     WHERE {visible} ORDER BY sf.facility"
                ))?
                .query_map(super::db::params_from_iter(params), |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(found)
        })
        .await
    }

    /// Jobs in `state` (any when `None`), newest first.
    pub async fn triage_jobs(
        &self,
        who: &Principal,
        state: Option<JobState>,
        limit: i64,
    ) -> Result<Vec<JobView>, IndexError> {
        self.admit(who, Action::ReadFindings)?;
        let v = who.visibility(Action::ReadFindings);
        self.read(move |c| Ok(jobs(c, state, limit, &v)?)).await
    }

    /// Queues again the jobs whose worker stopped without settling them: those whose lease has
    /// run out (or that were claimed before leases existed), and those a previous run of this
    /// node claimed (the same machine and data folder: it died). Jobs other nodes are running
    /// keep their claims.
    pub async fn requeue_interrupted_jobs(&self, who: &Principal) -> Result<usize, IndexError> {
        self.admit(who, Action::Triage)?;
        let (node, home) = (self.node().to_owned(), self.node_home().to_owned());
        let width = home.chars().count();
        self.write(move |c| {
            c.execute(
                "UPDATE triage_jobs SET state = ?1, claimed_by = NULL, lease_until = NULL \
                 WHERE state = ?2 AND (lease_until IS NULL OR lease_until < ?3 \
                 OR (?6 > 0 AND substr(claimed_by, 1, ?6) = ?5 AND claimed_by <> ?4))",
                params![
                    JobState::Queued,
                    JobState::Running,
                    now(),
                    node,
                    home,
                    width
                ],
            )
        })
        .await
    }

    /// Claims up to `limit` jobs for this node until `lease` from now, highest priority first,
    /// and marks them running with one more attempt: queued jobs whose back-off has passed, and
    /// running jobs whose lease ran out (their worker died). On PostgreSQL, rows another node is
    /// claiming are skipped (`FOR UPDATE SKIP LOCKED`), so nodes never claim the same job.
    pub async fn claim_triage_jobs(
        &self,
        who: &Principal,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<ClaimedJob>, IndexError> {
        self.admit(who, Action::Triage)?;
        let node = self.node().to_owned();
        let now = Utc::now();
        let until = super::times::text(now + chrono::Duration::from_std(lease).unwrap_or_default());
        let now = super::times::text(now);
        self.write(move |c| {
            let lock = match c.engine() {
                Engine::Sqlite => "",
                Engine::Postgres => " FOR UPDATE SKIP LOCKED",
            };
            let sql = format!(
                "UPDATE triage_jobs SET state = 'running', attempts = attempts + 1, claimed_by = ?3, \
                 lease_until = ?4 WHERE id IN (SELECT id FROM triage_jobs \
                 WHERE (state = 'queued' AND not_before <= ?1) OR (state = 'running' AND lease_until < ?1) \
                 ORDER BY priority DESC, id LIMIT ?2{lock}) \
                 RETURNING id, sop_instance_uid, model, attempts, priority"
            );
            let mut jobs: Vec<(i64, ClaimedJob)> = c
                .prepare_cached(&sql)?
                .query_map(params![now, limit, node, until], |r| {
                    Ok((
                        r.get(4)?,
                        ClaimedJob {
                            id: r.get(0)?,
                            sop_instance_uid: r.get(1)?,
                            model: r.get(2)?,
                            attempts: r.get(3)?,
                        },
                    ))
                })?
                .collect::<Result<_, _>>()?;
            // RETURNING keeps no order.
            jobs.sort_by_key(|(priority, job)| (-priority, job.id));
            Ok(jobs.into_iter().map(|(_, job)| job).collect())
        })
        .await
    }

    /// Records a job's findings (replacing earlier ones of the same label and frame) and marks
    /// it done, in one commit.
    pub async fn complete_triage_job(
        &self,
        who: &Principal,
        job: &ClaimedJob,
        results: JobFindings,
    ) -> Result<(), IndexError> {
        self.admit(who, Action::Triage)?;
        let (id, sop) = (job.id, job.sop_instance_uid.clone());
        self.write(move |c| {
            let created = now();
            for f in &results.findings {
                c.execute(
                    "INSERT INTO findings (study_instance_uid, series_instance_uid, \
                     sop_instance_uid, frame, model, model_version, label, probability, flagged, \
                     urgency, statement, created_at, intended_use, intended_use_note, view_position, \
                     fired_frames, field_of_view) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
                     ON CONFLICT (sop_instance_uid, model, label, frame) DO UPDATE SET \
                     study_instance_uid = excluded.study_instance_uid, \
                     series_instance_uid = excluded.series_instance_uid, \
                     model_version = excluded.model_version, probability = excluded.probability, \
                     flagged = excluded.flagged, urgency = excluded.urgency, \
                     statement = excluded.statement, created_at = excluded.created_at, \
                     intended_use = excluded.intended_use, \
                     intended_use_note = excluded.intended_use_note, \
                     view_position = excluded.view_position, fired_frames = excluded.fired_frames, \
                     field_of_view = excluded.field_of_view",
                    params![
                        results.study_instance_uid,
                        results.series_instance_uid,
                        sop,
                        f.frame,
                        results.model,
                        results.model_version,
                        f.label,
                        f.probability,
                        f.flagged,
                        urgency_name(f.urgency),
                        results.statement,
                        created,
                        results.intended_use,
                        results.intended_use_note,
                        results.view_position,
                        f.fired_frames
                            .iter()
                            .map(i64::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        f.field_of_view
                            .as_ref()
                            .and_then(|v| serde_json::to_string(v).ok())
                            .unwrap_or_default()
                    ],
                )?;
            }
            if let Some(flag) = &results.forwarding {
                super::outbox::queue_flagged(c, &sop, flag)?;
            }
            c.execute(
                "UPDATE triage_jobs SET state = ?2, last_error = '' WHERE id = ?1",
                params![id, JobState::Done],
            )?;
            Ok(())
        })
        .await
    }

    /// Ends a job without findings on purpose, with the reason (e.g. outside the model's
    /// intended use).
    pub async fn skip_triage_job(
        &self,
        who: &Principal,
        job: &ClaimedJob,
        reason: String,
    ) -> Result<(), IndexError> {
        self.admit(who, Action::Triage)?;
        let id = job.id;
        self.write(move |c| {
            c.execute(
                "UPDATE triage_jobs SET state = ?2, last_error = ?3 WHERE id = ?1",
                params![id, JobState::Skipped, reason],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a failed attempt: queued again after `not_before` (RFC 3339), or dead.
    pub async fn fail_triage_job(
        &self,
        who: &Principal,
        job: &ClaimedJob,
        next: JobState,
        reason: String,
        not_before: String,
    ) -> Result<(), IndexError> {
        self.admit(who, Action::Triage)?;
        let id = job.id;
        self.write(move |c| {
            c.execute(
                "UPDATE triage_jobs SET state = ?2, last_error = ?3, not_before = ?4 WHERE id = ?1",
                params![id, next, reason, not_before],
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_keep_their_stored_names() {
        for (state, name) in [
            (JobState::Queued, "queued"),
            (JobState::Running, "running"),
            (JobState::Done, "done"),
            (JobState::Dead, "dead"),
            (JobState::Skipped, "skipped"),
        ] {
            assert_eq!(state.as_str(), name);
            assert_eq!(JobState::parse(name), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), name);
        }
        assert_eq!(JobState::parse("Dead"), None);
    }

    #[test]
    fn urgencies_are_stored_under_their_manifest_names() {
        for u in [Urgency::Routine, Urgency::Urgent, Urgency::Emergency] {
            assert_eq!(serde_json::to_value(u).unwrap(), urgency_name(u));
        }
    }

    #[test]
    fn an_unknown_stored_state_is_an_error_not_a_guess() {
        let conn = Connection::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        let read: crate::store::db::Result<JobState> =
            conn.query_row("SELECT 'paused'", [], |r| r.get(0));
        assert!(read.is_err());
    }
}
