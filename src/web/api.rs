//! tramy's own JSON API (`/api/v1`): AI findings per study, the triage worklist, and the triage
//! job queue for administrators.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::error::HttpError;
use super::AppState;
use crate::store::findings::{self, Finding, JobView, WorklistEntry};

/// `GET /api/v1/studies/{study}/findings`: every label's result on the study's instances.
#[utoipa::path(get, path = "/api/v1/studies/{study}/findings", params(("study" = String, Path, description = "Study Instance UID")), responses((status = 200, description = "findings, flagged first")))]
pub async fn study_findings(
    State(state): State<AppState>,
    Path(study): Path<String>,
) -> Result<Json<Vec<Finding>>, HttpError> {
    crate::dicom::StudyInstanceUid::new(&study)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let found = state
        .archive
        .index
        .read(move |c| Ok(findings::for_study(c, &study)?))
        .await
        .map_err(HttpError::internal)?;
    Ok(Json(found))
}

/// Paging of list endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    limit: Option<i64>,
    offset: Option<i64>,
    state: Option<String>,
}

/// `GET /api/v1/worklist`: studies by the urgency of their AI flags, then by arrival.
#[utoipa::path(get, path = "/api/v1/worklist", responses((status = 200, description = "studies, most urgent first")))]
pub async fn worklist(
    State(state): State<AppState>,
    Query(p): Query<Paging>,
) -> Result<Json<Vec<WorklistEntry>>, HttpError> {
    let (limit, offset) = (
        p.limit.unwrap_or(100).clamp(1, 1000),
        p.offset.unwrap_or(0).max(0),
    );
    let list = state
        .archive
        .index
        .read(move |c| Ok(findings::worklist(c, limit, offset)?))
        .await
        .map_err(HttpError::internal)?;
    Ok(Json(list))
}

/// `GET /api/v1/triage/jobs?state=dead`: the job queue, e.g. the dead letters with their reasons.
#[utoipa::path(get, path = "/api/v1/triage/jobs", responses((status = 200, description = "jobs, newest first")))]
pub async fn jobs(
    State(state): State<AppState>,
    Query(p): Query<Paging>,
) -> Result<Json<Vec<JobView>>, HttpError> {
    if let Some(s) = &p.state {
        if !["queued", "running", "done", "dead"].contains(&s.as_str()) {
            return Err(HttpError::bad_request(
                "state must be queued, running, done or dead",
            ));
        }
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let list = state
        .archive
        .index
        .read(move |c| Ok(findings::jobs(c, p.state.as_deref(), limit)?))
        .await
        .map_err(HttpError::internal)?;
    Ok(Json(list))
}
