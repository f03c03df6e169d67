//! Clinicians' feedback on AI findings (issue #15 item 2): one current verdict (agree /
//! disagree, with an optional comment) per reviewer per finding, older ones kept as history;
//! the export for researchers, and agreement counted per model version. A finding is seen here
//! exactly as `findings.rs` shows it (same visibility condition), and its model, version,
//! label, probability and threshold are copied into the feedback as the reviewer saw them.

use serde::{Deserialize, Serialize};

use super::db::{Connection, DbError, FromValue, OptionalExtension, ToValue, Value as SqlValue};
use super::index::{Index, IndexError};
use super::times::now;
use super::visibility::study_filter;
use crate::access::{Action, Principal, Visibility};
use crate::auth::role::Role;

/// The most characters a comment may have.
pub const MAX_COMMENT: usize = 2000;
/// The most rows one export answers (with comments at their longest, about 20 MB); a client
/// reads on with `since` set to the last row's time.
pub const MAX_EXPORT_ROWS: i64 = 10_000;

/// Why feedback was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedbackError {
    /// A field is malformed or out of range.
    #[error("{0}")]
    Invalid(String),
    /// No such finding among those the caller may see.
    #[error("no such finding")]
    NotFound,
    /// The caller's role gives no feedback (or reads no export).
    #[error("{0}")]
    Forbidden(String),
}

/// A reviewer's verdict on a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The finding is right.
    Agree,
    /// The finding is wrong.
    Disagree,
}

impl Verdict {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Agree => "agree",
            Verdict::Disagree => "disagree",
        }
    }

    /// The verdict named `s`, if any.
    pub fn parse(s: &str) -> Option<Verdict> {
        [Verdict::Agree, Verdict::Disagree]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl ToValue for Verdict {
    fn to_value(&self) -> SqlValue {
        SqlValue::Text(self.as_str().to_owned())
    }
}

impl FromValue for Verdict {
    fn from_value(value: &SqlValue, column: usize) -> super::db::Result<Self> {
        let s = String::from_value(value, column)?;
        Verdict::parse(&s).ok_or_else(|| DbError::Conversion {
            column,
            source: format!("verdict {s:?}").into(),
        })
    }
}

/// A verdict to record.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct NewFeedback {
    /// `agree` or `disagree`.
    pub verdict: Verdict,
    /// Why, optionally (at most 2000 characters).
    #[serde(default)]
    pub comment: String,
}

impl NewFeedback {
    /// The feedback with its comment trimmed, or why it is refused.
    pub fn checked(mut self) -> Result<NewFeedback, FeedbackError> {
        // A browser's text area sends CRLF line breaks.
        self.comment = self.comment.trim().replace("\r\n", "\n");
        if self.comment.chars().count() > MAX_COMMENT {
            return Err(FeedbackError::Invalid(format!(
                "comment: at most {MAX_COMMENT} characters"
            )));
        }
        if self.comment.chars().any(|c| c.is_control() && c != '\n') {
            return Err(FeedbackError::Invalid(
                "comment: no control characters".into(),
            ));
        }
        Ok(self)
    }
}

/// A reviewer's current verdict on one finding.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Feedback {
    /// The finding it is on.
    pub finding_id: i64,
    /// The reviewer's stable name (`token:<id>`, an OIDC `sub`).
    pub reviewer: String,
    /// The reviewer's name as the registry knows it (a token's name); the subject otherwise.
    pub reviewer_name: String,
    /// The reviewer's role (`clinician`, `admin`, `superadmin`).
    pub reviewer_role: String,
    /// The facility the reviewer acted for (empty: system-wide).
    pub facility: String,
    /// `agree` or `disagree`.
    pub verdict: Verdict,
    /// The comment (may be empty).
    pub comment: String,
    /// When (RFC 3339).
    pub created_at: String,
}

/// One feedback row of the export: the finding as reviewed, and the verdict.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FeedbackRow {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// Label.
    pub label: String,
    /// The finding's probability when reviewed.
    pub probability: f64,
    /// The label's threshold when reviewed (none when the model was not loaded).
    pub threshold: Option<f64>,
    /// `agree` or `disagree`.
    pub verdict: Verdict,
    /// The comment.
    pub comment: String,
    /// The reviewer's role.
    pub reviewer_role: String,
    /// The facility the reviewer acted for.
    pub facility: String,
    /// When (RFC 3339).
    pub created_at: String,
}

/// Current verdicts on one model version's label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AgreementByModelVersion {
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// Label.
    pub label: String,
    /// Reviewers who agreed.
    pub agree: i64,
    /// Reviewers who disagreed.
    pub disagree: i64,
}

/// A label's threshold as the loaded models declare it (the web layer knows the models).
#[derive(Debug, Clone)]
pub struct LabelThreshold {
    /// Model name.
    pub model: String,
    /// Label.
    pub label: String,
    /// Threshold.
    pub threshold: f64,
}

/// The role a reviewer gives feedback as: a clinician's or an admin's (a superadmin's too);
/// researchers, nodes and modalities give none.
pub fn reviewer_role(who: &Principal) -> Option<Role> {
    if who.is_system_wide() {
        return Some(Role::Superadmin);
    }
    [Role::Clinician, Role::Admin]
        .into_iter()
        .find(|r| who.roles().contains(r))
}

/// Whether `who` may read the export: a researcher's or an admin's.
fn reads_export(who: &Principal) -> bool {
    who.is_system_wide()
        || who
            .roles()
            .iter()
            .any(|r| matches!(r, Role::Researcher | Role::Admin))
}

/// The condition that finding row `findings` is visible to `v` (as `findings.rs` shows it).
fn finding_visible(v: &Visibility) -> (String, Vec<SqlValue>) {
    let c = study_filter(
        v,
        "st.id",
        Some("(SELECT i.facility FROM instances i WHERE i.sop_instance_uid = findings.sop_instance_uid)"),
    );
    (
        format!(
            "EXISTS (SELECT 1 FROM studies st WHERE st.study_instance_uid = findings.study_instance_uid AND {})",
            c.sql
        ),
        c.params,
    )
}

/// The finding `id` of `study` when `v` shows it: its UIDs, model, version, label, probability.
type FindingFacts = (String, String, String, String, String, f64);

fn visible_finding(
    c: &Connection,
    v: &Visibility,
    study: &str,
    id: i64,
) -> super::db::Result<Option<FindingFacts>> {
    let (visible, params) = finding_visible(v);
    let mut all = vec![SqlValue::Integer(id), SqlValue::Text(study.to_string())];
    all.extend(params);
    c.query_row(
        &format!(
            "SELECT series_instance_uid, sop_instance_uid, model, model_version, label, probability \
             FROM findings WHERE id = ? AND study_instance_uid = ? AND {visible}"
        ),
        all,
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
    )
    .optional()
}

const FEEDBACK_COLUMNS: &str = "finding_id, subject, reviewer_name, reviewer_role, facility, \
    verdict, comment, created_at";

fn feedback_of(r: &super::db::Row<'_>) -> super::db::Result<Feedback> {
    Ok(Feedback {
        finding_id: r.get(0)?,
        reviewer: r.get(1)?,
        reviewer_name: r.get(2)?,
        reviewer_role: r.get(3)?,
        facility: r.get(4)?,
        verdict: r.get(5)?,
        comment: r.get(6)?,
        created_at: r.get(7)?,
    })
}

/// The current verdicts on the visible findings of `study` (one finding's when `finding` is
/// set), oldest first.
fn current_feedback(
    c: &Connection,
    v: &Visibility,
    study: &str,
    finding: Option<i64>,
) -> super::db::Result<Vec<Feedback>> {
    let (visible, params) = finding_visible(v);
    let mut all = vec![
        SqlValue::Text(study.to_string()),
        finding.map_or(SqlValue::Null, SqlValue::Integer),
        finding.map_or(SqlValue::Null, SqlValue::Integer),
    ];
    all.extend(params);
    c.prepare_cached(&format!(
        "SELECT {FEEDBACK_COLUMNS} FROM finding_feedback ff WHERE ff.is_current = 1 \
         AND ff.study_instance_uid = ? AND (CAST(? AS BIGINT) IS NULL OR ff.finding_id = ?) \
         AND EXISTS (SELECT 1 FROM findings WHERE findings.id = ff.finding_id AND {visible}) \
         ORDER BY ff.created_at, ff.id"
    ))?
    .query_map(all, feedback_of)?
    .collect()
}

/// The name the registry gives `subject` (a token's name), or the subject itself.
fn reviewer_name(c: &Connection, subject: &str) -> super::db::Result<String> {
    let name: Option<String> = match subject.strip_prefix("token:") {
        Some(id) => c
            .query_row(
                "SELECT name FROM api_tokens WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?,
        None => None,
    };
    Ok(name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| subject.to_string()))
}

/// Everything one write needs, moved into the writer.
struct Recording {
    study: String,
    finding: i64,
    subject: String,
    role: Role,
    facility: String,
    feedback: NewFeedback,
    thresholds: Vec<LabelThreshold>,
    v: Visibility,
}

fn record(c: &Connection, r: Recording) -> super::db::Result<Result<Feedback, FeedbackError>> {
    let Some((series, sop, model, version, label, probability)) =
        visible_finding(c, &r.v, &r.study, r.finding)?
    else {
        return Ok(Err(FeedbackError::NotFound));
    };
    let threshold = r
        .thresholds
        .iter()
        .find(|t| t.model == model && t.label == label)
        .map(|t| t.threshold);
    let name = reviewer_name(c, &r.subject)?;
    let created = now();
    // The reviewer's earlier verdict becomes history; the unique index keeps one current.
    c.execute(
        "UPDATE finding_feedback SET is_current = 0 WHERE finding_id = ?1 AND subject = ?2 AND is_current = 1",
        super::db::params![r.finding, r.subject],
    )?;
    c.execute(
        "INSERT INTO finding_feedback (finding_id, study_instance_uid, series_instance_uid, \
         sop_instance_uid, model, model_version, label, probability, threshold, facility, subject, \
         reviewer_name, reviewer_role, verdict, comment, created_at, is_current) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 1)",
        vec![
            SqlValue::Integer(r.finding),
            SqlValue::Text(r.study),
            SqlValue::Text(series),
            SqlValue::Text(sop),
            SqlValue::Text(model),
            SqlValue::Text(version),
            SqlValue::Text(label),
            SqlValue::Real(probability),
            threshold.map_or(SqlValue::Null, SqlValue::Real),
            SqlValue::Text(r.facility.clone()),
            SqlValue::Text(r.subject.clone()),
            SqlValue::Text(name.clone()),
            SqlValue::Text(r.role.as_str().to_string()),
            r.feedback.verdict.to_value(),
            SqlValue::Text(r.feedback.comment.clone()),
            SqlValue::Text(created.clone()),
        ],
    )?;
    Ok(Ok(Feedback {
        finding_id: r.finding,
        reviewer: r.subject,
        reviewer_name: name,
        reviewer_role: r.role.as_str().to_string(),
        facility: r.facility,
        verdict: r.feedback.verdict,
        comment: r.feedback.comment,
        created_at: created,
    }))
}

/// The current verdicts on studies `v` shows, recorded at or after `since`, oldest first.
fn export(
    c: &Connection,
    v: &Visibility,
    since: &str,
    limit: i64,
) -> super::db::Result<Vec<FeedbackRow>> {
    let visible = study_filter(v, "st.id", None);
    let mut all = vec![SqlValue::Text(since.to_string())];
    all.extend(visible.params);
    all.push(SqlValue::Integer(limit));
    c.prepare_cached(&format!(
        "SELECT ff.study_instance_uid, ff.series_instance_uid, ff.sop_instance_uid, ff.model, \
         ff.model_version, ff.label, ff.probability, ff.threshold, ff.verdict, ff.comment, \
         ff.reviewer_role, ff.facility, ff.created_at FROM finding_feedback ff \
         WHERE ff.is_current = 1 AND ff.created_at >= ? AND EXISTS (SELECT 1 FROM studies st \
         WHERE st.study_instance_uid = ff.study_instance_uid AND {}) \
         ORDER BY ff.created_at, ff.id LIMIT ?",
        visible.sql
    ))?
    .query_map(all, |r| {
        Ok(FeedbackRow {
            study_instance_uid: r.get(0)?,
            series_instance_uid: r.get(1)?,
            sop_instance_uid: r.get(2)?,
            model: r.get(3)?,
            model_version: r.get(4)?,
            label: r.get(5)?,
            probability: r.get(6)?,
            threshold: r.get(7)?,
            verdict: r.get(8)?,
            comment: r.get(9)?,
            reviewer_role: r.get(10)?,
            facility: r.get(11)?,
            created_at: r.get(12)?,
        })
    })?
    .collect()
}

/// Current verdicts per model version and label on studies `v` shows, given by reviewers of
/// `facility` (every reviewer's when `None`).
fn agreement(
    c: &Connection,
    v: &Visibility,
    facility: Option<&str>,
) -> super::db::Result<Vec<AgreementByModelVersion>> {
    let visible = study_filter(v, "st.id", None);
    let facility = facility.map(str::to_string);
    let mut all = vec![
        facility.clone().map_or(SqlValue::Null, SqlValue::Text),
        facility.map_or(SqlValue::Null, SqlValue::Text),
    ];
    all.extend(visible.params);
    c.prepare_cached(&format!(
        "SELECT ff.model, ff.model_version, ff.label, \
         SUM(CASE WHEN ff.verdict = 'agree' THEN 1 ELSE 0 END), \
         SUM(CASE WHEN ff.verdict = 'disagree' THEN 1 ELSE 0 END) FROM finding_feedback ff \
         WHERE ff.is_current = 1 AND (CAST(? AS TEXT) IS NULL OR ff.facility = ?) \
         AND EXISTS (SELECT 1 FROM studies st WHERE st.study_instance_uid = ff.study_instance_uid AND {}) \
         GROUP BY ff.model, ff.model_version, ff.label ORDER BY ff.model, ff.model_version, ff.label",
        visible.sql
    ))?
    .query_map(all, |r| {
        Ok(AgreementByModelVersion {
            model: r.get(0)?,
            model_version: r.get(1)?,
            label: r.get(2)?,
            agree: r.get(3)?,
            disagree: r.get(4)?,
        })
    })?
    .collect()
}

impl Index {
    /// Records `who`'s verdict on finding `finding` of `study`, replacing theirs (the old one
    /// stays as history). Refused for a role that gives no feedback; not found when the caller
    /// may not see the finding.
    pub async fn record_feedback(
        &self,
        who: &Principal,
        study: &str,
        finding: i64,
        feedback: NewFeedback,
        thresholds: Vec<LabelThreshold>,
    ) -> Result<Result<Feedback, FeedbackError>, IndexError> {
        self.admit(who, Action::ReadFindings)?;
        let Some(role) = reviewer_role(who) else {
            return Ok(Err(FeedbackError::Forbidden(
                "only a clinician or an admin gives feedback on findings".into(),
            )));
        };
        let feedback = match feedback.checked() {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        let recording = Recording {
            study: study.to_string(),
            finding,
            subject: who.subject().to_string(),
            role,
            facility: who.facility().unwrap_or_default().to_string(),
            feedback,
            thresholds,
            v: who.visibility(Action::ReadFindings),
        };
        self.write(move |c| record(c, recording)).await
    }

    /// The current verdicts on finding `finding` of `study` (every finding's of the study when
    /// `None`), oldest first; `None` when the caller may not see that finding (or the study).
    pub async fn finding_feedback(
        &self,
        who: &Principal,
        study: &str,
        finding: Option<i64>,
    ) -> Result<Option<Vec<Feedback>>, IndexError> {
        self.admit(who, Action::ReadFindings)?;
        let v = who.visibility(Action::ReadFindings);
        let study = study.to_string();
        self.read(move |c| {
            if let Some(id) = finding {
                if visible_finding(c, &v, &study, id)?.is_none() {
                    return Ok(None);
                }
            } else if !super::visibility::study_visible(c, &v, &study)? {
                return Ok(None);
            }
            Ok(Some(current_feedback(c, &v, &study, finding)?))
        })
        .await
    }

    /// The current verdicts recorded at or after `since` (all when `None`) on studies the
    /// caller may see (a researcher: those granted for research), oldest first, at most
    /// [`MAX_EXPORT_ROWS`]. Only researchers and admins read it.
    pub async fn feedback_export(
        &self,
        who: &Principal,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Result<Vec<FeedbackRow>, FeedbackError>, IndexError> {
        self.admit(who, Action::ReadFindings)?;
        if !reads_export(who) {
            return Ok(Err(FeedbackError::Forbidden(
                "only a researcher or an admin reads the feedback export".into(),
            )));
        }
        let v = who.visibility(Action::ReadFindings);
        let since = since.map(super::times::text).unwrap_or_default();
        self.read(move |c| Ok(Ok(export(c, &v, &since, MAX_EXPORT_ROWS)?)))
            .await
    }

    /// Agreement per model version and label: current verdicts on studies the caller may see,
    /// given by reviewers of `facility` (all when `None`).
    pub async fn feedback_agreement(
        &self,
        who: &Principal,
        facility: Option<String>,
    ) -> Result<Vec<AgreementByModelVersion>, IndexError> {
        self.admit(who, Action::ReadFindings)?;
        let v = who.visibility(Action::ReadFindings);
        self.read(move |c| Ok(agreement(c, &v, facility.as_deref())?))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_keep_their_stored_names() {
        for v in [Verdict::Agree, Verdict::Disagree] {
            assert_eq!(Verdict::parse(v.as_str()), Some(v));
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        assert_eq!(Verdict::parse("Agree"), None);
    }

    /// An index with one study and its finding 1 (model `m` version 1, label `pneumonia`).
    fn index_with_a_finding() -> Connection {
        let mut c = Connection::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        super::super::migrations::to_latest(&mut c).unwrap();
        c.execute_batch(
            "INSERT INTO patients (id, patient_key, patient_id, issuer_of_patient_id, patient_name, \
             patient_name_norm, birth_date, sex) VALUES (1, 'k', 'P', '', 'N', 'n', '', ''); \
             INSERT INTO studies (id, study_instance_uid, patient_fk, study_date, study_time, \
             accession_number, study_id, referring_physician_name, referring_physician_name_norm, \
             study_description, created_at) VALUES (1, '1.2', 1, '', '', '', '', '', '', '', ''); \
             INSERT INTO findings (id, study_instance_uid, series_instance_uid, sop_instance_uid, \
             frame, model, model_version, label, probability, flagged, urgency, statement, created_at) \
             VALUES (1, '1.2', '1.2.3', '1.2.3.4', 1, 'm', '1', 'pneumonia', 0.9, 1, 'urgent', '', '');",
        )
        .unwrap();
        c
    }

    fn recording(subject: &str, facility: &str, verdict: Verdict) -> Recording {
        Recording {
            study: "1.2".into(),
            finding: 1,
            subject: subject.into(),
            role: Role::Clinician,
            facility: facility.into(),
            feedback: NewFeedback {
                verdict,
                comment: String::new(),
            },
            thresholds: vec![LabelThreshold {
                model: "m".into(),
                label: "pneumonia".into(),
                threshold: 0.5,
            }],
            v: Visibility::All,
        }
    }

    #[test]
    fn a_new_verdict_replaces_the_reviewers_own_and_keeps_the_old_as_history() {
        let c = index_with_a_finding();
        for (who, verdict) in [
            ("token:a", Verdict::Agree),
            ("token:b", Verdict::Agree),
            ("token:a", Verdict::Disagree),
        ] {
            record(&c, recording(who, "LOCAL", verdict))
                .unwrap()
                .unwrap();
        }
        let current = current_feedback(&c, &Visibility::All, "1.2", Some(1)).unwrap();
        let seen: Vec<(&str, Verdict)> = current
            .iter()
            .map(|f| (f.reviewer.as_str(), f.verdict))
            .collect();
        assert_eq!(
            seen,
            [("token:b", Verdict::Agree), ("token:a", Verdict::Disagree)]
        );
        let rows: i64 = c
            .query_row("SELECT COUNT(*) FROM finding_feedback", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3);
        let exported = export(&c, &Visibility::All, "", 10).unwrap();
        assert_eq!(exported.len(), 2);
        assert_eq!(exported[0].threshold, Some(0.5));
        // A finding the caller may not see, or that is not the study's, is not found.
        let mut hidden = recording("token:c", "B", Verdict::Agree);
        hidden.v = Visibility::Nothing;
        assert_eq!(
            record(&c, hidden).unwrap().unwrap_err(),
            FeedbackError::NotFound
        );
        let mut elsewhere = recording("token:c", "B", Verdict::Agree);
        elsewhere.study = "9.9".into();
        assert_eq!(
            record(&c, elsewhere).unwrap().unwrap_err(),
            FeedbackError::NotFound
        );
    }

    #[test]
    fn agreement_counts_current_verdicts_per_model_version_and_label() {
        let c = index_with_a_finding();
        record(&c, recording("token:a", "LOCAL", Verdict::Agree))
            .unwrap()
            .unwrap();
        record(&c, recording("token:b", "B", Verdict::Disagree))
            .unwrap()
            .unwrap();
        record(&c, recording("token:c", "LOCAL", Verdict::Disagree))
            .unwrap()
            .unwrap();
        record(&c, recording("token:c", "LOCAL", Verdict::Agree))
            .unwrap()
            .unwrap();
        // The finding re-scored by version 2: a new verdict counts for version 2.
        c.execute("UPDATE findings SET model_version = '2' WHERE id = 1", [])
            .unwrap();
        record(&c, recording("token:d", "LOCAL", Verdict::Disagree))
            .unwrap()
            .unwrap();
        let counts = |v: &Visibility, facility: Option<&str>| {
            agreement(&c, v, facility)
                .unwrap()
                .into_iter()
                .map(|a| (a.model_version, a.agree, a.disagree))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            counts(&Visibility::All, None),
            [("1".to_string(), 2, 1), ("2".to_string(), 0, 1)]
        );
        assert_eq!(
            counts(&Visibility::All, Some("B")),
            [("1".to_string(), 0, 1)]
        );
        assert_eq!(counts(&Visibility::Nothing, None), []);
    }

    #[test]
    fn a_comment_is_bounded_and_trimmed() {
        let long = NewFeedback {
            verdict: Verdict::Agree,
            comment: "x".repeat(MAX_COMMENT + 1),
        };
        assert!(matches!(long.checked(), Err(FeedbackError::Invalid(_))));
        let ok = NewFeedback {
            verdict: Verdict::Disagree,
            comment: format!("  {}  ", "ý".repeat(MAX_COMMENT)),
        };
        assert_eq!(ok.checked().unwrap().comment.chars().count(), MAX_COMMENT);
        let control = NewFeedback {
            verdict: Verdict::Agree,
            comment: "a\u{0}b".into(),
        };
        assert!(control.checked().is_err());
    }
}
