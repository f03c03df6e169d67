//! HTTP adapter (axum). For now the health check; DICOMweb and the API build on this router.

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::ingest::Archive;

/// The HTTP routes.
pub fn router(archive: Archive) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(archive)
}

/// `GET /healthz`: 200 when the index answers, 503 otherwise. Reveals no patient data.
async fn healthz(
    axum::extract::State(archive): axum::extract::State<Archive>,
) -> (StatusCode, Json<serde_json::Value>) {
    match archive.index.instance_count().await {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": e.to_string() })),
        ),
    }
}
