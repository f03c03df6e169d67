//! `/api/v1` for patients' consents and referral grants (issue #9 items 6 and 7). Thin: parse,
//! call the index, shape the answer; the rules are in `access/sharing.rs`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::Caller;
use super::error::HttpError;
use super::AppState;
use crate::access::sharing::{
    Consent, Grant, IssuedShareLink, NewConsent, NewGrant, NewPatientLink, NewShareLink,
    PatientLink, SharingError,
};
use crate::audit::PatientRef;
use crate::store::names::LinkSuggestion;

impl From<SharingError> for HttpError {
    fn from(e: SharingError) -> Self {
        match e {
            SharingError::Invalid(reason) => HttpError::bad_request(reason),
            SharingError::NotFound(reason) => HttpError::not_found(reason),
        }
    }
}

fn patient(text: &str) -> Result<PatientRef, HttpError> {
    PatientRef::parse(text).ok_or_else(|| {
        HttpError::bad_request("patient: use ID or ISSUER|ID (URL-encoded; at most 64 characters)")
    })
}

/// `POST /api/v1/patients/{patient}/consents`: records a consent.
#[utoipa::path(
    post,
    path = "/api/v1/patients/{patient}/consents",
    params(("patient" = String, Path, description = "PatientID, or IssuerOfPatientID|PatientID")),
    request_body = NewConsent,
    responses(
        (status = 201, description = "recorded", body = Consent),
        (status = 400, description = "a field is not valid", body = super::api::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such patient among the studies you may see", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn record_consent(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(p): Path<String>,
    json: Result<Json<NewConsent>, JsonRejection>,
) -> Result<Response, HttpError> {
    let (p, consent) = (patient(&p)?, json?.0);
    let recorded = state
        .archive
        .index()
        .record_consent(&who, p, consent)
        .await??;
    Ok((StatusCode::CREATED, Json(recorded)).into_response())
}

/// `GET /api/v1/patients/{patient}/consents`: the patient's consents, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/patients/{patient}/consents",
    params(("patient" = String, Path, description = "PatientID, or IssuerOfPatientID|PatientID")),
    responses(
        (status = 200, description = "consents, newest first", body = [Consent]),
        (status = 404, description = "no such patient among the studies you may see", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn consents(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(p): Path<String>,
) -> Result<Json<Vec<Consent>>, HttpError> {
    let p = patient(&p)?;
    Ok(Json(state.archive.index().consents(&who, p).await??))
}

/// `POST /api/v1/patients/{patient}/consents/{id}/revoke`: revokes a consent; grants resting on
/// it stop at once.
#[utoipa::path(
    post,
    path = "/api/v1/patients/{patient}/consents/{id}/revoke",
    params(
        ("patient" = String, Path, description = "PatientID, or IssuerOfPatientID|PatientID"),
        ("id" = String, Path, description = "the consent's id")
    ),
    responses(
        (status = 200, description = "revoked", body = Consent),
        (status = 404, description = "no such consent", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn revoke_consent(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((p, id)): Path<(String, String)>,
) -> Result<Json<Consent>, HttpError> {
    let p = patient(&p)?;
    Ok(Json(
        state.archive.index().revoke_consent(&who, p, id).await??,
    ))
}

/// `POST /api/v1/grants`: lets another facility see a study or a patient's studies.
#[utoipa::path(
    post,
    path = "/api/v1/grants",
    request_body = NewGrant,
    responses(
        (status = 201, description = "made; `id` names it", body = Grant),
        (status = 400, description = "a field is not valid", body = super::api::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such study, patient, facility or consent", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn create_grant(
    State(state): State<AppState>,
    Caller(who): Caller,
    json: Result<Json<NewGrant>, JsonRejection>,
) -> Result<Response, HttpError> {
    let grant = json?.0;
    let made = state.archive.index().create_grant(&who, grant).await??;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// `GET /api/v1/grants`: the grants the caller's facility gave or received.
#[utoipa::path(
    get,
    path = "/api/v1/grants",
    responses((status = 200, description = "grants, newest first", body = [Grant]))
)]
pub async fn grants(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Vec<Grant>>, HttpError> {
    Ok(Json(state.archive.index().grants(&who).await?))
}

/// `DELETE /api/v1/grants/{id}`: revokes a grant; the other facility loses access at once.
#[utoipa::path(
    delete,
    path = "/api/v1/grants/{id}",
    params(("id" = String, Path, description = "the grant's id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 404, description = "no such grant given by your facility", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn revoke_grant(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    state.archive.index().revoke_grant(&who, id).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/patients/{patient}/links`: the patient of a study who arrived without an ID is
/// this patient; their studies answer queries, grants and consents together from now on.
#[utoipa::path(
    post,
    path = "/api/v1/patients/{patient}/links",
    params(("patient" = String, Path, description = "PatientID, or IssuerOfPatientID|PatientID")),
    request_body = NewPatientLink,
    responses(
        (status = 201, description = "linked", body = PatientLink),
        (status = 400, description = "the study's patient has an ID, or is linked already", body = super::api::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such patient or study among those you may see", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn link_patient(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(p): Path<String>,
    json: Result<Json<NewPatientLink>, JsonRejection>,
) -> Result<Response, HttpError> {
    let (p, link) = (patient(&p)?, json?.0);
    let made = state.archive.index().link_patient(&who, p, link).await??;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// `GET /api/v1/patients/{patient}/links`: the patient's links, undone ones included.
#[utoipa::path(
    get,
    path = "/api/v1/patients/{patient}/links",
    params(("patient" = String, Path, description = "PatientID, or IssuerOfPatientID|PatientID")),
    responses(
        (status = 200, description = "links, newest first", body = [PatientLink]),
        (status = 404, description = "no such patient among the studies you may see", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn patient_links(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(p): Path<String>,
) -> Result<Json<Vec<PatientLink>>, HttpError> {
    let p = patient(&p)?;
    Ok(Json(state.archive.index().patient_links(&who, p).await??))
}

/// `GET /api/v1/patients/{patient}/link-suggestions`: provisional patients (arrived without an
/// ID) who may be this patient, each with what matched; tramy never links them by itself.
#[utoipa::path(
    get,
    path = "/api/v1/patients/{patient}/link-suggestions",
    params(("patient" = String, Path, description = "PatientID, or IssuerOfPatientID|PatientID")),
    responses(
        (status = 200, description = "candidates, oldest record first", body = [LinkSuggestion]),
        (status = 404, description = "no such patient among the studies you may see", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn link_suggestions(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(p): Path<String>,
) -> Result<Json<Vec<LinkSuggestion>>, HttpError> {
    let p = patient(&p)?;
    Ok(Json(
        state.archive.index().link_suggestions(&who, p).await??,
    ))
}

/// `DELETE /api/v1/patients/{patient}/links/{id}`: undoes a link.
#[utoipa::path(
    delete,
    path = "/api/v1/patients/{patient}/links/{id}",
    params(
        ("patient" = String, Path, description = "PatientID, or IssuerOfPatientID|PatientID"),
        ("id" = String, Path, description = "the link's id")
    ),
    responses(
        (status = 204, description = "undone"),
        (status = 404, description = "no such live link", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn unlink_patient(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((p, id)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    let p = patient(&p)?;
    state.archive.index().unlink_patient(&who, p, id).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/share-links`: a link to one study for a doctor with no account (revocable with
/// `DELETE /api/v1/grants/{id}`, expiring, under the patient's consent to any recipient or
/// break-glass).
#[utoipa::path(
    post,
    path = "/api/v1/share-links",
    request_body = NewShareLink,
    responses(
        (status = 201, description = "made; the token is shown only now", body = IssuedShareLink),
        (status = 400, description = "a field is not valid", body = super::api::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such study of your facility, or consent", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn create_share_link(
    State(state): State<AppState>,
    Caller(who): Caller,
    json: Result<Json<NewShareLink>, JsonRejection>,
) -> Result<Response, HttpError> {
    let link = json?.0;
    let made = state
        .archive
        .index()
        .create_share_link(&who, link)
        .await??;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}
