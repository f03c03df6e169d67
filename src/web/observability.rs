//! Prometheus metrics at `/metrics` and the OpenAPI description of tramy's own (non-DICOMweb)
//! endpoints at `/openapi.json`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use utoipa::OpenApi;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide metrics recorder (once) and returns its handle. Latencies and
/// batch sizes are exported as Prometheus histograms (buckets aggregate across instances and
/// time, quantile summaries do not), and every metric carries a `# HELP` line.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("tramy_http_request_duration_seconds".into()),
                    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("tramy_triage_batch_size".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("tramy_triage_inference_seconds".into()),
                        &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                    )
                })
                .and_then(|b| b.install_recorder());
            match built {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .as_ref()
}

/// `# HELP` text of every metric tramy exports.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tramy_http_requests_total",
        "HTTP requests by method, route template and status"
    );
    describe_histogram!(
        "tramy_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method, route template and status"
    );
    describe_counter!(
        "tramy_http_busy_total",
        "HTTP requests answered 503 because a bounded pool was full"
    );
    describe_counter!(
        "tramy_http_connections_refused_total",
        "HTTP connections closed at accept because max_connections were open"
    );
    describe_counter!(
        "tramy_dimse_associations_total",
        "DIMSE associations by result (accepted, rejected)"
    );
    describe_counter!(
        "tramy_ingest_instances_total",
        "Instances through the ingest path by outcome"
    );
    describe_counter!(
        "tramy_ingest_bytes_total",
        Unit::Bytes,
        "Bytes of instances stored"
    );
    describe_counter!(
        "tramy_receive_spooled_total",
        "Receptions written to a staging file (large or over the memory budget)"
    );
    describe_counter!(
        "tramy_receive_refused_too_large_total",
        "Instances refused for exceeding ingest.max_instance_mb"
    );
    describe_counter!(
        "tramy_integrity_failures_total",
        "Reads refused because the stored object was missing or damaged"
    );
    describe_gauge!(
        "tramy_integrity_scrub_damaged",
        "Damaged objects found by the last background scrub"
    );
    describe_gauge!(
        "tramy_integrity_scrub_missing",
        "Missing objects found by the last background scrub"
    );
    describe_gauge!(
        "tramy_integrity_scrub_last_seconds",
        Unit::Seconds,
        "Unix time the last background scrub finished"
    );
    describe_histogram!(
        "tramy_triage_batch_size",
        "Instances inferred together in one triage batch"
    );
    describe_histogram!(
        "tramy_triage_inference_seconds",
        Unit::Seconds,
        "Time one triage batch spent in ONNX Runtime"
    );
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
/// Operational counters, for an admin's monitoring (Prometheus sends the token with
/// `authorization: {credentials: …}`).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = 403, description = "the credential is not an admin's")))]
pub async fn metrics_endpoint(super::auth::Caller(who): super::auth::Caller) -> Response {
    if !who.permits(crate::access::Action::Administer) {
        return super::error::HttpError::forbidden().into_response();
    }
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
        openapi,
        super::api::study_findings,
        super::api::worklist,
        super::api::heatmap,
        super::api::anatomy_mask,
        super::api::jobs,
        super::feedback::finding_feedback,
        super::feedback::record_feedback,
        super::feedback::export,
        super::sharing::record_consent,
        super::sharing::consents,
        super::sharing::revoke_consent,
        super::sharing::create_grant,
        super::sharing::grants,
        super::sharing::revoke_grant,
        super::sharing::create_share_link,
        super::sharing::link_patient,
        super::sharing::patient_links,
        super::sharing::link_suggestions,
        super::sharing::unlink_patient,
        super::admin::add_facility,
        super::admin::facilities,
        super::admin::facility_keys,
        super::admin::add_ae_title,
        super::admin::ae_titles,
        super::admin::remove_ae_title,
        super::admin::create_token,
        super::admin::tokens,
        super::admin::revoke_token,
        super::audit::audit_events,
        super::peers::peers,
        super::peers::add_peer,
        super::peers::remove_peer,
        super::peers::retry,
        super::peers::study_deliveries,
        super::peers::deliver,
        super::peers::check,
        super::priors::retrieve_priors,
        super::stats::facility_stats,
        super::research::export
    ),
    components(schemas(
        crate::research::ExportRequest,
        crate::store::findings::Finding,
        crate::store::findings::WorklistEntry,
        crate::store::findings::JobView,
        crate::store::feedback::Feedback,
        crate::store::feedback::NewFeedback,
        crate::store::feedback::FeedbackRow,
        crate::store::feedback::Verdict,
        super::api::Problem,
        super::Health,
        crate::access::sharing::NewConsent,
        crate::access::sharing::Consent,
        crate::access::sharing::NewGrant,
        crate::access::sharing::Grant,
        crate::access::sharing::Purpose,
        crate::access::sharing::ConsentSource,
        crate::access::sharing::NewShareLink,
        crate::access::sharing::IssuedShareLink,
        crate::access::sharing::NewPatientLink,
        crate::access::sharing::PatientLink,
        crate::store::names::LinkSuggestion,
        crate::store::names::Evidence,
        crate::registry::Facility,
        crate::facility_keys::PublicJwk,
        crate::facility_keys::PublicJwkSet,
        crate::registry::FacilityKind,
        crate::registry::ApplicationEntity,
        crate::registry::TokenRecord,
        crate::auth::Role,
        super::admin::FacilityRequest,
        super::admin::AeRequest,
        super::admin::TokenRequest,
        super::admin::IssuedTokenView,
        crate::audit::AuditEvent,
        crate::audit::PatientRef,
        super::audit::FhirAuditBundle,
        crate::forward::PeerSpec,
        super::peers::PeerView,
        super::peers::Requeued,
        super::peers::PresenceCheck,
        super::peers::HeldInstance,
        super::peers::Presence,
        super::priors::RetrieveRequest,
        crate::forward::priors::RetrieveReport,
        crate::forward::priors::StudyRetrieval,
        crate::forward::priors::FailedInstance,
        crate::forward::outbox::DestinationDelivery,
        crate::forward::outbox::OutboxState,
        crate::forward::outbox::StateCounts,
        crate::forward::outbox::TimelineStep,
        crate::forward::outbox::ManifestRecord,
        crate::forward::stats::FacilityStats,
        crate::forward::stats::DayCounts,
        crate::forward::stats::Counts,
        crate::forward::stats::Tally,
        crate::forward::stats::DestinationCounts,
        crate::forward::stats::FromPeer,
        crate::forward::stats::ReasonCount
    ))
)]
pub struct ApiDoc;

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "this document", content_type = "application/json")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
