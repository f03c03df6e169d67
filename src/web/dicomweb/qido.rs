//! QIDO-RS (PS3.18 10.6): the six search resources, attribute matching by keyword or tag,
//! `fuzzymatching`, `includefield`, `limit` and `offset`, answered from the index alone as
//! `application/dicom+json`.

use crate::web::auth::Caller;
use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use serde_json::Value;

use super::base_url;
use crate::store::query::{
    indexed_attribute, AttributeQuery, QueryError, QueryLevel, QueryMatch, QueryScope,
    INDEXED_ATTRIBUTES,
};
use crate::web::error::{warning_header, HttpError};
use crate::web::AppState;

/// Bytes of JSON gathered before they are handed to the response body.
const CHUNK: usize = 64 * 1024;
/// Longest the query waits for a client to take the next chunk; a client that reads nothing for
/// this long gives back its index connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

type Params = Query<Vec<(String, String)>>;

/// `GET /dicomweb/studies`
pub async fn studies(
    State(s): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    search(s, who, h, p, QueryLevel::Study, Vec::new()).await
}

/// `GET /dicomweb/studies/{study}/series`
pub async fn study_series(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(study): Path<String>,
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    search(
        s,
        who,
        h,
        p,
        QueryLevel::Series,
        vec![(tags::STUDY_INSTANCE_UID, study)],
    )
    .await
}

/// `GET /dicomweb/series`
pub async fn all_series(
    State(s): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    search(s, who, h, p, QueryLevel::Series, Vec::new()).await
}

/// `GET /dicomweb/studies/{study}/series/{series}/instances`
pub async fn series_instances(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((study, series)): Path<(String, String)>,
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    let path = vec![
        (tags::STUDY_INSTANCE_UID, study),
        (tags::SERIES_INSTANCE_UID, series),
    ];
    search(s, who, h, p, QueryLevel::Image, path).await
}

/// `GET /dicomweb/studies/{study}/instances`
pub async fn study_instances(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(study): Path<String>,
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    search(
        s,
        who,
        h,
        p,
        QueryLevel::Image,
        vec![(tags::STUDY_INSTANCE_UID, study)],
    )
    .await
}

/// `GET /dicomweb/instances`
pub async fn all_instances(
    State(s): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    search(s, who, h, p, QueryLevel::Image, Vec::new()).await
}

/// Attributes every result of a level carries (PS3.18 10.6.3.3, Tables 10.6.3-3 to -5).
fn default_attributes(level: QueryLevel, study_in_path: bool) -> Vec<Tag> {
    let study = vec![
        tags::STUDY_DATE,
        tags::STUDY_TIME,
        tags::ACCESSION_NUMBER,
        tags::MODALITIES_IN_STUDY,
        tags::REFERRING_PHYSICIAN_NAME,
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        tags::PATIENT_BIRTH_DATE,
        tags::PATIENT_SEX,
        tags::STUDY_INSTANCE_UID,
        tags::STUDY_ID,
        tags::STUDY_DESCRIPTION,
        tags::NUMBER_OF_STUDY_RELATED_SERIES,
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
    ];
    let series = vec![
        tags::MODALITY,
        tags::SERIES_DESCRIPTION,
        tags::SERIES_NUMBER,
        tags::SERIES_INSTANCE_UID,
        tags::SERIES_DATE,
        tags::SERIES_TIME,
        tags::BODY_PART_EXAMINED,
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
    ];
    let instance = vec![
        tags::SOP_CLASS_UID,
        tags::SOP_INSTANCE_UID,
        tags::INSTANCE_NUMBER,
        tags::ROWS,
        tags::COLUMNS,
        tags::BITS_ALLOCATED,
        tags::NUMBER_OF_FRAMES,
        tags::AVAILABLE_TRANSFER_SYNTAX_UID,
    ];
    let mut out = match level {
        QueryLevel::Patient | QueryLevel::Study => study,
        QueryLevel::Series => [
            series,
            if study_in_path {
                vec![tags::STUDY_INSTANCE_UID]
            } else {
                study
            },
        ]
        .concat(),
        QueryLevel::Image => {
            let mut v = [instance, series].concat();
            if study_in_path {
                v.push(tags::STUDY_INSTANCE_UID);
            } else {
                v.extend(study);
            }
            v
        }
    };
    out.dedup();
    out
}

/// A tag named by keyword (`PatientName`) or as eight hex digits (`00100010`).
fn parse_tag(name: &str) -> Result<Tag, HttpError> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        let group = u16::from_str_radix(&name[..4], 16)
            .map_err(|_| HttpError::bad_request(format!("bad tag {name}")))?;
        let element = u16::from_str_radix(&name[4..], 16)
            .map_err(|_| HttpError::bad_request(format!("bad tag {name}")))?;
        return Ok(Tag(group, element));
    }
    if name.contains('.') {
        return Err(HttpError::bad_request(format!(
            "attribute {name:?}: sequence attribute paths are not supported for matching"
        )));
    }
    dicom_dictionary_std::StandardDataDictionary
        .by_name(name)
        .map(|e| e.tag_range().inner())
        .ok_or_else(|| {
            HttpError::bad_request(format!(
                "unknown attribute {name:?}: use a DICOM keyword or an 8-digit hex tag"
            ))
        })
}

struct Search {
    query: AttributeQuery,
    include: BTreeSet<Tag>,
    include_all: bool,
    /// The most results this request may get, when that is fewer than it asked for.
    capped_at: Option<u64>,
}

/// The server's result caps (`[http] max_query_results`, `max_query_results_all_fields`).
#[derive(Clone, Copy)]
struct Caps {
    results: u64,
    results_all_fields: u64,
}

fn parse_params(
    params: Vec<(String, String)>,
    level: QueryLevel,
    path: Vec<(Tag, String)>,
    caps: Caps,
) -> Result<Search, HttpError> {
    let study_in_path = !path.is_empty();
    let mut conditions = path;
    let mut include: BTreeSet<Tag> = default_attributes(level, study_in_path)
        .into_iter()
        .collect();
    let mut include_all = false;
    let mut limit = None;
    let mut offset = 0;
    let mut fuzzy = false;
    for (name, value) in params {
        match name.as_str() {
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        include_all = true;
                    } else {
                        include.insert(parse_tag(field)?);
                    }
                }
            }
            "limit" => {
                limit = Some(value.parse::<u64>().map_err(|_| {
                    HttpError::bad_request(format!("limit={value:?} is not a non-negative integer"))
                })?)
            }
            "offset" => {
                offset = value.parse::<u64>().map_err(|_| {
                    HttpError::bad_request(format!(
                        "offset={value:?} is not a non-negative integer"
                    ))
                })?
            }
            "fuzzymatching" => {
                fuzzy = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(HttpError::bad_request(format!(
                            "fuzzymatching={value:?} must be true or false"
                        )))
                    }
                }
            }
            // Accepted and ignored: we always answer in DICOM JSON (charset is UTF-8).
            "charset" | "emptyvaluematching" | "multiplevaluematching" => {}
            attribute => {
                let tag = parse_tag(attribute)?;
                include.insert(tag);
                conditions.push((tag, value));
            }
        }
    }
    // Each includefield=all result carries its instance's whole metadata: a lower cap.
    let cap = if include_all {
        caps.results_all_fields
    } else {
        caps.results
    }
    .max(1);
    let capped_at = (limit.is_none_or(|l| l > cap)).then_some(cap);
    Ok(Search {
        query: AttributeQuery {
            level,
            conditions,
            limit: Some(limit.unwrap_or(cap).min(cap)),
            offset,
            fuzzy_person_names: fuzzy,
        },
        include,
        include_all,
        capped_at,
    })
}

async fn search(
    state: AppState,
    who: crate::access::Principal,
    headers: HeaderMap,
    params: Vec<(String, String)>,
    level: QueryLevel,
    path: Vec<(Tag, String)>,
) -> Result<Response, HttpError> {
    if !super::accepts_dicom_json(&headers) {
        return Err(HttpError::not_acceptable(
            "QIDO-RS answers in application/dicom+json; add it to Accept",
        ));
    }
    let caps = Caps {
        results: state.config.http.max_query_results,
        results_all_fields: state.config.http.max_query_results_all_fields,
    };
    if !who.permits(crate::access::Action::Query) {
        return Err(HttpError::forbidden());
    }
    let search = parse_params(params, level, path, caps)?;
    let base = base_url(&state, &headers);
    let (body_tx, body_rx) = tokio::sync::mpsc::channel(4);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let capped_at = search.capped_at;
    let index = state.archive.index().clone();
    tokio::spawn(async move {
        let outcome = index
            .query(&who, move |scope| {
                stream_results(scope, &search, &base, started_tx, &body_tx)
            })
            .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(StreamError::Gone)) => tracing::debug!("QIDO-RS client stopped reading"),
            Ok(Err(e)) => tracing::warn!(error = %e, "QIDO-RS results cut off"),
            Err(e) => tracing::warn!(error = %e, "QIDO-RS query failed"),
        }
    });
    // The query's verdict before any row: a refusal is still a proper status.
    let more = match started_rx.await {
        Ok(Ok(more)) => more,
        Ok(Err(StreamError::Query(e))) => return Err(HttpError::bad_request(e.to_string())),
        Ok(Err(e)) => return Err(HttpError::internal(e)),
        Err(_) => return Err(HttpError::internal("the query task ended early")),
    };
    // poll_recv keeps answering None once the channel is done (gzip polls past the end).
    let mut body_rx = body_rx;
    let body = futures::stream::poll_fn(move |cx| body_rx.poll_recv(cx));
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        axum::body::Body::from_stream(body),
    )
        .into_response();
    if let (Some(cap), true) = (capped_at, more) {
        // PS3.18 8.3.4.4: the origin server may return fewer results than matched, and says so.
        if let Some(w) = warning_header(&format!(
            "The number of results exceeded the maximum supported by the server ({cap}). Additional results can be requested with offset."
        )) {
            response.headers_mut().insert(header::WARNING, w);
        }
    }
    Ok(response)
}

/// Why streaming QIDO results stopped.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("result encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the client went away or stopped reading")]
    Gone,
}

type Chunk = Result<bytes::Bytes, std::io::Error>;

/// Runs the query on the index thread and writes its JSON array to `body` in chunks, one row at
/// a time, so memory stays bounded whatever the result size. `started` gets the query's verdict
/// (and whether more results exist than the cap) before any row is sent.
fn stream_results(
    scope: &QueryScope<'_>,
    search: &Search,
    base: &str,
    started: tokio::sync::oneshot::Sender<Result<bool, StreamError>>,
    body: &tokio::sync::mpsc::Sender<Chunk>,
) -> Result<(), StreamError> {
    let more = match search.capped_at {
        Some(cap) => scope.matches_more_than(&search.query, cap),
        None => Ok(false),
    };
    let more = match more {
        Ok(m) => m,
        Err(e) => {
            let _ = started.send(Err(e.into()));
            return Ok(());
        }
    };
    let mut started = Some((started, more));
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    buf.push(b'[');
    let result = scope.for_each_match(&search.query, |m| {
        if let Some((tx, more)) = started.take() {
            let _ = tx.send(Ok(more));
        } else {
            buf.push(b',');
        }
        let json = result_json(&m, search.query.level, search, base)?;
        serde_json::to_writer(&mut buf, &json)?;
        if buf.len() >= CHUNK {
            send(
                body,
                std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096)),
            )?;
        }
        Ok::<_, StreamError>(())
    });
    match (result, started.take()) {
        // Refused before any row: the handler answers with a status.
        (Err(e), Some((tx, _))) => {
            let _ = tx.send(Err(e));
            Ok(())
        }
        // Failed mid-stream: end the body with an error so the client sees a cut response,
        // never a short but valid-looking array.
        (Err(e), None) => {
            let _ = body.blocking_send(Err(std::io::Error::other(e.to_string())));
            Err(e)
        }
        (Ok(()), unsent) => {
            if let Some((tx, more)) = unsent {
                let _ = tx.send(Ok(more));
            }
            buf.push(b']');
            send(body, buf)
        }
    }
}

/// Hands a chunk to the response body, waiting at most [`SEND_TIMEOUT`] for the client.
fn send(body: &tokio::sync::mpsc::Sender<Chunk>, chunk: Vec<u8>) -> Result<(), StreamError> {
    let handle = tokio::runtime::Handle::current();
    handle
        .block_on(tokio::time::timeout(
            SEND_TIMEOUT,
            body.send(Ok(bytes::Bytes::from(chunk))),
        ))
        .map_err(|_| StreamError::Gone)?
        .map_err(|_| StreamError::Gone)
}

fn result_json(
    m: &QueryMatch,
    level: QueryLevel,
    search: &Search,
    base: &str,
) -> Result<Value, serde_json::Error> {
    let wanted = |tag: &Tag| search.include_all || search.include.contains(tag);
    let indexed = INDEXED_ATTRIBUTES
        .iter()
        .filter(|a| a.level <= level)
        .filter(|a| wanted(&a.tag))
        .filter_map(|a| m.values.get(&a.tag).map(|v| (a.tag, v.as_str())));
    let mut json = crate::dicom::json::attributes_json(indexed)?;
    let Some(obj) = json.as_object_mut() else {
        return Ok(json);
    };
    let uid = |tag| m.values.get(&tag).cloned().unwrap_or_default();
    let url = match level {
        QueryLevel::Patient | QueryLevel::Study => {
            format!("{base}/studies/{}", uid(tags::STUDY_INSTANCE_UID))
        }
        QueryLevel::Series => format!(
            "{base}/studies/{}/series/{}",
            uid(tags::STUDY_INSTANCE_UID),
            uid(tags::SERIES_INSTANCE_UID)
        ),
        QueryLevel::Image => format!(
            "{base}/studies/{}/series/{}/instances/{}",
            uid(tags::STUDY_INSTANCE_UID),
            uid(tags::SERIES_INSTANCE_UID),
            uid(tags::SOP_INSTANCE_UID)
        ),
    };
    // Instance-level fields the index has no column for come from the stored metadata.
    if level == QueryLevel::Image {
        let extra: Vec<&Tag> = search
            .include
            .iter()
            .filter(|t| indexed_attribute(**t).is_none())
            .collect();
        if search.include_all || !extra.is_empty() {
            if let Some(Value::Object(meta)) = m
                .metadata_json
                .as_deref()
                .map(|j| crate::dicom::json::resolve_bulk_data_uris(j, &url))
                .and_then(|j| serde_json::from_str::<Value>(&j).ok())
            {
                for (key, value) in meta {
                    let keep = search.include_all
                        || extra
                            .iter()
                            .any(|t| format!("{:04X}{:04X}", t.group(), t.element()) == key);
                    if keep && !obj.contains_key(&key) {
                        obj.insert(key, value);
                    }
                }
            }
        }
    }
    // Everything tramy holds is on its own disk (PS3.18 10.6.3.3 Instance Availability).
    obj.insert(
        "00080056".into(),
        serde_json::json!({ "vr": "CS", "Value": ["ONLINE"] }),
    );
    obj.insert(
        "00081190".into(),
        serde_json::json!({ "vr": "UR", "Value": [url] }),
    );
    Ok(json)
}
