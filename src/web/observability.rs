//! Prometheus metrics at `/metrics` and the OpenAPI description of tramy's own (non-DICOMweb)
//! endpoints at `/openapi.json`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use utoipa::OpenApi;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide metrics recorder (once) and returns its handle.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                None
            }
        })
        .as_ref()
}

/// Counts requests and times them, labelled by route template (never by UID) and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("tramy_http_requests_total", &labels).increment(1);
    metrics::histogram!("tramy_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics_endpoint() -> Response {
    let body = prometheus().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The OpenAPI document of tramy's own endpoints. DICOMweb is described by PS3.18 itself.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tramy",
        description = "tramy's own HTTP endpoints. DICOMweb (STOW-RS, QIDO-RS, WADO-RS) lives under /dicomweb as PS3.18 defines it, and WADO-URI at /wado."
    ),
    paths(
        super::healthz,
        metrics_endpoint,
        super::api::study_findings,
        super::api::worklist,
        super::api::jobs
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
