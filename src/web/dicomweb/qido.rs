//! QIDO-RS (PS3.18 10.6): the six search resources, attribute matching by keyword or tag,
//! `fuzzymatching`, `includefield`, `limit` and `offset`, answered from the index alone as
//! `application/dicom+json`.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use serde_json::Value;

use super::base_url;
use crate::store::query::{
    indexed_attribute, AttributeQuery, QueryLevel, QueryMatch, INDEXED_ATTRIBUTES,
};
use crate::web::error::{warning_header, HttpError};
use crate::web::AppState;

/// Most results one request returns when it sets no smaller `limit`.
pub const MAX_RESULTS: u64 = 10_000;

type Params = Query<Vec<(String, String)>>;

/// `GET /dicomweb/studies`
pub async fn studies(
    State(s): State<AppState>,
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    search(s, h, p, QueryLevel::Study, Vec::new()).await
}

/// `GET /dicomweb/studies/{study}/series`
pub async fn study_series(
    State(s): State<AppState>,
    Path(study): Path<String>,
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    search(
        s,
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
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    search(s, h, p, QueryLevel::Series, Vec::new()).await
}

/// `GET /dicomweb/studies/{study}/series/{series}/instances`
pub async fn series_instances(
    State(s): State<AppState>,
    Path((study, series)): Path<(String, String)>,
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    let path = vec![
        (tags::STUDY_INSTANCE_UID, study),
        (tags::SERIES_INSTANCE_UID, series),
    ];
    search(s, h, p, QueryLevel::Image, path).await
}

/// `GET /dicomweb/studies/{study}/instances`
pub async fn study_instances(
    State(s): State<AppState>,
    Path(study): Path<String>,
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    search(
        s,
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
    h: HeaderMap,
    Query(p): Params,
) -> Result<Response, HttpError> {
    search(s, h, p, QueryLevel::Image, Vec::new()).await
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
}

fn parse_params(
    params: Vec<(String, String)>,
    level: QueryLevel,
    path: Vec<(Tag, String)>,
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
    let limit = Some(limit.unwrap_or(MAX_RESULTS).min(MAX_RESULTS));
    Ok(Search {
        query: AttributeQuery {
            level,
            conditions,
            limit,
            offset,
            fuzzy_person_names: fuzzy,
        },
        include,
        include_all,
    })
}

async fn search(
    state: AppState,
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
    let search = parse_params(params, level, path)?;
    let query = search.query.clone();
    let matches = state
        .archive
        .index
        .read(move |conn| Ok(crate::store::query::find(conn, &query)))
        .await
        .map_err(HttpError::internal)?
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let base = base_url(&state, &headers);
    let truncated = matches.len() as u64 == search.query.limit.unwrap_or(u64::MAX)
        && search.query.limit == Some(MAX_RESULTS);
    let body: Vec<Value> = matches
        .iter()
        .map(|m| result_json(m, level, &search, &base))
        .collect::<Result<_, _>>()
        .map_err(HttpError::internal)?;
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        Value::Array(body).to_string(),
    )
        .into_response();
    if truncated {
        if let Some(w) = warning_header(&format!(
            "The number of results exceeded the maximum supported by the server ({MAX_RESULTS}). Additional results can be requested with offset."
        )) {
            response.headers_mut().insert(header::WARNING, w);
        }
    }
    Ok(response)
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
