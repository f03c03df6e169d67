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
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let chosen = q.lang.as_deref().and_then(Lang::parse);
    let lang = chosen.unwrap_or_else(|| Lang::of(&headers));
    let next = next_page(q.next.as_deref());
    let mut response = ui::pages::login_page(lang, StatusCode::OK, "", &next, sso(&state));
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
            refused(&state, lang, e, &next_page(Some(&form.next)))
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
            state,
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
fn refused(state: &AppState, lang: Lang, e: AuthError, next: &str) -> Response {
    ui::pages::login_page(
        lang,
        StatusCode::UNAUTHORIZED,
        &e.to_string(),
        next,
        sso(state),
    )
}

/// Whether the sign-in page offers the identity provider's own sign-in.
fn sso(state: &AppState) -> bool {
    state
        .config
        .auth
        .oidc
        .as_ref()
        .is_some_and(|o| o.client_id.is_some())
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
            refused(&state, lang, e, "/ui/")
        }
    }
}

/// The cookie that keeps a sign-in through the identity provider between leaving for it and
/// coming back (its `state`, PKCE verifier and the page to go on to). Lax: the provider's
/// redirect back is a navigation from another site.
const SIGN_IN_COOKIE: &str = "tramy_sign_in";
/// How long a sign-in at the provider may take.
const SIGN_IN_MAX_AGE_SECS: u32 = 600;

/// `GET /login/oidc?next=…`: sends the browser to the identity provider's sign-in page.
pub async fn oidc_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let lang = Lang::of(&headers);
    let next = next_page(q.next.as_deref());
    let Some(config) = sign_in_config(&state) else {
        return not_offered(&state, lang);
    };
    let redirect = callback_url(&state, &headers);
    let started =
        tokio::task::spawn_blocking(move || crate::auth::sign_in::start(&config, &redirect, &next))
            .await;
    let started = match started {
        Ok(Ok(started)) => started,
        Ok(Err(e)) => return provider_failed(&state, lang, e),
        Err(e) => return HttpError::internal(e).into_response(),
    };
    let cookie = format!(
        "{SIGN_IN_COOKIE}={}; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age={SIGN_IN_MAX_AGE_SECS}{}",
        encode_pending(&started.pending),
        secure_attribute(&state)
    );
    let mut response = Redirect::to(&started.authorization_url).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// What the identity provider sends the browser back with (RFC 6749 4.1.2, 4.1.2.1).
#[derive(serde::Deserialize)]
pub struct ProviderAnswer {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/oidc/callback`: trades the provider's code for its access token, checks the
/// token as any other, and signs the browser in with it.
pub async fn oidc_callback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(answer): Query<ProviderAnswer>,
) -> Response {
    let lang = Lang::of(&headers);
    let Some(config) = sign_in_config(&state) else {
        return not_offered(&state, lang);
    };
    let pending = ui::i18n::cookie(&headers, SIGN_IN_COOKIE).and_then(decode_pending);
    let (pending, code, returned) = match (pending, answer) {
        (
            _,
            ProviderAnswer {
                error: Some(error),
                error_description,
                ..
            },
        ) => {
            let why = format!(
                "the identity provider answered {error} {}",
                error_description.unwrap_or_default()
            );
            return sign_in_refused(&state, peer, lang, AuthError::Invalid(why)).await;
        }
        (
            Some(p),
            ProviderAnswer {
                code: Some(c),
                state: Some(s),
                ..
            },
        ) => (p, c, s),
        _ => {
            let why = crate::auth::sign_in::SignInError::StateMismatch.to_string();
            return sign_in_refused(&state, peer, lang, AuthError::Invalid(why)).await;
        }
    };
    let redirect = callback_url(&state, &headers);
    let next = pending.next.clone();
    let traded = tokio::task::spawn_blocking(move || {
        crate::auth::sign_in::finish(&config, &redirect, &pending, &returned, &code)
    })
    .await;
    let token = match traded {
        Ok(Ok(token)) => token,
        Ok(Err(e)) => {
            return sign_in_refused(&state, peer, lang, AuthError::Invalid(e.to_string())).await
        }
        Err(e) => return HttpError::internal(e).into_response(),
    };
    // The provider's token is checked like any other before it becomes the session.
    let checked = match credential_from_authorization(Some(&format!("Bearer {token}"))) {
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
        Ok(()) => signed_in_from_elsewhere(&state, lang, &token, &next),
        Err(e) => sign_in_refused(&state, peer, lang, e).await,
    }
}

/// The sign-in configuration when the provider's sign-in is offered.
fn sign_in_config(state: &AppState) -> Option<crate::config::OidcConfig> {
    state
        .config
        .auth
        .oidc
        .clone()
        .filter(|o| o.client_id.is_some())
}

/// Where the provider sends the browser back: under `public_url` when set, else the address
/// the browser used (the provider accepts only the redirect URIs registered with it).
fn callback_url(state: &AppState, headers: &HeaderMap) -> String {
    let public = state.config.http.public_url.trim_end_matches('/');
    if !public.is_empty() {
        return format!("{public}/login/oidc/callback");
    }
    let scheme = if state.config.http.tls_certificate.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("{scheme}://{host}/login/oidc/callback")
}

/// The pending sign-in as a cookie value (base64url JSON: no character a cookie may not hold).
fn encode_pending(pending: &crate::auth::sign_in::Pending) -> String {
    use base64::Engine;
    let json = serde_json::to_vec(pending).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_pending(value: &str) -> Option<crate::auth::sign_in::Pending> {
    use base64::Engine;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// Signed in after a round trip through another site: the session cookie is SameSite=Strict,
/// which a browser does not send on a redirect that another site started, so a short page
/// moves on from this site itself; the pending sign-in is forgotten.
fn signed_in_from_elsewhere(state: &AppState, lang: Lang, token: &str, next: &str) -> Response {
    let session = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        secure_attribute(state)
    );
    let forget = format!("{SIGN_IN_COOKIE}=; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age=0");
    let (Ok(session), Ok(forget)) = (
        HeaderValue::from_str(&session),
        HeaderValue::from_str(&forget),
    ) else {
        return refused(
            state,
            lang,
            AuthError::Invalid("the provider's token has characters no token has".into()),
            "/ui/",
        );
    };
    let mut response = ui::pages::continue_page(lang, next);
    response.headers_mut().append(header::SET_COOKIE, session);
    response.headers_mut().append(header::SET_COOKIE, forget);
    response
}

/// A refused sign-in through the provider: audited, the sign-in page with why.
async fn sign_in_refused(state: &AppState, peer: SocketAddr, lang: Lang, e: AuthError) -> Response {
    record_failure(state, peer, "/login/oidc/callback", &e).await;
    refused(state, lang, e, "/ui/")
}

/// The provider could not be asked (discovery, a bad URL): 502 with why, and a WARN line.
fn provider_failed(state: &AppState, lang: Lang, e: crate::auth::sign_in::SignInError) -> Response {
    tracing::warn!(error = %e, "sign-in through the identity provider could not start");
    let mut page = refused(state, lang, AuthError::Invalid(e.to_string()), "/ui/");
    *page.status_mut() = StatusCode::BAD_GATEWAY;
    page
}

/// The provider's sign-in is not configured here: 404 with the sign-in page.
fn not_offered(state: &AppState, lang: Lang) -> Response {
    let why = crate::auth::sign_in::SignInError::NotConfigured.to_string();
    let mut page = refused(state, lang, AuthError::Invalid(why), "/ui/");
    *page.status_mut() = StatusCode::NOT_FOUND;
    page
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
