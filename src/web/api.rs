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
    /// `true`: only studies with a reviewer's feedback on a finding; `false`: only those
    /// without (worklist only).
    reviewed: Option<bool>,
    /// Only studies this facility (its code) holds (worklist only).
    facility: Option<String>,
    /// Only studies with a series of this modality, e.g. `DX` (worklist only).
    modality: Option<String>,
    /// Only studies dated on or after this day, `YYYYMMDD` (worklist only).
    from: Option<String>,
    /// Only studies dated on or before this day, `YYYYMMDD` (worklist only).
    to: Option<String>,
    /// `true`: only studies with a flagged finding (worklist only).
    flagged: Option<bool>,
}

/// A worklist date parameter: DICOM DA (`YYYYMMDD`) or absent.
fn study_day(name: &str, value: Option<String>) -> Result<Option<String>, HttpError> {
    match value.filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) if chrono::NaiveDate::parse_from_str(v.trim(), "%Y%m%d").is_ok() => {
            Ok(Some(v.trim().to_string()))
        }
        Some(_) => Err(HttpError::bad_request(format!(
            "{name}: a date as YYYYMMDD"
        ))),
    }
}

/// `GET /api/v1/worklist`: studies by the urgency of their AI flags, then by arrival.
#[utoipa::path(
    get,
    path = "/api/v1/worklist",
    params(Paging),
    responses(
        (status = 200, description = "studies, most urgent first", body = [WorklistEntry]),
        (status = 400, description = "patient_name has more than 16 words, or a date is not YYYYMMDD", body = Problem, content_type = "application/problem+json")
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
    let filter = crate::store::findings::WorklistFilter {
        reviewed: p.reviewed,
        facility: p.facility.filter(|f| !f.trim().is_empty()),
        modality: p
            .modality
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty()),
        study_date_from: study_day("from", p.from)?,
        study_date_to: study_day("to", p.to)?,
        flagged_only: p.flagged.unwrap_or(false),
    };
    let list = state
        .archive
        .index()
        .worklist_filtered(&who, limit, offset, patient_name, filter)
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
    let gate = match model.manifest.routing.anatomy {
        Some(anatomy) => Some(gate_for(&state, anatomy)?),
        None => None,
    };
    let field_of_view = match model.manifest.preprocess.field_of_view {
        true => Some(field_of_view_model(&state)?),
        false => None,
    };
    let png = state
        .heatmaps
        .run(move || {
            let (gate, fov) = (gate.as_deref(), field_of_view.as_deref());
            crate::triage::heatmap::heatmap_png(&model, gate, fov, &file, &q.label)
                .map_err(heatmap_error)
        })
        .await??;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/png")], png).into_response())
}

/// The loaded anatomy gate for `anatomy`.
fn gate_for(
    state: &AppState,
    anatomy: crate::triage::manifest::Anatomy,
) -> Result<std::sync::Arc<crate::triage::LoadedModel>, HttpError> {
    state
        .models
        .iter()
        .find(|m| {
            m.manifest
                .gate
                .as_ref()
                .is_some_and(|g| g.anatomy == anatomy)
        })
        .cloned()
        .ok_or_else(|| HttpError::not_found(format!("no {anatomy} anatomy gate is loaded")))
}

/// The loaded field-of-view model.
fn field_of_view_model(
    state: &AppState,
) -> Result<std::sync::Arc<crate::triage::LoadedModel>, HttpError> {
    state
        .models
        .iter()
        .find(|m| m.manifest.task == crate::triage::manifest::Task::FieldOfView)
        .cloned()
        .ok_or_else(|| HttpError::not_found("no field-of-view model is loaded".to_string()))
}

/// A heatmap or mask error as the API answers it: an unknown label is not found, pixels that
/// cannot be decoded are not acceptable, the rest is the server's fault.
fn heatmap_error(e: crate::triage::heatmap::HeatmapError) -> HttpError {
    use crate::triage::heatmap::HeatmapError as E;
    match e {
        E::NoSuchLabel { .. } => HttpError::not_found(e.to_string()),
        E::Image(_) | E::Render(_) => HttpError::not_acceptable(e.to_string()),
        other => HttpError::internal(other),
    }
}

/// Which anatomy's mask.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnatomyMaskQuery {
    /// The anatomy, e.g. `chest` (the lung fields).
    anatomy: crate::triage::manifest::Anatomy,
}

/// `GET /api/v1/studies/{study}/series/{series}/instances/{sop}/anatomy-mask?anatomy=chest`:
/// where the anatomy gate finds the anatomy on this image (for `chest`, the lung fields), as a
/// PNG overlay of the image's size: the anatomy green and half transparent, the rest clear.
#[utoipa::path(
    get,
    path = "/api/v1/studies/{study}/series/{series}/instances/{sop}/anatomy-mask",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("series" = String, Path, description = "Series Instance UID"),
        ("sop" = String, Path, description = "SOP Instance UID"),
        AnatomyMaskQuery
    ),
    responses(
        (status = 200, description = "the anatomy as a transparent overlay", content_type = "image/png"),
        (status = 404, description = "no such instance, or no gate for the anatomy", body = Problem, content_type = "application/problem+json"),
        (status = 406, description = "the image's pixels cannot be decoded", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the heatmap pool is busy; retry after Retry-After", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn anatomy_mask(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, series, sop)): Path<(String, String, String)>,
    Query(q): Query<AnatomyMaskQuery>,
) -> Result<axum::response::Response, HttpError> {
    use axum::response::IntoResponse;
    let (_, file) = super::dicomweb::instance_file(&state, &who, study, series, sop).await?;
    let gate = gate_for(&state, q.anatomy)?;
    let png = state
        .heatmaps
        .run(move || {
            crate::triage::heatmap::anatomy_overlay_png(&gate, &file).map_err(heatmap_error)
        })
        .await??;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/png")], png).into_response())
}
