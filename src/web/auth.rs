//! Every HTTP request but `/healthz` and the login page is someone's (issue #9 item 3): this
//! middleware reads the credential (`Authorization: Bearer`, or the session cookie a browser got
//! from `/login`), turns it into the caller ([`Principal`]) and puts that in the request's
//! extensions, where handlers take it as [`Caller`]. Without a valid credential: 401 with
//! `WWW-Authenticate` (RFC 6750 3), or, for a browser asking for a page, a redirect to `/login`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::audit_log;
use super::error::HttpError;
use super::AppState;
use crate::access::Principal;
use crate::auth::{credential_from_authorization, credential_from_token, AuthError, Credential};

/// The cookie a browser presents instead of an `Authorization` header (set by `/login`).
pub const SESSION_COOKIE: &str = "tramy_session";

/// Paths open without a credential: the liveness probe, the pages where one is entered or
/// obtained from the identity provider, the one that forgets it, and share links (the link is
/// the credential).
pub fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/login" | "/login/oidc" | "/login/oidc/callback" | "/logout"
    ) || path.starts_with("/share/")
}

/// Middleware: authenticates the request or answers 401.
pub async fn authenticate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    if is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let headers = request.headers();
    let page = wants_page(headers);
    let refused = match credential_of(headers) {
        Ok(credential) => match state
            .authenticator
            .principal_at(credential, peer.ip())
            .await
        {
            Ok(Ok(who)) => {
                let who = who.from_address(peer.ip().to_string());
                request.extensions_mut().insert(who.clone());
                let response = next.run(request).await;
                if let Some(route) = &route {
                    let event = audit_log::event(who, &method, route, &uri, response.status());
                    record(&state, event).await;
                }
                return response;
            }
            Ok(Err(e)) => e,
            Err(e) => return HttpError::internal(e).into_response(),
        },
        Err(AuthError::Missing) if page => {
            tracing::debug!("no credential: sending the browser to /login");
            return Redirect::to(&sign_in_page(&method, &uri)).into_response();
        }
        Err(e) => e,
    };
    let failure = audit_log::login_failure(
        peer.ip().to_string(),
        &method,
        route.as_deref().unwrap_or("(viewer file)"),
        &refused.to_string(),
    );
    record(&state, Some(failure)).await;
    if page {
        // An expired or revoked session: sign in again, then back to the page.
        return Redirect::to(&sign_in_page(&method, &uri)).into_response();
    }
    unauthorized(refused)
}

/// Where a browser without a (valid) session signs in: back to the page afterwards when it asked
/// for one (a form's POST cannot be repeated by a redirect).
fn sign_in_page(method: &axum::http::Method, uri: &axum::http::Uri) -> String {
    if method == axum::http::Method::GET {
        super::login::sign_in_then(uri)
    } else {
        "/login".to_string()
    }
}

/// Appends `event` to the audit trail; a failure to queue it is logged (no patient data), the
/// response is not held back.
pub(super) async fn record(state: &AppState, event: Option<crate::audit::NewAuditEvent>) {
    if let Some(event) = event {
        if let Err(e) = state.archive.index().record_audit(event).await {
            tracing::error!(error = %e, "an audit event could not be recorded");
        }
    }
}

/// The request's credential: the `Authorization` header, else the session cookie.
fn credential_of(headers: &HeaderMap) -> Result<Credential<'_>, AuthError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorization.is_some() {
        return credential_from_authorization(authorization);
    }
    let token = session_cookie(headers).ok_or(AuthError::Missing)?;
    credential_from_token(token)
        .ok_or_else(|| AuthError::Invalid("the session cookie is not a credential".into()))
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

/// A browser navigating to a page (not a script fetching data).
fn wants_page(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.starts_with("text/html"))
}

fn unauthorized(e: AuthError) -> Response {
    let challenge = match e {
        AuthError::Missing | AuthError::Unsupported => r#"Bearer realm="tramy""#,
        AuthError::Invalid(_) => r#"Bearer realm="tramy", error="invalid_token""#,
        AuthError::Throttled(wait) => {
            // RFC 6585 4: 429 with when to come back (never 0).
            let mut response =
                HttpError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            return response;
        }
    };
    let mut response = HttpError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// The caller of a request, as [`authenticate`] found it. A route the middleware did not cover
/// gets nobody, whom the archive refuses everything.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller(
            parts
                .extensions
                .get::<Principal>()
                .cloned()
                .unwrap_or_else(Principal::anonymous),
        ))
    }
}
