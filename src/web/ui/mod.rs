//! The web UI for doctors (issue #15): server-rendered pages under `/ui/` (askama templates in
//! `templates/`, compiled in), in Vietnamese and English ([`i18n`]), with a small CSS file and
//! plain JavaScript inlined from `static/`; no build step, nothing fetched from elsewhere.
//!
//! Every page goes through the same authentication and audit middleware as the API (a browser
//! without a session is sent to `/login`) and reads the index through the same domain methods,
//! so a user sees exactly the studies the API would show them. Handlers here only shape views.

pub mod admin;
pub mod chart;
pub mod dashboard;
pub mod events;
pub mod i18n;
pub mod pages;
pub mod study_actions;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, MethodRouter};

use super::AppState;
use i18n::Lang;

/// The UI's style sheet, inlined in every page (the sign-in page too, which is open).
pub const CSS: &str = include_str!("static/ui.css");
/// The UI's script: the worklist's live updates and the heatmap controls.
pub const JS: &str = include_str!("static/ui.js");

/// What the UI keeps between requests.
#[derive(Clone, Default)]
pub struct UiState {
    /// The open event streams, one per session.
    pub streams: events::Streams,
}

/// The UI's routes (method, path, handler), part of the router's route table.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::GET, "/ui/", get(pages::worklist)),
        (
            Method::GET,
            "/ui/worklist/table",
            get(pages::worklist_table),
        ),
        (Method::GET, "/ui/studies/{study}", get(pages::study)),
        (
            Method::POST,
            "/ui/studies/{study}/findings/{finding}/feedback",
            post(study_actions::record_feedback),
        ),
        (
            Method::POST,
            "/ui/studies/{study}/share",
            post(study_actions::share),
        ),
        (Method::GET, "/ui/events", get(events::worklist_events)),
        (Method::GET, "/ui/lang/{lang}", get(switch_language)),
        (Method::GET, "/ui/dashboard", get(dashboard::dashboard)),
        (Method::GET, "/ui/admin/", get(admin::home)),
        (Method::GET, "/ui/admin/facilities", get(admin::facilities)),
        (
            Method::POST,
            "/ui/admin/facilities",
            post(admin::add_facility),
        ),
        (Method::GET, "/ui/admin/ae-titles", get(admin::ae_titles)),
        (
            Method::POST,
            "/ui/admin/ae-titles",
            post(admin::add_ae_title),
        ),
        (
            Method::POST,
            "/ui/admin/ae-titles/{ae_title}/remove",
            post(admin::remove_ae_title),
        ),
        (Method::GET, "/ui/admin/tokens", get(admin::tokens)),
        (Method::POST, "/ui/admin/tokens", post(admin::create_token)),
        (
            Method::POST,
            "/ui/admin/tokens/{id}/revoke",
            post(admin::revoke_token),
        ),
        (Method::GET, "/ui/admin/peers", get(admin::peers)),
        (Method::POST, "/ui/admin/peers", post(admin::add_peer)),
        (
            Method::POST,
            "/ui/admin/peers/{name}/remove",
            post(admin::remove_peer),
        ),
    ]
}

/// What every page's frame needs: the language, and where its switch link leads.
pub struct Chrome {
    /// The page's language.
    pub lang: Lang,
    /// The switch link to the other language (back to this page).
    pub switch_href: String,
    /// Whether a user is signed in (the sign-in page has no sign-out button).
    pub signed_in: bool,
    /// The style sheet.
    pub css: &'static str,
}

impl Chrome {
    /// The frame of the page at `path` (with its query) for a request with `headers`.
    pub fn new(headers: &HeaderMap, path: &str, signed_in: bool) -> Chrome {
        let lang = Lang::of(headers);
        let back = form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>();
        let switch_href = if signed_in {
            format!("/ui/lang/{}?back={back}", lang.other().code())
        } else {
            format!("/login?lang={}", lang.other().code())
        };
        Chrome {
            lang,
            switch_href,
            signed_in,
            css: CSS,
        }
    }

    /// The message `key` in the page's language.
    pub fn t(&self, key: &str) -> String {
        self.lang.t(key)
    }
}

/// Where the switch link may send the browser back to.
#[derive(serde::Deserialize)]
pub struct Back {
    back: Option<String>,
}

/// `GET /ui/lang/{lang}?back=/ui/…`: keeps the language in a cookie and goes back to the page
/// (only to a UI page: never a redirect off the site).
pub async fn switch_language(
    axum::extract::Path(lang): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<Back>,
) -> Response {
    let back = q
        .back
        .filter(|b| b.starts_with("/ui/") && !b.contains("//") && !b.contains('\\'))
        .unwrap_or_else(|| "/ui/".into());
    let mut response = Redirect::to(&back).into_response();
    if let Some(lang) = Lang::parse(&lang) {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, language_cookie(lang));
    }
    response
}

/// The cookie that keeps `lang` for a year (it is no secret: readable by the page).
pub fn language_cookie(lang: Lang) -> HeaderValue {
    HeaderValue::from_static(match lang {
        Lang::En => "tramy_lang=en; Path=/; Max-Age=31536000; SameSite=Lax",
        Lang::Vi => "tramy_lang=vi; Path=/; Max-Age=31536000; SameSite=Lax",
    })
}

/// A rendered template as an HTML response, never stored by the browser or a proxy (pages hold
/// patient data, and ward computers are shared); a template that fails to render is the
/// server's fault (500, the reason in the log).
pub fn html(rendered: Result<String, askama::Error>) -> Response {
    match rendered {
        Ok(body) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::response::Html(body),
        )
            .into_response(),
        Err(e) => super::error::HttpError::internal(e).into_response(),
    }
}
