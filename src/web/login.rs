//! A browser's way in (issue #9 item 3): a viewer such as OHIF cannot add an `Authorization`
//! header to the page loads and image requests it makes, so `/login` takes a credential once
//! (an API token, or an access token from the facility's identity provider), checks it, and sets
//! it as an HttpOnly, SameSite=Strict session cookie that [`super::auth`] accepts like the
//! header. SameSite=Strict keeps other sites from making the browser send it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;

use super::auth::SESSION_COOKIE;
use super::error::HttpError;
use super::AppState;
use crate::auth::{credential_from_authorization, AuthError};

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tramy: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">
<h1>tramy</h1>
<p>Paste your access token (an API token from your facility's admin, <code>tramy_…</code>).<br>
<span lang="vi">Dán mã truy cập của bạn (do quản trị viên cơ sở cấp).</span></p>
<form method="post" action="/login">
<input name="token" type="password" autocomplete="off" required style="width: 100%" aria-label="token">
<p><button type="submit">Sign in / Đăng nhập</button></p>
</form>
<p style="color: #a00">{message}</p>
</body></html>"#;

/// What the form posts.
#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `GET /login`: the form.
pub async fn page() -> Html<String> {
    Html(PAGE.replace("{message}", ""))
}

/// `POST /login`: checks the token and sets the session cookie; the form again with the reason
/// when it is refused.
pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let header_value = format!("Bearer {}", form.token.trim());
    let checked = match credential_from_authorization(Some(&header_value)) {
        Ok(credential) => match state
            .authenticator
            .principal_at(credential, peer.ip())
            .await
        {
            Ok(result) => result.map(|_| ()),
            Err(e) => return HttpError::internal(e).into_response(),
        },
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => signed_in(&state, form.token.trim(), "Strict", "/"),
        Err(e) => {
            record_failure(&state, peer, "/login", &e).await;
            refused(e)
        }
    }
}

/// A redirect to `to` that sets `token` as the session cookie (HttpOnly, `same_site`, Secure
/// over HTTPS); the sign-in page when the token cannot be a cookie value.
fn signed_in(state: &AppState, token: &str, same_site: &str, to: &str) -> Response {
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite={same_site}{}",
        secure_attribute(state)
    );
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            let mut response = Redirect::to(to).into_response();
            response.headers_mut().insert(header::SET_COOKIE, v);
            response
        }
        Err(_) => refused(AuthError::Invalid(
            "the token has characters no token has".into(),
        )),
    }
}

/// A refused sign-in or share link, in the audit trail (never the credential).
async fn record_failure(state: &AppState, peer: SocketAddr, route: &str, e: &AuthError) {
    let event = super::audit_log::login_failure(
        peer.ip().to_string(),
        &axum::http::Method::GET,
        route,
        &e.to_string(),
    );
    super::auth::record(state, Some(event)).await;
}

/// `; Secure` when clients reach tramy over HTTPS (its own TLS, or a proxy's per
/// `public_url`), so the browser never sends the session over plain HTTP (RFC 6265 4.1.2.5).
fn secure_attribute(state: &AppState) -> &'static str {
    let http = &state.config.http;
    if http.tls_certificate.is_some() || http.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

fn refused(e: AuthError) -> Response {
    let message = html_escape(&e.to_string());
    (
        StatusCode::UNAUTHORIZED,
        Html(PAGE.replace("{message}", &message)),
    )
        .into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `POST /logout`: forgets the session cookie.
pub async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tramy_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// `GET /share/{token}`: a share link a doctor was given. The token becomes the session cookie
/// and the browser goes to the study in the viewer; an unknown, revoked or expired link gets
/// the sign-in page with the reason.
pub async fn share_link(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    match state.authenticator.share_link(&token) {
        Ok((_, study)) => signed_in(
            &state,
            &token,
            "Lax",
            &format!("/viewer?StudyInstanceUIDs={study}"),
        ),
        Err(e) => {
            record_failure(&state, peer, "/share/{token}", &e).await;
            refused(e)
        }
    }
}
