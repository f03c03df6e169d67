//! HTTP errors with the status PS3.18 names and a reason people can act on, sent both as a JSON
//! body and as a `Warning: 299` header (PS3.18 8.6.3).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error response.
#[derive(Debug, Clone)]
pub struct HttpError {
    /// Status code.
    pub status: StatusCode,
    /// Why.
    pub reason: String,
}

impl HttpError {
    /// An error with `status` and `reason`.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        HttpError {
            status,
            reason: reason.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    /// 404 Not Found.
    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, reason)
    }

    /// 406 Not Acceptable.
    pub fn not_acceptable(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, reason)
    }

    /// 415 Unsupported Media Type.
    pub fn unsupported_media_type(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, reason)
    }

    /// 503 Service Unavailable with `Retry-After`: a bounded resource is busy, try again soon.
    pub fn busy(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, reason)
    }

    /// 500, for failures of the archive itself; the detail goes to the log, not the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    }
}

impl From<crate::integrity::ReadError> for HttpError {
    /// A stored object that is missing or damaged is the archive's failure, not the client's: a
    /// 500 that says which instance and what to do, never a path. An I/O failure of the store
    /// stays an opaque internal error.
    fn from(e: crate::integrity::ReadError) -> Self {
        match e {
            crate::integrity::ReadError::Backend(detail) => HttpError::internal(detail),
            other => HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

/// A `Warning: 299` header value for `reason` (quotes and control characters removed).
pub fn warning_header(reason: &str) -> Option<HeaderValue> {
    let clean: String = reason
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && c.is_ascii())
        .take(400)
        .collect();
    HeaderValue::from_str(&format!("299 tramy \"{clean}\"")).ok()
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "status": self.status.as_u16(), "reason": self.reason })),
        )
            .into_response();
        if let Some(w) = warning_header(&self.reason) {
            response
                .headers_mut()
                .insert(axum::http::header::WARNING, w);
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(super::pool::RETRY_AFTER_SECS),
            );
        }
        response
    }
}
