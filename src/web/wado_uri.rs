//! WADO-URI (PS3.18 9): `GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…` returning
//! the instance as `application/dicom` or a rendered `image/jpeg` / `image/png`.

use crate::web::auth::Caller;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::dicomweb::rendered::{render_instance, wado_uri_options};
use super::dicomweb::wado::{can_convert, load_part10};
use super::error::HttpError;
use super::AppState;

/// WADO-URI query parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WadoUriParams {
    request_type: Option<String>,
    #[serde(rename = "studyUID")]
    study_uid: Option<String>,
    #[serde(rename = "seriesUID")]
    series_uid: Option<String>,
    #[serde(rename = "objectUID")]
    object_uid: Option<String>,
    content_type: Option<String>,
    transfer_syntax: Option<String>,
    rows: Option<u32>,
    columns: Option<u32>,
    window_center: Option<f64>,
    window_width: Option<f64>,
    frame_number: Option<u32>,
    image_quality: Option<u8>,
    anonymize: Option<String>,
}

/// `GET /wado`
pub async fn wado(
    State(state): State<AppState>,
    Caller(who): Caller,
    Query(p): Query<WadoUriParams>,
    _headers: HeaderMap,
) -> Result<Response, HttpError> {
    if p.request_type.as_deref() != Some("WADO") {
        return Err(HttpError::bad_request("requestType=WADO is required"));
    }
    // Frames are numbered from 1 (PS3.18 9.1.2.1.7 frameNumber; PS3.3 C.7.6.6).
    if p.frame_number == Some(0) {
        return Err(HttpError::bad_request(
            "frameNumber=0 does not exist: frames are numbered from 1",
        ));
    }
    if p.anonymize.is_some() {
        return Err(HttpError::bad_request("anonymize is not supported"));
    }
    let (Some(study), Some(series), Some(object)) = (p.study_uid, p.series_uid, p.object_uid)
    else {
        return Err(HttpError::bad_request(
            "studyUID, seriesUID and objectUID are required",
        ));
    };
    let instance = super::dicomweb::stored_instances(
        &state,
        &who,
        super::dicomweb::select_instances(study, Some(series), Some(object))?,
    )
    .await?
    .remove(0);
    // The first acceptable type of a comma-separated list; image/jpeg by default (PS3.18 9.1.2.1.5).
    let content_type = p.content_type.unwrap_or_else(|| "image/jpeg".into());
    for wanted in content_type.split(',').map(str::trim) {
        match wanted {
            "application/dicom" => {
                let target = p.transfer_syntax.as_deref();
                if let Some(ts) = target {
                    if !can_convert(&instance.transfer_syntax_uid, ts) {
                        continue;
                    }
                }
                let (file, _) = load_part10(&state, &instance, target)
                    .await
                    .map_err(super::dicomweb::wado::LoadError::into_http)?;
                return Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/dicom")],
                    file,
                )
                    .into_response());
            }
            "image/jpeg" | "image/png" | "image/*" | "*/*" => {
                let options = wado_uri_options(
                    p.rows,
                    p.columns,
                    p.window_center,
                    p.window_width,
                    p.image_quality,
                    wanted == "image/png",
                );
                let image =
                    render_instance(&state, &instance, p.frame_number.unwrap_or(1), options)
                        .await?;
                return Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, options.format.media_type())],
                    image,
                )
                    .into_response());
            }
            _ => {}
        }
    }
    Err(HttpError::not_acceptable(format!(
        "contentType {content_type:?} cannot be served; use application/dicom, image/jpeg or image/png"
    )))
}
