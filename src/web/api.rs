//! tramy's own JSON API (`/api/v1`): AI findings per study, the triage worklist, and the triage
//! job queue for administrators.

use crate::web::auth::Caller;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::error::HttpError;
use super::AppState;
use crate::dicom::person_name::{query_words, MAX_QUERY_WORDS};
use crate::store::findings::{Finding, JobState, JobView, WorklistEntry};

/// `GET /api/v1/studies/{study}/findings`: every label's result on the study's instances.
#[utoipa::path(
    get,
    path = "/api/v1/studies/{study}/findings",
    params(("study" = String, Path, description = "Study Instance UID")),
    responses(
        (status = 200, description = "findings, flagged first", body = [Finding]),
        (status = 400, description = "not a valid UID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such study among those you may see", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn study_findings(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(study): Path<String>,
) -> Result<Json<Vec<Finding>>, HttpError> {
    crate::dicom::StudyInstanceUid::new(&study)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let found = state
        .archive
        .index()
        .findings_for_study(&who, &study)
        .await
        .map_err(HttpError::from)?
        .ok_or_else(|| HttpError::not_found("no such study"))?;
    Ok(Json(found))
}

/// An error as RFC 9457 problem details (the body of every 4xx/5xx response).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents `HttpError`'s body; never built
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    r#type: String,
    /// The status code's reason phrase.
    title: String,
    /// The status code.
    status: u16,
    /// What went wrong and what to do about it (never patient data or file paths).
    detail: String,
    /// The same as `detail`, for clients of earlier releases.
    reason: String,
}

/// Paging of list endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// At most this many (1 to 1000; default 100).
    limit: Option<i64>,
    /// Skip this many (worklist only).
    offset: Option<i64>,
    /// Only jobs in this state: queued, running, done, dead or skipped (jobs only).
    state: Option<String>,
    /// Only studies whose patient's name has words beginning with each word of this, accents
    /// and case aside, as QIDO-RS `fuzzymatching=true` (worklist only): `nguyen van`.
    patient_name: Option<String>,
}

/// `GET /api/v1/worklist`: studies by the urgency of their AI flags, then by arrival.
#[utoipa::path(
    get,
    path = "/api/v1/worklist",
    params(Paging),
    responses(
        (status = 200, description = "studies, most urgent first", body = [WorklistEntry]),
        (status = 400, description = "patient_name has more than 16 words", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn worklist(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(p): Query<Paging>,
) -> Result<Json<Vec<WorklistEntry>>, HttpError> {
    let (limit, offset) = (
        p.limit.unwrap_or(100).clamp(1, 1000),
        p.offset.unwrap_or(0).max(0),
    );
    let patient_name = p.patient_name.unwrap_or_default();
    if query_words(&patient_name).len() > MAX_QUERY_WORDS {
        return Err(HttpError::bad_request("patient_name: at most 16 words"));
    }
    let list = state
        .archive
        .index()
        .worklist(&who, limit, offset, patient_name)
        .await
        .map_err(HttpError::from)?;
    Ok(Json(list))
}

/// `GET /api/v1/triage/jobs?state=dead`: the job queue, e.g. the dead letters with their reasons.
#[utoipa::path(
    get,
    path = "/api/v1/triage/jobs",
    params(Paging),
    responses(
        (status = 200, description = "jobs, newest first", body = [JobView]),
        (status = 400, description = "unknown state", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn jobs(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(p): Query<Paging>,
) -> Result<Json<Vec<JobView>>, HttpError> {
    let job_state = match p.state.as_deref() {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            HttpError::bad_request("state must be queued, running, done, dead or skipped")
        })?),
    };
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let list = state
        .archive
        .index()
        .triage_jobs(&who, job_state, limit)
        .await
        .map_err(HttpError::from)?;
    Ok(Json(list))
}

/// Which model and label a heatmap is for.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HeatmapQuery {
    /// A loaded triage model's name.
    model: String,
    /// One of its labels.
    label: String,
}

/// `GET /api/v1/studies/{study}/series/{series}/instances/{sop}/heatmap?model=…&label=…`: where
/// the model looked for the label on this image (occlusion sensitivity, red = important), as PNG.
#[utoipa::path(
    get,
    path = "/api/v1/studies/{study}/series/{series}/instances/{sop}/heatmap",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("series" = String, Path, description = "Series Instance UID"),
        ("sop" = String, Path, description = "SOP Instance UID"),
        HeatmapQuery
    ),
    responses(
        (status = 200, description = "the image with the model's attention overlaid", content_type = "image/png"),
        (status = 404, description = "no such instance, model or label", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the heatmap pool is busy; retry after Retry-After", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn heatmap(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, series, sop)): Path<(String, String, String)>,
    Query(q): Query<HeatmapQuery>,
) -> Result<axum::response::Response, HttpError> {
    use axum::response::IntoResponse;
    // The instance first: what the caller may not see is not found, whatever the model.
    let (_, file) = super::dicomweb::instance_file(&state, &who, study, series, sop).await?;
    let model = state
        .models
        .iter()
        .find(|m| m.manifest.name == q.model)
        .cloned()
        .ok_or_else(|| HttpError::not_found(format!("no triage model {:?} is loaded", q.model)))?;
    let png = state
        .heatmaps
        .run(move || -> Result<Vec<u8>, HttpError> {
            let (input, _) = crate::triage::preprocess::from_dicom(&file, &model.manifest)
                .map_err(|e| HttpError::not_acceptable(e.to_string()))?;
            let first = input
                .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..1))
                .to_owned();
            let (importance, _) = crate::triage::heatmap::occlusion(&model, &first, &q.label)
                .map_err(|e| match e {
                    crate::triage::heatmap::HeatmapError::NoSuchLabel { .. } => {
                        HttpError::not_found(e.to_string())
                    }
                    other => HttpError::internal(other),
                })?;
            let image = crate::dicom::pixels::frame_image(&file, 1, None)
                .map_err(|e| HttpError::not_acceptable(e.to_string()))?;
            crate::triage::heatmap::overlay_png(&image, &importance).map_err(HttpError::internal)
        })
        .await??;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/png")], png).into_response())
}
