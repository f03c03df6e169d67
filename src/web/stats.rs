//! `GET /api/v1/facilities/{code}/stats` (issue #10 item 4): a facility's delivery counts per
//! day and destination. Thin: who may read them, the period and the counts are in
//! `forward/stats.rs`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::HttpError;
use super::AppState;
use crate::forward::stats::{self, FacilityStats, StatsPeriod};

/// The period, in UTC days.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// The first day, `YYYY-MM-DD` (default: 29 days before `to`).
    from: Option<String>,
    /// The last day, included (default: today, UTC). At most 366 days from `from`.
    to: Option<String>,
}

/// `GET /api/v1/facilities/{code}/stats` (the facility's admin or clinician; superadmin):
/// per UTC day and per destination, instances and studies received, queued, sent, stored,
/// verified, pending, failed and dead (with reasons), deliveries from peers, and AI flags.
#[utoipa::path(get, path = "/api/v1/facilities/{code}/stats", params(("code" = String, Path, description = "the facility's code"), StatsQuery), responses(
    (status = 200, description = "the counts; days without activity are left out", body = FacilityStats),
    (status = 400, description = "a date is not YYYY-MM-DD, from is after to, or the period is over 366 days", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 403, description = "not an admin or clinician of this facility", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 404, description = "no such facility", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn facility_stats(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(code): Path<String>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<FacilityStats>, HttpError> {
    let q = query.map_err(|e| HttpError::bad_request(e.body_text()))?.0;
    if !stats::may_read(&who, &code) {
        return Err(HttpError::forbidden());
    }
    let today = chrono::Utc::now().date_naive();
    let period = StatsPeriod::parse(q.from.as_deref(), q.to.as_deref(), today)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let index = state.archive.index();
    if !index.facility_registered(&who, &code)? {
        return Err(HttpError::not_found(format!("no facility {code}")));
    }
    Ok(Json(
        stats::facility_stats(index, &who, &code, &period).await?,
    ))
}
