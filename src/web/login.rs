//! A browser's way in (issue #9 item 3): a viewer such as OHIF cannot add an `Authorization`
//! header to the page loads and image requests it makes, so `/login` takes a credential once
//! (an API token, or an access token from the facility's identity provider), checks it, and sets
//! it as an HttpOnly, SameSite=Strict session cookie that [`super::auth`] accepts like the
//! header. SameSite=Strict keeps other sites from making the browser send it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::auth::SESSION_COOKIE;
use super::error::HttpError;
use super::ui::{self, i18n::Lang};
use super::AppState;
use crate::auth::{credential_from_authorization, AuthError};

/// What the form posts.
#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

/// The sign-in page's optional language choice (the switch link on it).
#[derive(serde::Deserialize)]
pub struct LoginQuery {
    lang: Option<String>,
}

/// `GET /login`: the form, in the browser's language (`?lang=vi` chooses, and keeps it).
pub async fn page(headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let chosen = q.lang.as_deref().and_then(Lang::parse);
    let lang = chosen.unwrap_or_else(|| Lang::of(&headers));
    let mut response = ui::pages::login_page(lang, StatusCode::OK, "");
    if let Some(lang) = chosen {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, ui::language_cookie(lang));
    }
    response
}

/// `POST /login`: checks the token and sets the session cookie; the form again with the reason
/// when it is refused.
pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = Lang::of(&headers);
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
        // The doctors' worklist is where a sign-in leads.
        Ok(()) => signed_in(&state, lang, form.token.trim(), "Strict", "/ui/"),
        Err(e) => {
            record_failure(&state, peer, "/login", &e).await;
            refused(lang, e)
        }
    }
}

/// A redirect to `to` that sets `token` as the session cookie (HttpOnly, `same_site`, Secure
/// over HTTPS); the sign-in page when the token cannot be a cookie value.
fn signed_in(state: &AppState, lang: Lang, token: &str, same_site: &str, to: &str) -> Response {
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
        Err(_) => refused(
            lang,
            AuthError::Invalid("the token has characters no token has".into()),
        ),
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

/// The sign-in page again, 401, with why (the template escapes it).
fn refused(lang: Lang, e: AuthError) -> Response {
    ui::pages::login_page(lang, StatusCode::UNAUTHORIZED, &e.to_string())
}

/// `POST /logout`: forgets the session cookie and ends the session's worklist event stream.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = ui::i18n::cookie(&headers, SESSION_COOKIE) {
        state.ui.streams.end(token);
    }
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
    headers: HeaderMap,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    let lang = Lang::of(&headers);
    match state.authenticator.share_link(&token) {
        Ok((_, study)) => signed_in(
            &state,
            lang,
            &token,
            "Lax",
            &format!("/viewer?StudyInstanceUIDs={study}"),
        ),
        Err(e) => {
            record_failure(&state, peer, "/share/{token}", &e).await;
            refused(lang, e)
        }
    }
}
