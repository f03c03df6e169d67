//! `POST /api/v1/peers/{name}/retrieve`: a patient's priors fetched from a peer (issue #10
//! item 5). Thin: the flow is in `forward/priors.rs`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::HttpError;
use super::AppState;
use crate::forward::dicomweb_client::PeerCallError;
use crate::forward::priors::{
    may_retrieve, retrieve, PriorsError, PriorsQuery, RetrieveLimits, RetrieveReport,
};

impl From<PriorsError> for HttpError {
    fn from(e: PriorsError) -> Self {
        match e {
            PriorsError::Invalid(_) => HttpError::bad_request(e.to_string()),
            PriorsError::Forbidden => HttpError::new(StatusCode::FORBIDDEN, e.to_string()),
            PriorsError::Unsupported(_) => {
                HttpError::new(StatusCode::NOT_IMPLEMENTED, e.to_string())
            }
            // The peer's answer (its reason, never ours to trust with patient data: tramy peers
            // put none in problem details) or why it could not be reached.
            PriorsError::Peer(PeerCallError::Refused(m) | PeerCallError::Transient(m)) => {
                HttpError::new(StatusCode::BAD_GATEWAY, m)
            }
            PriorsError::Busy => HttpError::busy(e.to_string()),
            PriorsError::Index(e) => e.into(),
        }
    }
}

/// What to fetch: a study, or a patient's studies in a period.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrieveRequest {
    /// A Study Instance UID.
    study: Option<String>,
    /// A patient: `ISSUER|ID`, or `ID` for any issuer.
    patient: Option<String>,
    /// With `patient`: the first study date, `YYYYMMDD`.
    since: Option<String>,
    /// With `patient`: the last study date, `YYYYMMDD`.
    until: Option<String>,
}

/// `POST /api/v1/peers/{name}/retrieve` (a facility's clinician or admin, or superadmin): asks
/// the peer (QIDO-RS) for the study or the patient's studies that its grants let this facility
/// see, retrieves their instances (WADO-RS) and files them here as the caller's facility's.
/// Nothing the peer allows matched: 200 with no studies.
#[utoipa::path(post, path = "/api/v1/peers/{name}/retrieve", request_body = RetrieveRequest,
    params(("name" = String, Path, description = "the peer's name")), responses(
    (status = 200, description = "per study: instances retrieved, already here, failed with reasons (no studies: nothing the peer allows matched)", body = RetrieveReport),
    (status = 400, description = "neither or both of study and patient, or a malformed value", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 403, description = "not a facility's clinician or admin, nor a superadmin", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 404, description = "no such peer", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 501, description = "a DIMSE peer (not available yet)", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 502, description = "the peer could not be reached or refused the query", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 503, description = "four retrievals are running already; Retry-After says when to try again", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn retrieve_priors(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    json: Result<Json<RetrieveRequest>, JsonRejection>,
) -> Result<Json<RetrieveReport>, HttpError> {
    if !may_retrieve(&who) {
        return Err(PriorsError::Forbidden.into());
    }
    let asked = json?.0;
    let query = PriorsQuery::parse(
        asked.study.as_deref(),
        asked.patient.as_deref(),
        asked.since.as_deref(),
        asked.until.as_deref(),
    )?;
    let Some(peer) = state.peers.get(&name) else {
        return Err(HttpError::not_found(format!("no peer named {name}")));
    };
    let f = &state.config.forwarding;
    let limits = RetrieveLimits {
        max_studies: f.retrieve_max_studies,
        max_instances: f.retrieve_max_instances,
        timeout: f.retrieve_timeout,
        max_instance_bytes: state
            .config
            .ingest
            .max_instance_mb
            .saturating_mul(1024 * 1024),
    };
    Ok(Json(
        retrieve(&state.archive, peer, &who, &query, limits).await?,
    ))
}
