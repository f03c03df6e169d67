//! HTTP adapter (axum): the health check, DICOMweb (PS3.18) under `/dicomweb`, and the cross-cutting
//! HTTP conventions (CORS for browser viewers, gzip, request tracing).
//!
//! Handlers stay thin: they parse the request, call the archive or the index, and shape the
//! response. The domain does not know about axum.

pub mod api;
pub mod dicomweb;
pub mod error;
pub mod listener;
pub mod observability;
pub mod pool;
pub mod wado_uri;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
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
}

impl AppState {
    /// The state handlers share, with CPU pools sized from `config`.
    pub fn new(
        archive: Archive,
        config: Arc<Config>,
        models: Vec<Arc<crate::triage::LoadedModel>>,
    ) -> Self {
        let renders = pool::CpuPool::size_or_cores(config.http.max_concurrent_renders);
        AppState {
            archive,
            config,
            models: Arc::new(models),
            renders: pool::CpuPool::new(renders, "rendering"),
            heatmaps: pool::CpuPool::new(renders / 2, "heatmap"),
        }
    }
}

/// The HTTP routes with their middleware.
pub fn router(state: AppState) -> Router {
    let cors = cors_layer(&state.config.http.cors_allowed_origins);
    observability::prometheus();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(observability::metrics_endpoint))
        .route("/openapi.json", get(observability::openapi))
        .route("/api/v1/studies/{study}/findings", get(api::study_findings))
        .route("/api/v1/worklist", get(api::worklist))
        .route(
            "/api/v1/studies/{study}/series/{series}/instances/{sop}/heatmap",
            get(api::heatmap),
        )
        .route("/api/v1/triage/jobs", get(api::jobs))
        .nest("/dicomweb", dicomweb::routes())
        .route("/wado", get(wado_uri::wado))
        .route_layer(axum::middleware::from_fn(observability::track))
        .with_state(state)
        .layer(CompressionLayer::new().gzip(true))
        .layer(cors)
        .layer(TraceLayer::new_for_http())
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

/// `GET /healthz`: 200 when the index answers, 503 otherwise. Reveals no patient data.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the archive answers"), (status = 503, description = "the index does not answer")))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match state.archive.index.instance_count().await {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": e.to_string() })),
        ),
    }
}
