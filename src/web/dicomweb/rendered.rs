//! Rendered resources (PS3.18 10.4.1.1.3, 8.3.5) and thumbnails (Supplement 203): frames decoded,
//! windowed and encoded as JPEG or PNG, for viewers and worklists that cannot decode DICOM.

use crate::web::auth::Caller;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::{accepted, multipart, select_instances, stored_instances};
use crate::dicom::pixels::{render, RenderOptions, RenderedFormat};
use crate::store::StoredInstance;
use crate::web::error::HttpError;
use crate::web::AppState;

/// Query parameters of rendered requests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderParams {
    /// `center,width[,function]`.
    window: Option<String>,
    /// `columns,rows[,...]`.
    viewport: Option<String>,
    /// JPEG quality 1..100.
    quality: Option<u8>,
    /// Accepted so requests carrying it are not refused; no annotation is burned in.
    #[allow(dead_code)]
    annotation: Option<String>,
    /// Accepted so requests carrying it are not refused; the answer is always sRGB.
    #[allow(dead_code)]
    iccprofile: Option<String>,
    /// The `accept` query parameter (PS3.18 8.3.3.1), used in place of the Accept header:
    /// OHIF asks for thumbnails with `?accept=image/jpeg`.
    accept: Option<String>,
}

fn parse_options(
    params: &RenderParams,
    headers: &HeaderMap,
    default_viewport: Option<(u32, u32)>,
) -> Result<RenderOptions, HttpError> {
    let window = match &params.window {
        None => None,
        Some(w) => {
            let mut parts = w.split(',').map(str::trim);
            let center = parts.next().and_then(|c| c.parse::<f64>().ok());
            let width = parts.next().and_then(|c| c.parse::<f64>().ok());
            match (center, width) {
                (Some(c), Some(w)) if w > 0.0 => Some((c, w)),
                _ => {
                    return Err(HttpError::bad_request(format!(
                        "window={w:?}: expected center,width with width > 0"
                    )))
                }
            }
        }
    };
    let viewport = match &params.viewport {
        None => default_viewport,
        Some(v) => {
            let mut parts = v.split(',').map(str::trim);
            let w = parts.next().and_then(|c| c.parse::<u32>().ok());
            let h = parts.next().and_then(|c| c.parse::<u32>().ok());
            match (w, h) {
                (Some(w), Some(h)) if w > 0 && h > 0 && w <= 8192 && h <= 8192 => Some((w, h)),
                _ => {
                    return Err(HttpError::bad_request(format!(
                        "viewport={v:?}: expected columns,rows between 1 and 8192"
                    )))
                }
            }
        }
    };
    if params.quality.is_some_and(|q| q == 0 || q > 100) {
        return Err(HttpError::bad_request("quality must be between 1 and 100"));
    }
    let quality = params.quality.unwrap_or(90);
    let from_query;
    let headers = match &params.accept {
        Some(accept) => {
            from_query = accept_header(accept)?;
            &from_query
        }
        None => headers,
    };
    let mut format = None;
    for r in accepted(headers) {
        format = match r.essence.as_str() {
            "image/jpeg" | "image/*" | "*/*" => Some(RenderedFormat::Jpeg(quality)),
            "image/png" => Some(RenderedFormat::Png),
            "multipart/related" => match r.param("type") {
                Some("image/png") => Some(RenderedFormat::Png),
                Some("image/jpeg") | None => Some(RenderedFormat::Jpeg(quality)),
                _ => None,
            },
            _ => None,
        };
        if format.is_some() {
            break;
        }
    }
    let format = format.ok_or_else(|| {
        HttpError::not_acceptable("rendered images are image/jpeg or image/png; add one to Accept")
    })?;
    Ok(RenderOptions {
        window,
        viewport,
        format,
    })
}

/// The `accept` query parameter as an Accept header.
fn accept_header(accept: &str) -> Result<HeaderMap, HttpError> {
    let value = header::HeaderValue::from_str(accept)
        .map_err(|_| HttpError::bad_request("accept: not a media type list"))?;
    Ok(HeaderMap::from_iter([(header::ACCEPT, value)]))
}

/// Renders `frame` of `instance`.
pub async fn render_instance(
    state: &AppState,
    instance: &StoredInstance,
    frame: u32,
    options: RenderOptions,
) -> Result<Bytes, HttpError> {
    let file = state.archive.read_instance(instance).await?;
    let image = state
        .renders
        .run(move || render(&file, frame, &options))
        .await?
        .map_err(|e| match e {
            crate::dicom::pixels::PixelError::NoSuchFrame { .. } => {
                HttpError::not_found(e.to_string())
            }
            other => HttpError::not_acceptable(format!(
                "{other}; the instance can only be retrieved as DICOM"
            )),
        })?;
    Ok(Bytes::from(image))
}

fn single_image(format: RenderedFormat, image: Bytes) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.media_type())],
        image,
    )
        .into_response()
}

async fn render_many(
    state: AppState,
    found: Vec<StoredInstance>,
    options: RenderOptions,
) -> Result<Response, HttpError> {
    let boundary = multipart::boundary();
    let mut chunks = Vec::with_capacity(found.len() * 3 + 1);
    for instance in &found {
        // Instances without pixels (reports, structured documents) have nothing to render.
        let Ok(image) = render_instance(&state, instance, 1, options).await else {
            continue;
        };
        chunks.push(Ok(multipart::part_header(
            &boundary,
            options.format.media_type(),
            None,
        )));
        chunks.push(Ok(image));
        chunks.push(Ok(Bytes::from_static(b"\r\n")));
    }
    if chunks.is_empty() {
        return Err(HttpError::not_acceptable(
            "none of these instances has renderable pixel data",
        ));
    }
    chunks.push(Ok(multipart::closing(&boundary)));
    Ok(multipart::response(
        &boundary,
        options.format.media_type(),
        futures::stream::iter(chunks),
    ))
}

/// `GET .../instances/{sop}/rendered`: the first frame (PS3.18 allows a server to render a
/// multi-frame instance by its first frame when it does not offer video).
pub async fn instance(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, series, sop)): Path<(String, String, String)>,
    Query(params): Query<RenderParams>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let found = stored_instances(
        &state,
        &who,
        select_instances(study, Some(series), Some(sop))?,
    )
    .await?;
    if wants_mp4(&params, &headers)? {
        return mp4(&state, &found[0]).await;
    }
    let options = parse_options(&params, &headers, None)?;
    let image = render_instance(&state, &found[0], 1, options).await?;
    Ok(single_image(options.format, image))
}

/// Whether the client asks for the clip as `video/mp4` (PS3.18 8.7.4, rendered media types)
/// before any image type.
fn wants_mp4(params: &RenderParams, headers: &HeaderMap) -> Result<bool, HttpError> {
    let from_query;
    let headers = match &params.accept {
        Some(accept) => {
            from_query = accept_header(accept)?;
            &from_query
        }
        None => headers,
    };
    let first = accepted(headers).into_iter().find(|r| {
        matches!(
            r.essence.as_str(),
            "video/mp4" | "video/*" | "image/jpeg" | "image/png" | "image/*" | "*/*"
        ) || r.essence == "multipart/related"
    });
    Ok(first.is_some_and(|r| r.essence.starts_with("video/")))
}

/// A video instance's whole clip as MP4, its H.264/H.265 stream copied without re-encoding.
async fn mp4(state: &AppState, instance: &StoredInstance) -> Result<Response, HttpError> {
    use crate::dicom::video::{self, VideoError};
    if !video::is_video_transfer_syntax(&instance.transfer_syntax_uid) {
        return Err(HttpError::not_acceptable(
            "video/mp4 is offered for video instances (MPEG-4 AVC or HEVC transfer syntaxes) only",
        ));
    }
    let file = state.archive.read_instance(instance).await?;
    let clip = state
        .renders
        .run(move || video::to_mp4(&file))
        .await?
        .map_err(|e| match e {
            VideoError::NotRemuxable(reason) => HttpError::not_acceptable(reason),
            other => HttpError::not_acceptable(format!(
                "{other}; the instance can only be retrieved as DICOM"
            )),
        })?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "video/mp4")],
        Bytes::from(clip),
    )
        .into_response())
}

/// `GET .../instances/{sop}/frames/{frame}/rendered`
pub async fn frame(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, series, sop, frame)): Path<(String, String, String, String)>,
    Query(params): Query<RenderParams>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let options = parse_options(&params, &headers, None)?;
    let frame: u32 = frame.parse().ok().filter(|f| *f >= 1).ok_or_else(|| {
        HttpError::bad_request(format!("frame {frame:?} is not a positive integer"))
    })?;
    let found = stored_instances(
        &state,
        &who,
        select_instances(study, Some(series), Some(sop))?,
    )
    .await?;
    let image = render_instance(&state, &found[0], frame, options).await?;
    Ok(single_image(options.format, image))
}

/// `GET /studies/{study}/series/{series}/rendered`: every instance, as multipart.
pub async fn series(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, series)): Path<(String, String)>,
    Query(params): Query<RenderParams>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let options = parse_options(&params, &headers, None)?;
    let found =
        stored_instances(&state, &who, select_instances(study, Some(series), None)?).await?;
    render_many(state, found, options).await
}

/// `GET /studies/{study}/rendered`: every instance, as multipart.
pub async fn study(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(study): Path<String>,
    Query(params): Query<RenderParams>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let options = parse_options(&params, &headers, None)?;
    let found = stored_instances(&state, &who, select_instances(study, None, None)?).await?;
    render_many(state, found, options).await
}

const THUMBNAIL: Option<(u32, u32)> = Some((128, 128));

/// A representative image: the middle instance with pixels of the selection.
async fn thumbnail_of(
    state: AppState,
    found: Vec<StoredInstance>,
    options: RenderOptions,
) -> Result<Response, HttpError> {
    let middle = found.len() / 2;
    let order = (middle..found.len()).chain(0..middle);
    for i in order {
        if let Ok(image) = render_instance(&state, &found[i], 1, options).await {
            return Ok(single_image(options.format, image));
        }
    }
    Err(HttpError::not_acceptable(
        "none of these instances has renderable pixel data",
    ))
}

/// `GET /studies/{study}/thumbnail`
pub async fn study_thumbnail(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(study): Path<String>,
    Query(params): Query<RenderParams>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let options = parse_options(&params, &headers, THUMBNAIL)?;
    let found = stored_instances(&state, &who, select_instances(study, None, None)?).await?;
    thumbnail_of(state, found, options).await
}

/// `GET /studies/{study}/series/{series}/thumbnail`
pub async fn series_thumbnail(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, series)): Path<(String, String)>,
    Query(params): Query<RenderParams>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let options = parse_options(&params, &headers, THUMBNAIL)?;
    let found =
        stored_instances(&state, &who, select_instances(study, Some(series), None)?).await?;
    thumbnail_of(state, found, options).await
}

/// `GET .../instances/{sop}/thumbnail`
pub async fn instance_thumbnail(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, series, sop)): Path<(String, String, String)>,
    Query(params): Query<RenderParams>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let options = parse_options(&params, &headers, THUMBNAIL)?;
    let found = stored_instances(
        &state,
        &who,
        select_instances(study, Some(series), Some(sop))?,
    )
    .await?;
    thumbnail_of(state, found, options).await
}

/// Parses WADO-URI's rendering parameters into options (PS3.18 9.1.2).
pub fn wado_uri_options(
    rows: Option<u32>,
    columns: Option<u32>,
    center: Option<f64>,
    width: Option<f64>,
    quality: Option<u8>,
    png: bool,
) -> RenderOptions {
    RenderOptions {
        window: center.zip(width).filter(|(_, w)| *w > 0.0),
        viewport: match (columns, rows) {
            (Some(c), Some(r)) => Some((c, r)),
            (Some(c), None) => Some((c, c)),
            (None, Some(r)) => Some((r, r)),
            _ => None,
        },
        format: if png {
            RenderedFormat::Png
        } else {
            RenderedFormat::Jpeg(quality.unwrap_or(90).clamp(1, 100))
        },
    }
}
