//! The OHIF Viewer, served by tramy itself: its built files (`[http] viewer_dir`, by default
//! the copy the build fetched from npm) with a configuration tramy writes ([`app_config`]), so
//! one process serves the viewer and the DICOMweb it reads, on one origin: no separate web
//! server, no CORS. The viewer's requests carry the signed-in user's session cookie, so it
//! shows exactly what that user may see.
//!
//! OHIF's bundle loads its chunks from the site root (webpack's public path is `/`), so its
//! files live at the root; its own routes (`/viewer?StudyInstanceUIDs=…`) get `index.html`.
//! The root itself is tramy's worklist (`/ui/`), and tramy's own prefixes never fall back to
//! the viewer, so a mistyped API path stays a 404 and never becomes HTML.

use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::error::HttpError;
use super::AppState;

/// Path prefixes that belong to tramy's own routes, never to the viewer.
const OWN_PREFIXES: [&str; 7] = [
    "/dicomweb",
    "/api/",
    "/wado",
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/ui/",
];

/// OHIF's configuration with tramy as its only data source (`TRAMY_ORIGIN` filled in).
const APP_CONFIG_TEMPLATE: &str = include_str!("ohif-app-config.js");

/// The router's fallback: the site root and `/ui` lead to the worklist; else a file of the
/// viewer, else its `index.html`, else 404.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    if path == "/" || path == "/ui" {
        return Redirect::to("/ui/").into_response();
    }
    match state.config.http.viewer_files() {
        Some(dir) if !OWN_PREFIXES.iter().any(|p| path.starts_with(p)) => {
            serve(&dir, request).await
        }
        _ => HttpError::not_found("no such resource").into_response(),
    }
}

/// `GET /app-config.js`: the viewer's configuration, pointing it at this server's DICOMweb
/// (`[http] public_url` when set, e.g. behind a reverse proxy; else the page's own origin).
pub async fn app_config(State(state): State<AppState>) -> Response {
    if state.config.http.viewer_files().is_none() {
        return HttpError::not_found("no viewer is installed").into_response();
    }
    let origin = match state.config.http.public_url.trim_end_matches('/') {
        "" => "window.location.origin".to_string(),
        url => serde_json::Value::from(url).to_string(),
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        APP_CONFIG_TEMPLATE.replace("__TRAMY_ORIGIN__", &origin),
    )
        .into_response()
}

/// `request` answered from `dir` (ServeDir refuses `..` and paths outside it).
async fn serve(dir: &Path, request: Request) -> Response {
    let files = ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html")));
    match files.oneshot(request).await {
        Ok(response) => response.map(Body::new).into_response(),
        Err(never) => match never {},
    }
}
