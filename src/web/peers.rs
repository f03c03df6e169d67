//! `/api/v1` for sharing between servers (issue #10): peers (superadmin), the delivery exchange a
//! peer makes with this server (a `node` token: the presence check and manifest → receipt), and
//! a study's delivery timeline. Thin: the rules are in `forward/`.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::HttpError;
use super::AppState;
use crate::access::Principal;
use crate::forward::outbox::DestinationDelivery;
use crate::forward::receiving::{receipt_for, ReceiveError};
use crate::forward::registry::RegistryChangeError;
use crate::forward::PeerSpec;

/// Most instances one presence check asks about.
const MAX_CHECK: usize = 10_000;

impl From<RegistryChangeError> for HttpError {
    fn from(e: RegistryChangeError) -> Self {
        match e {
            RegistryChangeError::Index(e) => e.into(),
            RegistryChangeError::Configured(_) => {
                HttpError::new(StatusCode::CONFLICT, e.to_string())
            }
            RegistryChangeError::Invalid(_) => HttpError::bad_request(e.to_string()),
        }
    }
}

impl From<ReceiveError> for HttpError {
    fn from(e: ReceiveError) -> Self {
        match e {
            ReceiveError::Index(e) => e.into(),
            ReceiveError::Invalid(_) => HttpError::bad_request(e.to_string()),
            ReceiveError::Untrusted(_) => {
                HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            ReceiveError::NotYours(_) => HttpError::new(StatusCode::FORBIDDEN, e.to_string()),
            ReceiveError::Key(e) => HttpError::internal(e),
        }
    }
}

fn superadmin(who: &Principal) -> Result<(), HttpError> {
    if who.is_system_wide() {
        Ok(())
    } else {
        Err(HttpError::forbidden())
    }
}

/// Refuses, before reading the body, a caller that may not exchange deliveries.
fn may_deliver(who: &Principal) -> Result<(), HttpError> {
    if who.permits(crate::access::Action::Deliver) {
        Ok(())
    } else {
        Err(HttpError::forbidden())
    }
}

/// A peer as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeerView {
    /// Its description.
    #[serde(flatten)]
    pub spec: PeerSpec,
    /// Whether it comes from the configuration file (the API cannot delete it).
    pub configured: bool,
}

/// `GET /api/v1/peers` (superadmin): every peer.
#[utoipa::path(get, path = "/api/v1/peers", responses(
    (status = 200, description = "the peers, by name", body = [PeerView]),
    (status = 403, description = "not a superadmin", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn peers(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Vec<PeerView>>, HttpError> {
    superadmin(&who)?;
    Ok(Json(
        state
            .peers
            .list()
            .into_iter()
            .map(|p| PeerView {
                spec: p.spec(),
                configured: p.configured,
            })
            .collect(),
    ))
}

/// `POST /api/v1/peers` (superadmin): adds a peer and starts sending to it.
#[utoipa::path(post, path = "/api/v1/peers", request_body = PeerSpec, responses(
    (status = 201, description = "added", body = PeerView),
    (status = 400, description = "a field is not valid, or the name is taken", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 403, description = "not a superadmin", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn add_peer(
    State(state): State<AppState>,
    Caller(who): Caller,
    json: Result<Json<PeerSpec>, JsonRejection>,
) -> Result<Response, HttpError> {
    superadmin(&who)?;
    let peer = state.peers.add(&who, json?.0).await?;
    Ok((
        StatusCode::CREATED,
        Json(PeerView {
            spec: peer.spec(),
            configured: false,
        }),
    )
        .into_response())
}

/// `DELETE /api/v1/peers/{name}` (superadmin): removes a peer added through the API. What is
/// queued for it stays queued.
#[utoipa::path(delete, path = "/api/v1/peers/{name}", params(("name" = String, Path, description = "the peer's name")), responses(
    (status = 204, description = "removed"),
    (status = 404, description = "no such peer", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 409, description = "configured in the TOML file", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn remove_peer(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, HttpError> {
    superadmin(&who)?;
    if state.peers.remove(&who, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HttpError::not_found(format!("no peer named {name}")))
    }
}

/// What to queue again.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RetryQuery {
    /// Only this study.
    study: Option<String>,
}

/// How many instances were queued again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    /// Instances queued again.
    pub requeued: usize,
}

/// `POST /api/v1/peers/{name}/retry` (superadmin): queues again what was dead-lettered or is
/// waiting out a back-off for the peer.
#[utoipa::path(post, path = "/api/v1/peers/{name}/retry", params(("name" = String, Path, description = "the peer's name"), RetryQuery), responses(
    (status = 200, description = "queued again", body = Requeued),
    (status = 404, description = "no such peer", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn retry(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(name): Path<String>,
    Query(q): Query<RetryQuery>,
) -> Result<Json<Requeued>, HttpError> {
    superadmin(&who)?;
    if state.peers.get(&name).is_none() {
        return Err(HttpError::not_found(format!("no peer named {name}")));
    }
    let requeued = state
        .archive
        .index()
        .retry_dead_outbox(&who, &name, q.study)
        .await?;
    Ok(Json(Requeued { requeued }))
}

/// `GET /api/v1/studies/{study}/deliveries`: where the study was sent and how far each
/// destination got (queued → sent → stored → verified), with manifests and receipts.
#[utoipa::path(get, path = "/api/v1/studies/{study}/deliveries", params(("study" = String, Path, description = "Study Instance UID")), responses(
    (status = 200, description = "one entry per destination", body = [DestinationDelivery]),
    (status = 404, description = "no such study among those you may see", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn study_deliveries(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(study): Path<String>,
) -> Result<Json<Vec<DestinationDelivery>>, HttpError> {
    state
        .archive
        .index()
        .study_deliveries(&who, &study)
        .await?
        .map(Json)
        .ok_or_else(|| HttpError::not_found("no such study among those you may see"))
}

/// One instance a peer asks about.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldInstance {
    /// SOP Instance UID.
    sop_instance_uid: String,
    /// SHA-256 (hex) of its data set.
    sha256: String,
}

/// A presence check.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceCheck {
    /// The instances, at most 10 000.
    instances: Vec<HeldInstance>,
}

/// Its answer, in the same order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Presence {
    /// Whether an instance with that SOP Instance UID and SHA-256 is stored here.
    pub present: Vec<bool>,
}

/// `POST /api/v1/deliveries/check` (node): which of these instances are stored here with these
/// bytes, so that a sender does not send them again.
#[utoipa::path(post, path = "/api/v1/deliveries/check", request_body = PresenceCheck, responses(
    (status = 200, description = "one answer per instance", body = Presence),
    (status = 400, description = "more than 10 000 instances, or not JSON", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn check(
    State(state): State<AppState>,
    Caller(who): Caller,
    json: Result<Json<PresenceCheck>, JsonRejection>,
) -> Result<Json<Presence>, HttpError> {
    may_deliver(&who)?;
    let asked = json?.0.instances;
    if asked.len() > MAX_CHECK {
        return Err(HttpError::bad_request(format!(
            "ask about at most {MAX_CHECK} instances at once"
        )));
    }
    let pairs = asked
        .into_iter()
        .map(|i| (i.sop_instance_uid, i.sha256))
        .collect();
    Ok(Json(Presence {
        present: state.archive.index().instances_present(&who, pairs).await?,
    }))
}

/// `POST /api/v1/deliveries` (node): a signed manifest (`application/jose`, compact JWS) of a
/// study sent here; the answer is the receipt signed by the destination facility's key.
#[utoipa::path(post, path = "/api/v1/deliveries", request_body(content = String, content_type = "application/jose"), responses(
    (status = 200, description = "the signed receipt (compact JWS)", body = String, content_type = "application/jose"),
    (status = 400, description = "not a manifest", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 403, description = "addressed to a facility you do not act for", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 422, description = "the signature does not verify, or the key is not trusted", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn deliver(
    State(state): State<AppState>,
    Caller(who): Caller,
    body: Bytes,
) -> Result<Response, HttpError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| HttpError::bad_request("the manifest is not text: send the compact JWS"))?;
    if !who.permits(crate::access::Action::Deliver) {
        return Err(HttpError::forbidden());
    }
    let receipt = receipt_for(&state.archive, &who, text).await?;
    Ok(([(header::CONTENT_TYPE, "application/jose")], receipt).into_response())
}
