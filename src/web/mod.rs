//! HTTP adapter (axum): the health check, DICOMweb (PS3.18) under `/dicomweb`, a browser viewer's
//! files at the root when configured (`viewer.rs`), and the cross-cutting
//! HTTP conventions (CORS for browser viewers, gzip for text bodies, a WARN line for every failed
//! request, request tracing).
//!
//! Handlers stay thin: they parse the request, call the archive or the index, and shape the
//! response. The domain does not know about axum.

pub mod admin;
pub mod api;
pub mod audit;
pub mod audit_log;
pub mod auth;
pub mod dicomweb;
pub mod error;
pub mod feedback;
pub mod listener;
pub mod login;
pub mod observability;
pub mod peers;
pub mod pool;
pub mod priors;
pub mod research;
pub mod sharing;
pub mod stats;
pub mod ui;
pub mod viewer;
pub mod wado_uri;

use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::http::{HeaderValue, StatusCode};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde_json::json;
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::ingest::Archive;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The archive.
    pub archive: Archive,
    /// Server configuration.
    pub config: Arc<Config>,
    /// Loaded triage models (for heatmaps).
    pub models: Arc<Vec<Arc<crate::triage::LoadedModel>>>,
    /// Slots for rendered images and thumbnails.
    pub renders: pool::CpuPool,
    /// Slots for occlusion heatmaps (seconds of CPU each): half the render slots.
    pub heatmaps: pool::CpuPool,
    /// Checks the credential of every request.
    pub authenticator: crate::auth::authenticator::Authenticator,
    /// The peers this server sends to and fetches from, with their senders.
    pub peers: crate::forward::registry::PeerRegistry,
    /// The web UI's open event streams.
    pub ui: ui::UiState,
}

impl AppState {
    /// The state handlers share, with CPU pools sized from `config`.
    pub fn new(
        archive: Archive,
        config: Arc<Config>,
        models: Vec<Arc<crate::triage::LoadedModel>>,
        authenticator: crate::auth::authenticator::Authenticator,
        peers: crate::forward::registry::PeerRegistry,
    ) -> Self {
        let renders = pool::CpuPool::size_or_cores(config.http.max_concurrent_renders);
        AppState {
            archive,
            config,
            models: Arc::new(models),
            renders: pool::CpuPool::new(renders, "rendering"),
            heatmaps: pool::CpuPool::new(renders / 2, "heatmap"),
            authenticator,
            peers,
            ui: ui::UiState::default(),
        }
    }
}

/// The HTTP routes with their middleware.
pub fn router(state: AppState) -> Router {
    let cors = cors_layer(&state.config.http.cors_allowed_origins);
    observability::prometheus();
    routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, route)| {
            router.route(&path, route)
        })
        .fallback(viewer::fallback)
        .route_layer(axum::middleware::from_fn(observability::track))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
        .layer(axum::middleware::from_fn(error::log_failures))
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .compress_when(SizeAbove::new(256).and(compressible)),
        )
        .layer(cors)
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// The tracing span of a request: its method and path, never its query (patient data) nor a
/// share link's token (a credential: tokens never reach a log, at any level).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let path = request.uri().path();
    let path = match path.strip_prefix("/share/") {
        Some(_) => "/share/(token)",
        None => path,
    };
    tracing::debug_span!("request", method = %request.method(), path)
}

/// Whether a response body is worth gzip: text (DICOM JSON and XML, JSON, `text/*`). DICOM,
/// images, octet-stream frames and multipart bodies are compressed already or binary; gzip costs
/// CPU on them for nothing and breaks clients that index into them.
fn compressible(
    _: StatusCode,
    _: axum::http::Version,
    headers: &axum::http::HeaderMap,
    _: &axum::http::Extensions,
) -> bool {
    let Some(content_type) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    // An event stream is never compressed: an encoder holds events back until its buffer fills.
    (essence.starts_with("text/") && essence != "text/event-stream")
        || matches!(
            essence.as_str(),
            "application/dicom+json"
                | "application/json"
                | "application/dicom+xml"
                | "application/xml"
                | "application/problem+json"
        )
}

/// Every route the router has: method, path and handler. The router is built from this list
/// and `route_table` reads it, so a test that walks `route_table` sees every route.
fn routes() -> Vec<(Method, String, MethodRouter<AppState>)> {
    let own = own_routes()
        .into_iter()
        .map(|(method, path, route)| (method, path.to_string(), route));
    let dicomweb = dicomweb::routes()
        .into_iter()
        .map(|(method, path, route)| (method, format!("/dicomweb{path}"), route));
    let browser = [
        (Method::GET, "/wado", get(wado_uri::wado)),
        (Method::GET, "/login", get(login::page)),
        (Method::POST, "/login", post(login::submit)),
        (Method::GET, "/login/oidc", get(login::oidc_start)),
        (
            Method::GET,
            "/login/oidc/callback",
            get(login::oidc_callback),
        ),
        (Method::POST, "/logout", post(login::logout)),
        (Method::GET, "/share/{token}", get(login::share_link)),
        (Method::GET, "/app-config.js", get(viewer::app_config)),
    ]
    .into_iter()
    .map(|(method, path, route)| (method, path.to_string(), route));
    let ui = ui::routes()
        .into_iter()
        .map(|(method, path, route)| (method, path.to_string(), route));
    own.chain(dicomweb).chain(browser).chain(ui).collect()
}

/// Method and path template of every route (the viewer's files are the fallback, not a route).
pub fn route_table() -> Vec<(Method, String)> {
    routes()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

/// tramy's own endpoints (DICOMweb is PS3.18's), each described in `observability::ApiDoc`; a
/// test keeps the two lists equal.
fn own_routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::GET, "/healthz", get(healthz)),
        (
            Method::GET,
            "/metrics",
            get(observability::metrics_endpoint),
        ),
        (Method::GET, "/openapi.json", get(observability::openapi)),
        (
            Method::GET,
            "/api/v1/studies/{study}/findings",
            get(api::study_findings),
        ),
        (Method::GET, "/api/v1/worklist", get(api::worklist)),
        (
            Method::GET,
            "/api/v1/studies/{study}/findings/{finding}/feedback",
            get(feedback::finding_feedback),
        ),
        (
            Method::POST,
            "/api/v1/studies/{study}/findings/{finding}/feedback",
            post(feedback::record_feedback),
        ),
        (Method::GET, "/api/v1/feedback", get(feedback::export)),
        (
            Method::GET,
            "/api/v1/studies/{study}/series/{series}/instances/{sop}/heatmap",
            get(api::heatmap),
        ),
        (
            Method::GET,
            "/api/v1/studies/{study}/series/{series}/instances/{sop}/anatomy-mask",
            get(api::anatomy_mask),
        ),
        (Method::GET, "/api/v1/triage/jobs", get(api::jobs)),
        (
            Method::POST,
            "/api/v1/patients/{patient}/consents",
            post(sharing::record_consent),
        ),
        (
            Method::GET,
            "/api/v1/patients/{patient}/consents",
            get(sharing::consents),
        ),
        (
            Method::POST,
            "/api/v1/patients/{patient}/consents/{id}/revoke",
            post(sharing::revoke_consent),
        ),
        (
            Method::POST,
            "/api/v1/patients/{patient}/links",
            post(sharing::link_patient),
        ),
        (
            Method::GET,
            "/api/v1/patients/{patient}/links",
            get(sharing::patient_links),
        ),
        (
            Method::GET,
            "/api/v1/patients/{patient}/link-suggestions",
            get(sharing::link_suggestions),
        ),
        (
            Method::DELETE,
            "/api/v1/patients/{patient}/links/{id}",
            axum::routing::delete(sharing::unlink_patient),
        ),
        (Method::POST, "/api/v1/grants", post(sharing::create_grant)),
        (
            Method::POST,
            "/api/v1/share-links",
            post(sharing::create_share_link),
        ),
        (Method::GET, "/api/v1/grants", get(sharing::grants)),
        (
            Method::DELETE,
            "/api/v1/grants/{id}",
            axum::routing::delete(sharing::revoke_grant),
        ),
        (
            Method::POST,
            "/api/v1/facilities",
            post(admin::add_facility),
        ),
        (Method::GET, "/api/v1/facilities", get(admin::facilities)),
        (
            Method::GET,
            "/api/v1/facilities/{code}/keys",
            get(admin::facility_keys),
        ),
        (Method::POST, "/api/v1/ae-titles", post(admin::add_ae_title)),
        (Method::GET, "/api/v1/ae-titles", get(admin::ae_titles)),
        (
            Method::DELETE,
            "/api/v1/ae-titles/{ae_title}",
            axum::routing::delete(admin::remove_ae_title),
        ),
        (Method::POST, "/api/v1/tokens", post(admin::create_token)),
        (Method::GET, "/api/v1/tokens", get(admin::tokens)),
        (
            Method::DELETE,
            "/api/v1/tokens/{id}",
            axum::routing::delete(admin::revoke_token),
        ),
        (Method::GET, "/api/v1/audit", get(audit::audit_events)),
        (Method::GET, "/api/v1/peers", get(peers::peers)),
        (Method::POST, "/api/v1/peers", post(peers::add_peer)),
        (
            Method::DELETE,
            "/api/v1/peers/{name}",
            axum::routing::delete(peers::remove_peer),
        ),
        (
            Method::POST,
            "/api/v1/peers/{name}/retry",
            post(peers::retry),
        ),
        (
            Method::GET,
            "/api/v1/studies/{study}/deliveries",
            get(peers::study_deliveries),
        ),
        (
            Method::POST,
            "/api/v1/deliveries",
            // A manifest of 10 000 instances is about 2.5 MB.
            post(peers::deliver).layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024)),
        ),
        (
            Method::POST,
            "/api/v1/deliveries/check",
            post(peers::check).layer(axum::extract::DefaultBodyLimit::max(4 * 1024 * 1024)),
        ),
        (
            Method::POST,
            "/api/v1/peers/{name}/retrieve",
            post(priors::retrieve_priors),
        ),
        (
            Method::GET,
            "/api/v1/facilities/{code}/stats",
            get(stats::facility_stats),
        ),
        (
            Method::POST,
            "/api/v1/research/exports",
            post(research::export),
        ),
    ]
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods(tower_http::cors::Any)
        .allow_headers(tower_http::cors::Any)
        .expose_headers([
            axum::http::header::WARNING,
            axum::http::header::CONTENT_TYPE,
        ])
}

/// The body of `/healthz`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the JSON `healthz` builds
pub struct Health {
    /// `ok` or `unavailable`.
    status: String,
    /// Why it is unavailable.
    reason: Option<String>,
}

/// `GET /healthz`: 200 when the index answers, 503 otherwise. Reveals no patient data.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the archive answers", body = Health), (status = 503, description = "the index does not answer", body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match state
        .archive
        .index()
        // A liveness probe of tramy itself: it reveals a count to no one.
        .instance_count(&crate::access::Principal::system())
        .await
    {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": e.to_string() })),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_every_own_route_and_nothing_else() {
        use utoipa::OpenApi;
        let doc = observability::ApiDoc::openapi();
        let documented: std::collections::BTreeSet<&str> =
            doc.paths.paths.keys().map(String::as_str).collect();
        let routed: std::collections::BTreeSet<&str> =
            own_routes().iter().map(|(_, path, _)| *path).collect();
        assert_eq!(documented, routed);
        // Every JSON answer has a schema a client generator can use.
        let json = serde_json::to_value(&doc).unwrap();
        for (path, item) in json["paths"].as_object().unwrap() {
            let operations = item.as_object().unwrap().values();
            let responses = operations.filter_map(|op| op["responses"].as_object());
            for (status, response) in responses.flatten() {
                for (media, content) in response["content"].as_object().into_iter().flatten() {
                    if media.contains("json") && path != "/openapi.json" {
                        assert!(
                            content.get("schema").is_some(),
                            "{path} {status} {media} has no schema"
                        );
                    }
                }
            }
        }
    }

    fn compresses(content_type: &str) -> bool {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            content_type.parse().unwrap(),
        );
        compressible(
            StatusCode::OK,
            axum::http::Version::HTTP_11,
            &h,
            &axum::http::Extensions::new(),
        )
    }

    #[test]
    fn only_text_bodies_are_gzip_compressed() {
        for text in [
            "application/dicom+json",
            "application/json",
            "application/dicom+xml",
            "text/plain; version=0.0.4",
            "Application/DICOM+JSON; charset=utf-8",
        ] {
            assert!(compresses(text), "{text}");
        }
        for binary in [
            "multipart/related; type=\"application/dicom\"; boundary=x",
            "multipart/related; type=\"application/dicom+json\"; boundary=x",
            "application/dicom",
            "application/octet-stream",
            "image/jpeg",
            "image/png",
            "text/event-stream",
        ] {
            assert!(!compresses(binary), "{binary}");
        }
    }
}
