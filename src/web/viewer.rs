//! A browser viewer's static files at the site root (`[http] viewer_dir`), e.g. OHIF's built
//! `dist/` with tramy's `app-config.js` (`scripts/fetch-ohif.sh`): one origin serves the viewer
//! and the DICOMweb it reads, so an admin runs one process and needs no CORS. Paths that are not
//! files get `index.html` (the viewer routes them itself, e.g. `/viewer?StudyInstanceUIDs=…`);
//! tramy's own prefixes never do, so a mistyped API path stays a 404 and never becomes HTML.

use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
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

/// The router's fallback: a file of the viewer, else its `index.html`, else 404. Without a
/// viewer, the site's root (and `/ui`) lead to the web UI.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    match &state.config.http.viewer_dir {
        _ if path == "/ui" => Redirect::to("/ui/").into_response(),
        None if path == "/" => Redirect::to("/ui/").into_response(),
        Some(dir) if !OWN_PREFIXES.iter().any(|p| path.starts_with(p)) => serve(dir, request).await,
        _ => HttpError::not_found("no such resource").into_response(),
    }
}

/// `request` answered from `dir` (ServeDir refuses `..` and paths outside it).
async fn serve(dir: &Path, request: Request) -> Response {
    let files = ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html")));
    match files.oneshot(request).await {
        Ok(response) => response.map(Body::new).into_response(),
        Err(never) => match never {},
    }
}
