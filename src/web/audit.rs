//! `GET /api/v1/audit`: the audit trail (issue #9 item 9) as JSON, or as a FHIR R4 Bundle of
//! IHE BALP AuditEvent resources (`Accept: application/fhir+json` or `?_format=fhir`). What a
//! caller may read is decided by the store (`Index::audit_events`); this handler parses and
//! shapes.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::HttpError;
use super::AppState;
use crate::audit::{normalise_time_bound, AuditEvent, AuditFilter, PatientRef};

/// The FHIR JSON media type (FHIR R4 http.html#mime-type).
const FHIR_JSON: &str = "application/fhir+json";

/// Which events to list; every condition given must hold.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Events about this study (Study Instance UID).
    study: Option<String>,
    /// Events about this patient, `ISSUER|ID` or `ID` (no issuer): those naming them and those
    /// about any of their studies ("who looked at my images").
    patient: Option<String>,
    /// Events in which this facility (its code) acted.
    facility: Option<String>,
    /// Events of this actor (`token:<id>`, `ae:<AE title>`, an OIDC subject, `system`).
    actor: Option<String>,
    /// At or after this RFC 3339 time or date (`2026-11-30`).
    since: Option<String>,
    /// Before this RFC 3339 time, or on or before this date.
    until: Option<String>,
    /// At most this many (1 to 1000; default 100), newest first.
    limit: Option<usize>,
    /// Only events older than this id: the next page after the oldest event of this one.
    before: Option<i64>,
    /// `fhir` (or `json`, `application/fhir+json`) for a FHIR Bundle.
    #[serde(rename = "_format")]
    #[param(rename = "_format")]
    format: Option<String>,
}

/// A FHIR R4 `Bundle` of type `searchset` whose entries are `AuditEvent` resources (IHE BALP).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents `audit::fhir::bundle`'s JSON; never built
pub struct FhirAuditBundle {
    /// `Bundle`.
    #[schema(rename = "resourceType")]
    resource_type: String,
    /// `searchset`.
    r#type: String,
    /// Number of entries.
    total: u64,
    /// `{ "resource": AuditEvent, "search": { "mode": "match" } }` per event, newest first.
    entry: Vec<serde_json::Value>,
}

fn bounded(name: &str, value: Option<String>) -> Result<Option<String>, HttpError> {
    match value {
        Some(v) if v.is_empty() || v.len() > 128 => Err(HttpError::bad_request(format!(
            "{name} must be 1 to 128 characters"
        ))),
        other => Ok(other),
    }
}

fn time_bound(name: &str, value: Option<String>, end: bool) -> Result<Option<String>, HttpError> {
    value
        .map(|v| {
            normalise_time_bound(&v, end).ok_or_else(|| {
                HttpError::bad_request(format!(
                    "{name} must be an RFC 3339 time or a date YYYY-MM-DD"
                ))
            })
        })
        .transpose()
}

impl AuditQuery {
    fn filter(self) -> Result<AuditFilter, HttpError> {
        if let Some(study) = &self.study {
            crate::dicom::StudyInstanceUid::new(study)
                .map_err(|e| HttpError::bad_request(format!("study: {e}")))?;
        }
        let patient = self
            .patient
            .map(|p| {
                PatientRef::parse(&p).ok_or_else(|| {
                    HttpError::bad_request(
                        "patient must be ISSUER|ID or ID (at most 64 characters)",
                    )
                })
            })
            .transpose()?;
        if self.limit.is_some_and(|l| l == 0) {
            return Err(HttpError::bad_request("limit must be 1 to 1000"));
        }
        Ok(AuditFilter {
            study: self.study,
            patient,
            facility: bounded("facility", self.facility)?,
            actor: bounded("actor", self.actor)?,
            since: time_bound("since", self.since, false)?,
            until: time_bound("until", self.until, true)?,
            limit: self.limit,
            before_id: self.before,
        })
    }
}

/// Whether the caller asked for FHIR: `_format` (FHIR R4 http.html#parameters) or `Accept`.
fn wants_fhir(format: Option<&str>, headers: &HeaderMap) -> Result<bool, HttpError> {
    match format.map(str::trim) {
        Some("fhir" | "json" | FHIR_JSON) => return Ok(true),
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "_format {other:?} is not offered: use fhir"
            )))
        }
        None => {}
    }
    Ok(headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| m.split(';').next().unwrap_or_default().trim() == FHIR_JSON))
}

/// `GET /api/v1/audit`: the audit events the caller may read, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "events, newest first: JSON, or a FHIR Bundle of IHE BALP AuditEvents", content(
            (Vec<AuditEvent> = "application/json"),
            (FhirAuditBundle = "application/fhir+json")
        )),
        (status = 400, description = "a malformed parameter", body = super::api::Problem, content_type = "application/problem+json"),
        (status = 401, description = "no valid credential", body = super::api::Problem, content_type = "application/problem+json"),
        (status = 403, description = "the caller's role may not read the audit trail (admin and superadmin may)", body = super::api::Problem, content_type = "application/problem+json")
    )
)]
pub async fn audit_events(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Response, HttpError> {
    let fhir = wants_fhir(q.format.as_deref(), &headers)?;
    let filter = q.filter()?;
    let events = state
        .archive
        .index()
        .audit_events(&who, &filter)
        .await
        .map_err(HttpError::from)?;
    Ok(if fhir {
        (
            [(header::CONTENT_TYPE, FHIR_JSON)],
            Json(crate::audit::fhir::bundle(&events)),
        )
            .into_response()
    } else {
        Json(events).into_response()
    })
}
