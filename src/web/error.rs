//! HTTP errors with the status PS3.18 names and a reason people can act on, sent both as a JSON
//! body and as a `Warning: 299` header (PS3.18 8.6.3), and the one place every failed request
//! is logged ([`log_failures`]).

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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

    /// 403 Forbidden: the caller's role does not allow the request, whatever it names.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "your credential's role does not allow this; ask your facility's admin for a token with the right role",
        )
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

impl From<axum::extract::rejection::JsonRejection> for HttpError {
    /// A JSON body that is missing, not JSON, or not the expected shape: 400 with serde's reason
    /// (which names the field).
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        HttpError::bad_request(e.body_text())
    }
}

impl From<crate::store::IndexError> for HttpError {
    /// A caller whose role does not allow the action gets 403 (what exists is not said); any
    /// other index failure is the archive's (500, detail in the log).
    fn from(e: crate::store::IndexError) -> Self {
        match e {
            crate::store::IndexError::Forbidden { .. } => Self::forbidden(),
            other => HttpError::internal(other),
        }
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

/// The reason of an [`HttpError`] response, kept for [`log_failures`].
#[derive(Debug, Clone)]
struct FailureReason(String);

/// Middleware: one WARN line for every 4xx and 5xx response, with the route template (never the
/// path: it holds UIDs), the status and the reason. The reason is the [`HttpError`]'s, else the
/// response's `Warning` header, else the status text.
pub async fn log_failures(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let reason = response
            .extensions()
            .get::<FailureReason>()
            .map(|r| r.0.clone())
            .or_else(|| warning_text(response.headers()))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or_default().to_string());
        tracing::warn!(
            status = status.as_u16(),
            %method,
            route = route.as_deref().unwrap_or("(no route)"),
            reason = %loggable(&reason),
            "HTTP request failed"
        );
    }
    response
}

/// The text of a `Warning: 299 agent "text"` header.
fn warning_text(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get(axum::http::header::WARNING)?.to_str().ok()?;
    let (_, quoted) = value.split_once('"')?;
    Some(quoted.trim_end_matches('"').to_string())
}

/// `reason` fit for the log: values the client sent are quoted in reasons (`{:?}`) and may be
/// patient data (a PatientName in a query), so quoted text is left out; control characters go
/// (no forged log lines) and the length is capped.
fn loggable(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(300));
    let mut quoted = false;
    for c in reason.chars().filter(|c| !c.is_control()).take(300) {
        match c {
            '"' if quoted => {
                out.push_str("…\"");
                quoted = false;
            }
            '"' => {
                out.push('"');
                quoted = true;
            }
            c if !quoted => out.push(c),
            _ => {}
        }
    }
    if quoted {
        out.push_str("…\"");
    }
    out
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
        // RFC 9457 problem details; `reason` repeats `detail` for clients of earlier releases.
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.reason,
            "reason": self.reason,
        });
        let mut response = (
            self.status,
            [(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body.to_string(),
        )
            .into_response();
        response
            .extensions_mut()
            .insert(FailureReason(self.reason.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_are_rfc_9457_problem_details() {
        let response = HttpError::not_found("no such study").into_response();
        assert_eq!(
            response.headers()[axum::http::header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], 404);
        assert_eq!(body["title"], "Not Found");
        assert_eq!(body["detail"], "no such study");
        assert_eq!(body["type"], "about:blank");
    }

    #[test]
    fn logged_reasons_leave_out_what_the_client_sent_and_control_characters() {
        assert_eq!(
            loggable("invalid matching value \"NGUYEN^VAN\" for (0010,0030): bad date"),
            "invalid matching value \"…\" for (0010,0030): bad date"
        );
        assert_eq!(loggable("two\nlines"), "twolines");
        assert_eq!(loggable("open \"quote"), "open \"…\"");
        assert_eq!(loggable(&"x".repeat(1000)).len(), 300);
    }

    #[test]
    fn the_warning_header_text_is_the_reason() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::WARNING,
            warning_header("no part stored").unwrap(),
        );
        assert_eq!(warning_text(&h).as_deref(), Some("no part stored"));
    }
}
