//! WADO-RS (PS3.18 10.4): instances as `multipart/related; type="application/dicom"` in the
//! stored or a requested transfer syntax, metadata from the index alone, and frames.

use crate::web::auth::Caller;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use futures::StreamExt;

use super::{accepted, multipart, select_instances, stored_instances, MediaRange};
use crate::access::Principal;
use crate::dicom::transcode::{is_native, transcode_native};
use crate::dicom::{ReceivedInstance, EXPLICIT_VR_LE};
use crate::store::query::AttributeQuery;
use crate::store::StoredInstance;
use crate::web::error::HttpError;
use crate::web::AppState;

/// The transfer syntax a retrieve asks for: `None` for "as stored".
fn requested_transfer_syntax(ranges: &[MediaRange]) -> Result<Option<String>, HttpError> {
    for r in ranges {
        match r.essence.as_str() {
            "multipart/related" => {
                let part_type = r.param("type").unwrap_or("application/dicom");
                if part_type != "application/dicom"
                    && part_type != "*/*"
                    && part_type != "application/*"
                {
                    continue;
                }
                return Ok(match r.param("transfer-syntax") {
                    Some("*") => None,
                    Some(ts) => Some(ts.to_string()),
                    // PS3.18 8.7.3.5.2: the default for application/dicom is Explicit VR LE.
                    None => Some(EXPLICIT_VR_LE.to_string()),
                });
            }
            "*/*" | "multipart/*" | "application/dicom" => return Ok(None),
            _ => {}
        }
    }
    Err(HttpError::not_acceptable(
        "instances are sent as multipart/related; type=\"application/dicom\"; add it to Accept",
    ))
}

/// Whether an instance stored in `stored` can be sent as `target`: the same syntax, or a native
/// one reached by re-encoding (native source) or by decoding the pixel data (compressed source
/// with a decoder built in).
pub fn can_convert(stored: &str, target: &str) -> bool {
    use dicom_encoding::TransferSyntaxIndex;
    stored == target
        || (is_native(target)
            && (is_native(stored)
                || dicom_transfer_syntax_registry::TransferSyntaxRegistry
                    .get(stored)
                    .is_some_and(|ts| ts.can_decode_all())))
}

/// Why an instance cannot be sent in the syntax asked for.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The stored object is missing, damaged or unreadable: nothing may be sent.
    #[error(transparent)]
    Read(#[from] crate::integrity::ReadError),
    /// The object is intact but cannot be converted to the requested transfer syntax.
    #[error("{0}")]
    Convert(String),
}

impl LoadError {
    /// The HTTP error: a read failure is the archive's (5xx), a conversion failure is 406.
    pub fn into_http(self) -> HttpError {
        match self {
            LoadError::Read(e) => e.into(),
            LoadError::Convert(e) => HttpError::not_acceptable(format!(
                "{e}; ask for transfer-syntax=* to get it as stored"
            )),
        }
    }
}

/// The Part 10 file of `instance` in `target` (`None` = as stored), read through checksum
/// verification.
pub async fn load_part10(
    state: &AppState,
    instance: &StoredInstance,
    target: Option<&str>,
) -> Result<(Bytes, String), LoadError> {
    let file = state.archive.read_instance(instance).await?;
    convert(instance, file, target)
        .await
        .map_err(LoadError::Convert)
}

async fn convert(
    instance: &StoredInstance,
    file: Bytes,
    target: Option<&str>,
) -> Result<(Bytes, String), String> {
    let Some(target) = target.filter(|t| *t != instance.transfer_syntax_uid) else {
        return Ok((file, instance.transfer_syntax_uid.clone()));
    };
    let to = target.to_string();
    if !is_native(&instance.transfer_syntax_uid) {
        let converted =
            tokio::task::spawn_blocking(move || crate::dicom::pixels::transcode(&file, &to))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        return Ok((Bytes::from(converted), target.to_string()));
    }
    let stored = ReceivedInstance::from_part10(file).map_err(|e| e.to_string())?;
    let from = stored.transfer_syntax.clone();
    let dataset =
        tokio::task::spawn_blocking(move || transcode_native(&stored.dataset, &from, &to))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    let converted = ReceivedInstance::from_dataset(target, Bytes::from(dataset));
    let file = converted
        .to_part10(&instance.sop_class_uid, &instance.sop_instance_uid, None)
        .map_err(|e| e.to_string())?;
    Ok((Bytes::from(file), target.to_string()))
}

async fn retrieve(
    state: AppState,
    who: Principal,
    headers: HeaderMap,
    query: AttributeQuery,
) -> Result<Response, HttpError> {
    let target = requested_transfer_syntax(&accepted(&headers))?;
    let instances = stored_instances(&state, &who, query).await?;
    if let Some(ts) = &target {
        if let Some(i) = instances
            .iter()
            .find(|i| !can_convert(&i.transfer_syntax_uid, ts))
        {
            return Err(HttpError::not_acceptable(format!(
                "instance {} is stored as {} and cannot be sent as {ts}; ask for transfer-syntax=* to get it as stored",
                i.sop_instance_uid, i.transfer_syntax_uid
            )));
        }
    }
    let boundary = multipart::boundary();
    let closing = multipart::closing(&boundary);
    // A single instance is converted before the response starts, so a failure is a proper 406.
    // Larger selections stream; an instance whose conversion fails is left out and logged,
    // because the status line has already gone.
    let first = if instances.len() == 1 {
        let converted = load_part10(&state, &instances[0], target.as_deref())
            .await
            .map_err(LoadError::into_http)?;
        Some(converted)
    } else {
        None
    };
    let part_boundary = boundary.clone();
    let parts = futures::stream::iter(instances)
        .then(move |instance| {
            let state = state.clone();
            let target = target.clone();
            let boundary = part_boundary.clone();
            let ready = first.clone();
            async move {
                let loaded = match ready {
                    Some(done) => Ok(done),
                    None => load_part10(&state, &instance, target.as_deref()).await,
                };
                match loaded {
                    Ok((file, ts)) => {
                        let head = multipart::part_header(&boundary, &format!("application/dicom; transfer-syntax={ts}"), None);
                        vec![Ok(head), Ok(file), Ok(Bytes::from_static(b"\r\n"))]
                    }
                    Err(LoadError::Convert(e)) => {
                        tracing::warn!(sop_instance_uid = %instance.sop_instance_uid, error = %e, "instance left out of a WADO-RS response");
                        Vec::new()
                    }
                    // The status line has gone: breaking the body off is the only way left to
                    // tell the client that the response is not the whole selection.
                    Err(LoadError::Read(e)) => {
                        tracing::warn!(sop_instance_uid = %instance.sop_instance_uid, error = %e, "a WADO-RS response broken off: an instance could not be read");
                        vec![Err(std::io::Error::other(e.to_string()))]
                    }
                }
            }
        })
        .flat_map(futures::stream::iter)
        .chain(futures::stream::iter([Ok(closing)]));
    Ok(multipart::response(&boundary, "application/dicom", parts))
}

/// `GET /dicomweb/studies/{study}`
pub async fn study(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(study): Path<String>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    retrieve(s, who, h, select_instances(study, None, None)?).await
}

/// `GET /dicomweb/studies/{study}/series/{series}`
pub async fn series(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((study, series)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    retrieve(s, who, h, select_instances(study, Some(series), None)?).await
}

/// `GET /dicomweb/studies/{study}/series/{series}/instances/{sop}`
pub async fn instance(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((study, series, sop)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    retrieve(s, who, h, select_instances(study, Some(series), Some(sop))?).await
}

/// Metadata of the selected instances, straight from the index: a JSON array of the stored
/// DICOM JSON objects, concatenated without re-parsing.
async fn metadata(
    state: AppState,
    who: Principal,
    headers: HeaderMap,
    query: AttributeQuery,
) -> Result<Response, HttpError> {
    if !super::accepts_dicom_json(&headers) {
        return Err(HttpError::not_acceptable(
            "metadata is sent as application/dicom+json; add it to Accept",
        ));
    }
    let found = state
        .archive
        .index()
        .metadata(&who, query)
        .await
        .map_err(HttpError::from)?
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    if found.is_empty() {
        return Err(HttpError::not_found("no such study, series or instance"));
    }
    let base = super::base_url(&state, &headers);
    let mut body = String::with_capacity(found.iter().map(|m| m.json.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, m) in found.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let url = format!(
            "{base}/studies/{}/series/{}/instances/{}",
            m.study_instance_uid, m.series_instance_uid, m.sop_instance_uid
        );
        body.push_str(&crate::dicom::json::resolve_bulk_data_uris(&m.json, &url));
    }
    body.push(']');
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        body,
    )
        .into_response())
}

/// `GET /dicomweb/studies/{study}/metadata`
pub async fn study_metadata(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(study): Path<String>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    metadata(s, who, h, select_instances(study, None, None)?).await
}

/// `GET /dicomweb/studies/{study}/series/{series}/metadata`
pub async fn series_metadata(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((study, series)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    metadata(s, who, h, select_instances(study, Some(series), None)?).await
}

/// `GET /dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata`
pub async fn instance_metadata(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((study, series, sop)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Result<Response, HttpError> {
    metadata(s, who, h, select_instances(study, Some(series), Some(sop))?).await
}

/// The media type of a compressed frame in `transfer_syntax` (PS3.18 Table 8.7.3-2).
fn frame_media_type(transfer_syntax: &str) -> Option<&'static str> {
    Some(match transfer_syntax {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.5" => "image/x-dicom-rle",
        // Video: the stream as stored (PS3.18 8.7.3.5.3); decoded when native is asked for.
        ts => match crate::dicom::video::VideoCodec::of(ts)? {
            crate::dicom::video::VideoCodec::Mpeg2 => "video/mpeg2",
            crate::dicom::video::VideoCodec::H264 => "video/mp4",
            crate::dicom::video::VideoCodec::H265 => "video/H265",
        },
    })
}

/// Whether the Accept header takes single-part bodies of `media_type` in a multipart response
/// (bulk data is application/octet-stream).
fn accepts_frames(ranges: &[MediaRange], media_type: &str) -> bool {
    ranges.iter().any(|r| match r.essence.as_str() {
        "*/*" | "multipart/*" => true,
        "multipart/related" => match r.param("type") {
            None | Some("*/*") => true,
            Some(t) => t == media_type || (t == "image/*" && media_type.starts_with("image/")),
        },
        e => e == media_type,
    })
}

/// Frames of a native instance travel as little-endian samples (PS3.18 8.7.3.3.2), which is what
/// Explicit VR Little Endian names, whatever the stored byte order.
const NATIVE_FRAME_SYNTAX: &str = EXPLICIT_VR_LE;

/// How the frames of one instance go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameForm {
    /// The stored bitstream (native frames: the stored samples, little endian) in parts of this
    /// media type.
    Stored(&'static str),
    /// Compressed frames decoded to native little-endian samples (application/octet-stream).
    Decoded,
}

impl FrameForm {
    /// The media type of each part and of the multipart `type` parameter.
    fn media_type(self) -> &'static str {
        match self {
            FrameForm::Stored(t) => t,
            FrameForm::Decoded => OCTET_STREAM,
        }
    }

    /// Each part's Content-Type, naming the transfer syntax of its bytes (PS3.18 8.7.3.5), so
    /// a client that asked for `transfer-syntax=*` knows what it got.
    fn part_type(self, stored_ts: &str) -> String {
        let ts = match self {
            FrameForm::Stored(_) if !is_native(stored_ts) => stored_ts,
            _ => NATIVE_FRAME_SYNTAX,
        };
        format!("{}; transfer-syntax={ts}", self.media_type())
    }
}

const OCTET_STREAM: &str = "application/octet-stream";

/// The first form of frames, in the order of the Accept header, that a media range takes for an
/// instance stored in `stored_ts` (PS3.18 8.7.3.5 and Table 8.7.3-2): `None` when none does.
fn frame_form(ranges: &[MediaRange], stored_ts: &str) -> Option<FrameForm> {
    ranges.iter().find_map(|r| range_frame_form(r, stored_ts))
}

fn range_frame_form(range: &MediaRange, stored_ts: &str) -> Option<FrameForm> {
    let compressed = frame_media_type(stored_ts);
    let as_stored = FrameForm::Stored(compressed.unwrap_or(OCTET_STREAM));
    let (media, ts) = match range.essence.as_str() {
        "*/*" | "multipart/*" => return Some(as_stored),
        // Frames default to application/octet-stream (PS3.18 8.7.3.5.2).
        "multipart/related" => (
            range.param("type").unwrap_or(OCTET_STREAM),
            range.param("transfer-syntax"),
        ),
        single => (single, range.param("transfer-syntax")),
    };
    let stored_or_any = |ts: Option<&str>| ts.is_none_or(|t| t == "*" || t == stored_ts);
    match (media, compressed) {
        ("*/*", _) => Some(as_stored),
        (OCTET_STREAM, None) => ts
            .is_none_or(|t| t == "*" || is_native(t))
            .then_some(as_stored),
        // `transfer-syntax=*` (what OHIF sends) or the stored syntax: the stored bitstream,
        // labelled octet-stream as asked. Without the parameter octet-stream means Explicit VR
        // Little Endian, so compressed frames are decoded.
        (OCTET_STREAM, Some(_)) => match ts {
            Some(t) if t == "*" || t == stored_ts => Some(FrameForm::Stored(OCTET_STREAM)),
            None => Some(FrameForm::Decoded),
            Some(t) if is_native(t) => Some(FrameForm::Decoded),
            Some(_) => None,
        },
        (m, Some(stored)) if (m == stored || m == "image/*") && stored_or_any(ts) => {
            Some(as_stored)
        }
        _ => None,
    }
}

/// The compressed bitstream of each frame (PS3.5 A.4): one fragment per frame, every fragment
/// of a single frame, fragments grouped by the Basic Offset Table, or, for JPEG-family syntaxes
/// without one, by the fragments that open with a Start Of Image marker. `None` when the
/// fragments cannot be told apart into `number_of_frames` frames.
fn frame_bitstreams(
    fragments: &[Vec<u8>],
    offset_table: &[u32],
    number_of_frames: usize,
    transfer_syntax: &str,
) -> Option<Vec<Bytes>> {
    if fragments.len() == number_of_frames {
        return Some(
            fragments
                .iter()
                .map(|f| Bytes::copy_from_slice(f))
                .collect(),
        );
    }
    if number_of_frames == 1 {
        return Some(vec![Bytes::from(fragments.concat())]);
    }
    let starts = frame_starts(fragments, offset_table, transfer_syntax)?;
    if starts.len() != number_of_frames || starts.first() != Some(&0) {
        return None;
    }
    let ends = starts.iter().skip(1).copied().chain([fragments.len()]);
    Some(
        starts
            .iter()
            .zip(ends)
            .map(|(&a, b)| Bytes::from(fragments[a..b].concat()))
            .collect(),
    )
}

/// The index of the first fragment of each frame.
fn frame_starts(
    fragments: &[Vec<u8>],
    offset_table: &[u32],
    transfer_syntax: &str,
) -> Option<Vec<usize>> {
    if !offset_table.is_empty() {
        // Offsets count from the first fragment's item header; each item header is 8 bytes.
        let mut position = 0u64;
        let mut starts = Vec::with_capacity(offset_table.len());
        let mut wanted = offset_table.iter().map(|&o| u64::from(o)).peekable();
        for (i, f) in fragments.iter().enumerate() {
            if wanted.peek() == Some(&position) {
                starts.push(i);
                wanted.next();
            }
            position += 8 + f.len() as u64;
        }
        return wanted.peek().is_none().then_some(starts);
    }
    let jpeg =
        frame_media_type(transfer_syntax).is_some_and(|t| t == "image/jpeg" || t == "image/jls");
    jpeg.then(|| {
        fragments
            .iter()
            .enumerate()
            .filter(|(_, f)| f.starts_with(&[0xFF, 0xD8]))
            .map(|(i, _)| i)
            .collect()
    })
}

/// Parses "1,3,5" into 1-based frame numbers.
/// Most distinct frames one request may ask for.
pub const MAX_FRAMES_PER_REQUEST: usize = 2048;

/// The frame numbers of a `frames/{list}` path (PS3.18 10.4.1.1.4), each once, in the order
/// they first appear: a list repeating one frame must not multiply the response.
fn frame_list(raw: &str) -> Result<Vec<usize>, HttpError> {
    let mut seen = std::collections::HashSet::new();
    let mut frames = Vec::new();
    for f in raw.split(',') {
        let n = f
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                HttpError::bad_request(format!("frame number {f:?} is not a positive integer"))
            })?;
        if seen.insert(n) {
            frames.push(n);
        }
        if frames.len() > MAX_FRAMES_PER_REQUEST {
            return Err(HttpError::bad_request(format!(
                "more than {MAX_FRAMES_PER_REQUEST} frames asked for in one request; ask in several"
            )));
        }
    }
    Ok(frames)
}

/// The frames of one instance as stored: native pixel data cut into frames (little endian), or
/// the stored compressed bitstream of each frame.
fn extract_frames(file: Bytes, wanted: &[usize]) -> Result<Vec<Bytes>, HttpError> {
    let stored = ReceivedInstance::from_part10(file).map_err(HttpError::internal)?;
    let obj = stored.parse().map_err(HttpError::internal)?;
    let pixel_data = obj
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| HttpError::not_found("the instance has no pixel data"))?;
    let number_of_frames = crate::dicom::attributes::integer(&obj, tags::NUMBER_OF_FRAMES)
        .unwrap_or(1)
        .max(1) as usize;
    if let Some(&bad) = wanted.iter().find(|f| **f > number_of_frames) {
        return Err(HttpError::not_found(format!(
            "frame {bad} does not exist; the instance has {number_of_frames}"
        )));
    }
    if let Some(fragments) = pixel_data.value().fragments() {
        // A video's frames are one stream (PS3.5 8.2.5-8.2.8): the whole stream is the answer
        // for any of its frames, sent once.
        if crate::dicom::video::is_video_transfer_syntax(&stored.transfer_syntax) {
            return Ok(vec![Bytes::from(fragments.concat())]);
        }
        let offsets = pixel_data.value().offset_table().unwrap_or_default();
        let frames = frame_bitstreams(fragments, offsets, number_of_frames, &stored.transfer_syntax)
            .ok_or_else(|| {
                HttpError::not_acceptable(
                    "the fragments of this instance cannot be told apart into frames (no Basic Offset Table); retrieve the instance",
                )
            })?;
        return Ok(wanted.iter().map(|n| frames[n - 1].clone()).collect());
    }
    let bytes = pixel_data.to_bytes().map_err(HttpError::internal)?;
    let number = |tag: Tag| {
        crate::dicom::attributes::integer(&obj, tag)
            .unwrap_or(0)
            .max(0) as usize
    };
    let frame_len = number(tags::ROWS)
        * number(tags::COLUMNS)
        * number(tags::SAMPLES_PER_PIXEL).max(1)
        * number(tags::BITS_ALLOCATED)
        / 8;
    if frame_len == 0 || bytes.len() < frame_len * number_of_frames {
        return Err(HttpError::internal(
            "pixel data is shorter than its dimensions say",
        ));
    }
    // dicom-rs decodes OW values to native numbers, so `to_bytes` is already little endian, the
    // byte order frames travel in (PS3.18 8.7.3.3.2), whatever the stored transfer syntax.
    Ok(wanted
        .iter()
        .map(|n| Bytes::copy_from_slice(&bytes[(n - 1) * frame_len..n * frame_len]))
        .collect())
}

/// Compressed frames decoded to native little-endian samples.
fn decode_frames(file: &[u8], wanted: &[usize]) -> Result<Vec<Bytes>, HttpError> {
    crate::dicom::pixels::decode_frames(file, wanted)
        .map(|f| f.into_iter().map(Bytes::from).collect())
        .map_err(|e| match e {
            crate::dicom::pixels::PixelError::NoSuchFrame { .. } => {
                HttpError::not_found(e.to_string())
            }
            other => HttpError::not_acceptable(format!(
                "{other}; ask for transfer-syntax=* to get the frames as stored"
            )),
        })
}

/// `GET /dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}`: the stored
/// bitstream when the client takes it (`transfer-syntax=*`, the stored syntax or its media type),
/// else compressed frames decoded to native; each part names its transfer syntax.
pub async fn frames(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, series, sop, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let wanted = frame_list(&list)?;
    let (instance, file) = super::instance_file(&state, &who, study, series, sop).await?;
    let stored_ts = instance.transfer_syntax_uid;
    let form = frame_form(&accepted(&headers), &stored_ts).ok_or_else(|| {
        HttpError::not_acceptable(format!(
            "frames of this instance are stored as {stored_ts}; add multipart/related; type=\"application/octet-stream\"; transfer-syntax=* to Accept to get them as stored"
        ))
    })?;
    let frames = tokio::task::spawn_blocking(move || match form {
        FrameForm::Decoded => decode_frames(&file, &wanted),
        FrameForm::Stored(_) => extract_frames(file, &wanted),
    })
    .await
    .map_err(HttpError::internal)??;
    let part_type = form.part_type(&stored_ts);
    let boundary = multipart::boundary();
    let mut chunks = Vec::with_capacity(frames.len() * 3 + 1);
    for frame in frames {
        chunks.push(Ok(multipart::part_header(&boundary, &part_type, None)));
        chunks.push(Ok(frame));
        chunks.push(Ok(Bytes::from_static(b"\r\n")));
    }
    chunks.push(Ok(multipart::closing(&boundary)));
    Ok(multipart::response(
        &boundary,
        form.media_type(),
        futures::stream::iter(chunks),
    ))
}

/// `GET .../instances/{sop}/bulkdata/{tag}`: the value of a top-level binary attribute, as
/// `multipart/related; type="application/octet-stream"` (PS3.18 10.4.1.1.5). Native Pixel Data
/// comes back whole; encapsulated Pixel Data is served per frame by the frames resource.
pub async fn bulkdata(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path((study, series, sop, tag)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let tag = (tag.len() == 8)
        .then(|| u32::from_str_radix(&tag, 16).ok())
        .flatten()
        .map(|t| Tag((t >> 16) as u16, t as u16))
        .ok_or_else(|| HttpError::bad_request(format!("{tag:?} is not an 8-digit hex tag")))?;
    if !accepts_frames(&accepted(&headers), "application/octet-stream") {
        return Err(HttpError::not_acceptable(
            "bulk data is application/octet-stream; add it to Accept",
        ));
    }
    let (_, file) = super::instance_file(&state, &who, study, series, sop).await?;
    let value = tokio::task::spawn_blocking(move || -> Result<Bytes, HttpError> {
        let obj = ReceivedInstance::from_part10(file)
            .map_err(HttpError::internal)?
            .parse()
            .map_err(HttpError::internal)?;
        let elem = obj
            .get(tag)
            .ok_or_else(|| HttpError::not_found("the instance has no such attribute"))?;
        if elem.value().fragments().is_some() {
            return Err(HttpError::not_acceptable(
                "encapsulated pixel data is served per frame: use the frames resource",
            ));
        }
        Ok(Bytes::from(
            elem.to_bytes().map_err(HttpError::internal)?.into_owned(),
        ))
    })
    .await
    .map_err(HttpError::internal)??;
    let boundary = multipart::boundary();
    let chunks = vec![
        Ok(multipart::part_header(
            &boundary,
            "application/octet-stream",
            None,
        )),
        Ok(value),
        Ok(Bytes::from_static(b"\r\n")),
        Ok(multipart::closing(&boundary)),
    ];
    Ok(multipart::response(
        &boundary,
        "application/octet-stream",
        futures::stream::iter(chunks),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

    fn form(accept: &str, stored: &str) -> Option<FrameForm> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, accept.parse().unwrap());
        frame_form(&accepted(&h), stored)
    }

    #[test]
    fn ohif_transfer_syntax_star_gets_the_stored_bitstream_as_octet_stream() {
        let ohif = "multipart/related; type=application/octet-stream; transfer-syntax=*";
        let f = form(ohif, JPEG_EXTENDED);
        assert_eq!(f, Some(FrameForm::Stored(OCTET_STREAM)));
        assert_eq!(
            f.unwrap().part_type(JPEG_EXTENDED),
            "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.51"
        );
        assert_eq!(
            form(ohif, "1.2.840.10008.1.2")
                .unwrap()
                .part_type("1.2.840.10008.1.2"),
            "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
            "native frames travel little endian"
        );
    }

    #[test]
    fn octet_stream_without_a_syntax_means_native_so_compressed_frames_are_decoded() {
        let plain = "multipart/related; type=\"application/octet-stream\"";
        assert_eq!(form(plain, JPEG_EXTENDED), Some(FrameForm::Decoded));
        let native =
            "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1";
        assert_eq!(form(native, JPEG_EXTENDED), Some(FrameForm::Decoded));
        let stored = "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.51";
        assert_eq!(
            form(stored, JPEG_EXTENDED),
            Some(FrameForm::Stored(OCTET_STREAM))
        );
        let other = "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.90";
        assert_eq!(
            form(other, JPEG_EXTENDED),
            None,
            "tramy does not re-compress"
        );
    }

    #[test]
    fn image_media_types_and_wildcards_get_the_stored_media_type() {
        assert_eq!(
            form("multipart/related; type=\"image/jpeg\"", JPEG_EXTENDED),
            Some(FrameForm::Stored("image/jpeg"))
        );
        assert_eq!(
            form("*/*", JPEG_EXTENDED),
            Some(FrameForm::Stored("image/jpeg"))
        );
        assert_eq!(
            form("multipart/related; type=image/jp2", JPEG_EXTENDED),
            None
        );
        assert_eq!(form("image/jpeg", "1.2.840.10008.1.2.1"), None);
        // The first range a client lists that can be served wins.
        assert_eq!(
            form(
                "multipart/related; type=image/jp2, multipart/related; type=application/octet-stream; transfer-syntax=*",
                JPEG_EXTENDED
            ),
            Some(FrameForm::Stored(OCTET_STREAM))
        );
    }

    #[test]
    fn fragments_are_grouped_into_frames_by_the_offset_table_or_jpeg_markers() {
        let soi = |n: u8| vec![0xFF, 0xD8, n, n];
        let tail = |n: u8| vec![n, n, 0xFF, 0xD9];
        let fragments = vec![soi(1), tail(1), soi(2), tail(2)];
        let want = vec![
            Bytes::from(vec![0xFF, 0xD8, 1, 1, 1, 1, 0xFF, 0xD9]),
            Bytes::from(vec![0xFF, 0xD8, 2, 2, 2, 2, 0xFF, 0xD9]),
        ];
        // Each item is 8 header bytes plus 4 value bytes: frame 2 starts 24 bytes in.
        assert_eq!(
            frame_bitstreams(&fragments, &[0, 24], 2, "1.2.840.10008.1.2.4.90"),
            Some(want.clone())
        );
        assert_eq!(
            frame_bitstreams(&fragments, &[], 2, JPEG_EXTENDED),
            Some(want)
        );
        assert_eq!(
            frame_bitstreams(&fragments, &[0, 23], 2, JPEG_EXTENDED),
            None,
            "an offset inside a fragment"
        );
        assert_eq!(
            frame_bitstreams(&fragments, &[], 2, "1.2.840.10008.1.2.4.90"),
            None,
            "no markers to split JPEG 2000 by"
        );
        assert_eq!(frame_bitstreams(&fragments, &[], 3, JPEG_EXTENDED), None);
    }
}
