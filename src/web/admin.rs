//! `/api/v1` for the registry (issue #9 item 4): what `tramy facility|ae|token` do, over HTTP,
//! for a facility's `admin` (its own facility's AE titles and tokens) and a `superadmin` (all,
//! and facilities). Thin: the rules are in `registry.rs`, the scoping in the store.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::HttpError;
use super::AppState;
use crate::registry::{
    expiry_after, ApplicationEntity, Facility, FacilityKind, NewFacility, NewToken, RegistryError,
    TokenRecord,
};

impl From<RegistryError> for HttpError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Index(e) => e.into(),
            RegistryError::DuplicateFacility(_) | RegistryError::DuplicateAeTitle { .. } => {
                HttpError::new(StatusCode::CONFLICT, e.to_string())
            }
            RegistryError::UnknownFacility(_)
            | RegistryError::UnknownToken(_)
            | RegistryError::UnknownAeTitle(_) => HttpError::not_found(e.to_string()),
            RegistryError::Random(_) | RegistryError::TokenFile { .. } => HttpError::internal(e),
            RegistryError::Invalid(_)
            | RegistryError::FacilityRequired(_)
            | RegistryError::SuperadminHasNoFacility => HttpError::bad_request(e.to_string()),
        }
    }
}

/// A facility to register.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FacilityRequest {
    /// The national facility code.
    code: String,
    /// Its name.
    name: String,
    /// `commune_station`, `hospital` (default) or `hub`.
    #[serde(default)]
    kind: Option<FacilityKind>,
    /// The facility it refers patients to.
    #[serde(default)]
    parent: Option<String>,
}

/// `POST /api/v1/facilities` (superadmin).
#[utoipa::path(post, path = "/api/v1/facilities", request_body = FacilityRequest, responses(
    (status = 201, description = "registered", body = Facility),
    (status = 400, description = "a field is not valid", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 403, description = "not a superadmin", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 409, description = "the code is taken", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn add_facility(
    State(state): State<AppState>,
    Caller(who): Caller,
    json: Result<Json<FacilityRequest>, JsonRejection>,
) -> Result<Response, HttpError> {
    let r = json?.0;
    let facility = NewFacility {
        code: r.code,
        name: r.name,
        kind: r.kind.unwrap_or(FacilityKind::Hospital),
        parent: r.parent,
    };
    let made = state.archive.index().add_facility(&who, facility).await?;
    crate::facility_keys::ensure(&state.config.data_dir, &made.code)
        .map_err(HttpError::internal)?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// `GET /api/v1/facilities`: every facility (so a grant can name its recipient).
#[utoipa::path(get, path = "/api/v1/facilities", responses(
    (status = 200, description = "facilities by code", body = [Facility])
))]
pub async fn facilities(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Vec<Facility>>, HttpError> {
    Ok(Json(state.archive.index().facilities(&who).await?))
}

/// An AE title to register.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AeRequest {
    /// The AE title.
    ae_title: String,
    /// Its facility (an admin's own).
    facility: String,
    /// The host it must call from.
    #[serde(default)]
    host: Option<String>,
    /// The port it listens on at `host` (Storage Commitment results on a new association).
    #[serde(default)]
    port: Option<u16>,
}

/// `POST /api/v1/ae-titles`
#[utoipa::path(post, path = "/api/v1/ae-titles", request_body = AeRequest, responses(
    (status = 201, description = "registered", body = ApplicationEntity),
    (status = 400, description = "a field is not valid", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 403, description = "another facility's", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 409, description = "the AE title is taken", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn add_ae_title(
    State(state): State<AppState>,
    Caller(who): Caller,
    json: Result<Json<AeRequest>, JsonRejection>,
) -> Result<Response, HttpError> {
    let r = json?.0;
    let made = state
        .archive
        .index()
        .add_application_entity_at(&who, &r.ae_title, &r.facility, r.host.as_deref(), r.port)
        .await?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// `GET /api/v1/ae-titles`: the caller's facility's (a superadmin: all).
#[utoipa::path(get, path = "/api/v1/ae-titles", responses(
    (status = 200, description = "AE titles", body = [ApplicationEntity])
))]
pub async fn ae_titles(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Vec<ApplicationEntity>>, HttpError> {
    Ok(Json(
        state.archive.index().application_entities(&who).await?,
    ))
}

/// `DELETE /api/v1/ae-titles/{ae_title}`: unregisters an AE title of the caller's facility
/// (a superadmin: any); it may not open associations from now on.
#[utoipa::path(delete, path = "/api/v1/ae-titles/{ae_title}", params(("ae_title" = String, Path, description = "the AE title")), responses(
    (status = 204, description = "removed"),
    (status = 400, description = "not a valid AE title", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 403, description = "not an admin", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 404, description = "no such AE title of your facility", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn remove_ae_title(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(ae_title): Path<String>,
) -> Result<StatusCode, HttpError> {
    state
        .archive
        .index()
        .remove_application_entity(&who, &ae_title)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A token to make.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The facility it acts for (absent only for a superadmin token).
    #[serde(default)]
    facility: Option<String>,
    /// Its role.
    role: crate::auth::Role,
    /// Whose or what it is.
    #[serde(default)]
    name: String,
    /// How long it lives, e.g. `30d`, `12h`; absent: until revoked.
    #[serde(default)]
    expires_in: Option<String>,
}

/// A token just made: the only time its text is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedTokenView {
    /// The token: send it as `Authorization: Bearer <token>`.
    token: String,
    /// Its public id (for listing and revoking).
    id: String,
}

/// `POST /api/v1/tokens`
#[utoipa::path(post, path = "/api/v1/tokens", request_body = TokenRequest, responses(
    (status = 201, description = "made; the token is shown only now", body = IssuedTokenView),
    (status = 400, description = "a field is not valid", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 403, description = "another facility's, or a superadmin token asked by an admin", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn create_token(
    State(state): State<AppState>,
    Caller(who): Caller,
    json: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<Response, HttpError> {
    let r = json?.0;
    let expires_at = r
        .expires_in
        .map(|e| expiry_after(&e, chrono::Utc::now()))
        .transpose()?;
    let request = NewToken {
        facility: r.facility,
        role: r.role,
        name: r.name,
        expires_at,
    };
    let issued = state.archive.index().create_token(&who, request).await?;
    let view = IssuedTokenView {
        token: issued.text,
        id: issued.id,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /api/v1/tokens`: records, never tokens.
#[utoipa::path(get, path = "/api/v1/tokens", responses(
    (status = 200, description = "token records", body = [TokenRecord])
))]
pub async fn tokens(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Vec<TokenRecord>>, HttpError> {
    Ok(Json(state.archive.index().tokens(&who).await?))
}

/// `DELETE /api/v1/tokens/{id}`: revokes a token from now on.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", params(("id" = String, Path, description = "the token's public id")), responses(
    (status = 204, description = "revoked"),
    (status = 404, description = "no such token of your facility", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    state.archive.index().revoke_token(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/facilities/{code}/keys`: the facility's public signing key as a JWK Set, to check
/// the manifests and receipts it signs.
#[utoipa::path(get, path = "/api/v1/facilities/{code}/keys", params(("code" = String, Path, description = "the facility's code")), responses(
    (status = 200, description = "its public keys (Ed25519, RFC 8037)", body = crate::facility_keys::PublicJwkSet),
    (status = 404, description = "no such facility", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn facility_keys(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(code): Path<String>,
) -> Result<Json<crate::facility_keys::PublicJwkSet>, HttpError> {
    crate::registry::check_facility_code(&code)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    if !state.archive.index().facility_registered(&who, &code)? {
        return Err(HttpError::not_found(format!("no facility {code}")));
    }
    let key =
        crate::facility_keys::ensure(&state.config.data_dir, &code).map_err(HttpError::internal)?;
    Ok(Json(crate::facility_keys::PublicJwkSet {
        keys: vec![crate::facility_keys::public_jwk(&key)],
    }))
}
