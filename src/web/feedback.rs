//! `/api/v1` for clinicians' feedback on AI findings (issue #15 item 2): a verdict per finding,
//! and the export researchers evaluate models with. Thin: parse, call the index, shape the
//! answer; the rules are in `store/feedback.rs`. The audit middleware records every request as
//! `feedback` with its route and status only, never the comment.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::HttpError;
use super::AppState;
use crate::store::feedback::{Feedback, FeedbackError, FeedbackRow, LabelThreshold, NewFeedback};

impl From<FeedbackError> for HttpError {
    fn from(e: FeedbackError) -> Self {
        match e {
            FeedbackError::Invalid(reason) => HttpError::bad_request(reason),
            FeedbackError::NotFound => HttpError::not_found("no such finding"),
            FeedbackError::Forbidden(reason) => HttpError::new(StatusCode::FORBIDDEN, reason),
        }
    }
}

/// The thresholds of the loaded models' labels, copied into feedback as the reviewer saw them.
pub fn thresholds(state: &AppState) -> Vec<LabelThreshold> {
    state
        .models
        .iter()
        .flat_map(|m| {
            m.manifest.labels.iter().map(|l| LabelThreshold {
                model: m.manifest.name.clone(),
                label: l.name.clone(),
                threshold: f64::from(l.threshold),
            })
        })
        .collect()
}

fn study_uid(study: &str) -> Result<(), HttpError> {
    crate::dicom::StudyInstanceUid::new(study)
        .map(|_| ())
        .map_err(|_| HttpError::bad_request("study: not a valid UID"))
}

/// `GET /api/v1/studies/{study}/findings/{finding}/feedback`: the current verdicts on one
/// finding, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/studies/{study}/findings/{finding}/feedback",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("finding" = i64, Path, description = "the finding's id (`id` in the study's findings)")
    ),
    responses(
        (status = 200, description = "each reviewer's current verdict, oldest first", body = [Feedback]),
        (status = 404, description = "no such finding among those you may see", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn finding_feedback(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, finding)): Path<(String, i64)>,
) -> Result<Json<Vec<Feedback>>, HttpError> {
    study_uid(&study)?;
    state
        .archive
        .index()
        .finding_feedback(&who, &study, Some(finding))
        .await?
        .map(Json)
        .ok_or_else(|| HttpError::not_found("no such finding"))
}

/// `POST /api/v1/studies/{study}/findings/{finding}/feedback`: records the caller's verdict,
/// replacing theirs.
#[utoipa::path(
    post,
    path = "/api/v1/studies/{study}/findings/{finding}/feedback",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("finding" = i64, Path, description = "the finding's id (`id` in the study's findings)")
    ),
    request_body = NewFeedback,
    responses(
        (status = 201, description = "recorded; it replaces your earlier verdict", body = Feedback),
        (status = 400, description = "a field is not valid", body = super::api::Problem, content_type = "application/problem+json"),
        (status = 403, description = "only clinicians and admins give feedback", body = super::api::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such finding among those you may see", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn record_feedback(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, finding)): Path<(String, i64)>,
    json: Result<Json<NewFeedback>, JsonRejection>,
) -> Result<Response, HttpError> {
    study_uid(&study)?;
    let feedback = json?.0;
    let recorded = state
        .archive
        .index()
        .record_feedback(&who, &study, finding, feedback, thresholds(&state))
        .await??;
    Ok((StatusCode::CREATED, Json(recorded)).into_response())
}

/// The export's query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Only feedback recorded at or after this time (RFC 3339, e.g. `2026-01-01T00:00:00Z`).
    since: Option<String>,
    /// `csv` for text/csv; JSON otherwise.
    format: Option<String>,
}

/// `since` as a time, or why not.
fn since(text: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>, HttpError> {
    match text.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&chrono::Utc)))
            .map_err(|_| {
                HttpError::bad_request("since: a time as RFC 3339, e.g. 2026-01-01T00:00:00Z")
            }),
    }
}

/// A comment as a spreadsheet cell: one that begins like a formula is prefixed with `'` so a
/// spreadsheet opening the export shows it as text and never runs it (CSV injection).
fn cell_text(comment: &str) -> String {
    if comment.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{comment}")
    } else {
        comment.to_string()
    }
}

/// `GET /api/v1/feedback?since=&format=csv`: every current verdict on the studies the caller
/// may see (a researcher: those granted for research), with the finding as it was reviewed.
#[utoipa::path(
    get,
    path = "/api/v1/feedback",
    params(ExportQuery),
    responses(
        (status = 200, description = "one row per verdict, oldest first (text/csv with format=csv)", body = [FeedbackRow]),
        (status = 400, description = "since or format is not valid", body = super::api::Problem, content_type = "application/problem+json"),
        (status = 403, description = "only researchers and admins read the export", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn export(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, HttpError> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(HttpError::bad_request("format: csv or json")),
    };
    let since = since(q.since.as_deref())?;
    let rows = state.archive.index().feedback_export(&who, since).await??;
    if !csv {
        return Ok(Json(rows).into_response());
    }
    let body = csv_text(&rows).map_err(HttpError::internal)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"feedback.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// The rows as CSV (RFC 4180), with a header line.
fn csv_text(rows: &[FeedbackRow]) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "study_instance_uid",
        "series_instance_uid",
        "sop_instance_uid",
        "model",
        "model_version",
        "label",
        "probability",
        "threshold",
        "verdict",
        "comment",
        "reviewer_role",
        "facility",
        "created_at",
    ])?;
    for r in rows {
        out.write_record([
            r.study_instance_uid.as_str(),
            &r.series_instance_uid,
            &r.sop_instance_uid,
            &r.model,
            &r.model_version,
            &r.label,
            &r.probability.to_string(),
            &r.threshold.map(|t| t.to_string()).unwrap_or_default(),
            r.verdict.as_str(),
            &cell_text(&r.comment),
            &r.reviewer_role,
            &r.facility,
            &r.created_at,
        ])?;
    }
    out.into_inner().map_err(|e| e.into_error().into())
}
