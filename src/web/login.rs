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
    /// The page the browser asked for before it was sent to sign in.
    #[serde(default)]
    next: String,
}

/// The sign-in page's optional language choice (the switch link on it), and the page to go on
/// to once signed in.
#[derive(serde::Deserialize)]
pub struct LoginQuery {
    lang: Option<String>,
    next: Option<String>,
}

/// Where a sign-in may lead: a path on this site (never `//host` or `/\host`, which browsers
/// take for another site), else the worklist.
pub fn next_page(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/ui/".to_string(),
    }
}

/// The sign-in page's address that leads back to `uri` afterwards.
pub fn sign_in_then(uri: &axum::http::Uri) -> String {
    let back = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/ui/");
    if back == "/" || back == "/ui/" {
        return "/login".to_string();
    }
    let back: String = form_urlencoded::byte_serialize(back.as_bytes()).collect();
    format!("/login?next={back}")
}

/// `GET /login`: the form, in the browser's language (`?lang=vi` chooses, and keeps it).
pub async fn page(headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let chosen = q.lang.as_deref().and_then(Lang::parse);
    let lang = chosen.unwrap_or_else(|| Lang::of(&headers));
    let next = next_page(q.next.as_deref());
    let mut response = ui::pages::login_page(lang, StatusCode::OK, "", &next);
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
        // The page asked for before, else the doctors' worklist.
        Ok(()) => signed_in(
            &state,
            lang,
            form.token.trim(),
            "Strict",
            &next_page(Some(&form.next)),
        ),
        Err(e) => {
            record_failure(&state, peer, "/login", &e).await;
            refused(lang, e, &next_page(Some(&form.next)))
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
            "/ui/",
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
fn refused(lang: Lang, e: AuthError, next: &str) -> Response {
    ui::pages::login_page(lang, StatusCode::UNAUTHORIZED, &e.to_string(), next)
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
            refused(lang, e, "/ui/")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_leads_only_to_a_page_of_this_site() {
        assert_eq!(
            next_page(Some("/viewer?StudyInstanceUIDs=1.2")),
            "/viewer?StudyInstanceUIDs=1.2"
        );
        for elsewhere in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example",
            "",
        ] {
            assert_eq!(next_page(Some(elsewhere)), "/ui/", "{elsewhere}");
        }
        assert_eq!(next_page(None), "/ui/");
    }

    #[test]
    fn the_sign_in_page_remembers_the_page_asked_for() {
        let uri: axum::http::Uri = "/ui/studies/1.2.3?x=1".parse().unwrap();
        assert_eq!(
            sign_in_then(&uri),
            "/login?next=%2Fui%2Fstudies%2F1.2.3%3Fx%3D1"
        );
        assert_eq!(sign_in_then(&"/ui/".parse().unwrap()), "/login");
    }
}
