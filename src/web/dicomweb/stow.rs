//! STOW-RS (PS3.18 10.5): `POST /dicomweb/studies[/{study}]` with a `multipart/related;
//! type="application/dicom"` body. Parts are read one at a time from the request stream (the body
//! as a whole is never held in memory), each through the same ingest path as C-STORE. The answer
//! is the Store Instances Response Module (PS3.18 Annex I) in DICOM JSON.

use crate::web::auth::Caller;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::base_url;
use crate::dicom::{Part10Error, ReceivedInstance};
use crate::ingest::{Expected, IngestError, IngestOutcome, Sender};
use crate::store::staging::Staging;
use crate::web::error::{warning_header, HttpError};
use crate::web::AppState;

/// Failure Reason (0008,1197) and Warning Reason (0008,1196) values (PS3.18 I.2, PS3.4 B.2.3).
mod reason {
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    pub const DATASET_MISMATCH: u16 = 0xA900;
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    pub const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;
    pub const DUPLICATE: u16 = 0x0111;
    pub const ELEMENTS_DISCARDED: u16 = 0xB007;
}

/// `POST /dicomweb/studies`.
pub async fn store(
    State(state): State<AppState>,
    Caller(who): Caller,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    store_parts(state, who, peer, headers, None, body).await
}

/// `POST /dicomweb/studies/{study}`: every part must belong to `study`.
pub async fn store_in_study(
    State(state): State<AppState>,
    Caller(who): Caller,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    store_parts(state, who, peer, headers, Some(study), body).await
}

/// The boundary of a `multipart/related; type="application/dicom"` request, or the error to send.
fn request_boundary(headers: &HeaderMap) -> Result<String, HttpError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            HttpError::unsupported_media_type(
                "Content-Type is missing; send multipart/related; type=\"application/dicom\"",
            )
        })?;
    let mime: mime::Mime = raw
        .parse()
        .map_err(|_| HttpError::bad_request(format!("Content-Type {raw:?} does not parse")))?;
    if mime.essence_str() != "multipart/related" {
        return Err(HttpError::unsupported_media_type(format!(
            "Content-Type {} is not supported; send multipart/related; type=\"application/dicom\"",
            mime.essence_str()
        )));
    }
    if let Some(t) = mime.get_param("type") {
        if !t.as_str().eq_ignore_ascii_case("application/dicom") {
            return Err(HttpError::unsupported_media_type(format!(
                "multipart/related type {:?} is not supported; only application/dicom parts are",
                t.as_str()
            )));
        }
    }
    mime.get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_string())
        .ok_or_else(|| {
            HttpError::bad_request("the multipart/related Content-Type has no boundary parameter")
        })
}

struct PartResult {
    sop_class_uid: String,
    sop_instance_uid: String,
    study_instance_uid: String,
    series_instance_uid: String,
    outcome: Result<IngestOutcome, (u16, String)>,
}

impl PartResult {
    /// A part that failed before its UIDs could be read.
    fn failed(code: u16, reason: String) -> Self {
        PartResult {
            sop_class_uid: String::new(),
            sop_instance_uid: String::new(),
            study_instance_uid: String::new(),
            series_instance_uid: String::new(),
            outcome: Err((code, reason)),
        }
    }
}

fn failure_reason(e: &IngestError) -> u16 {
    match e {
        IngestError::Unreadable(Part10Error::UnsupportedTransferSyntax(_)) => {
            reason::TRANSFER_SYNTAX_NOT_SUPPORTED
        }
        IngestError::Unreadable(_) | IngestError::MissingKey(_) => reason::CANNOT_UNDERSTAND,
        IngestError::Mismatch { .. } => reason::DATASET_MISMATCH,
        IngestError::Conflict(_) => reason::DUPLICATE,
        IngestError::DiskFull { .. } => reason::OUT_OF_RESOURCES,
        IngestError::Object(_)
        | IngestError::Index(_)
        | IngestError::Metadata(_)
        | IngestError::Journal(_) => reason::PROCESSING_FAILURE,
    }
}

/// What a part declares about itself before it is stored: its UIDs, read from the meta group and
/// data set when they parse, so a failure can still name the instance.
fn announced_uids(received: &ReceivedInstance) -> (String, String, String, String) {
    match received.parse() {
        Ok(obj) => {
            let t = |tag| crate::dicom::attributes::text(&obj, tag);
            use dicom_dictionary_std::tags;
            (
                t(tags::SOP_CLASS_UID),
                t(tags::SOP_INSTANCE_UID),
                t(tags::STUDY_INSTANCE_UID),
                t(tags::SERIES_INSTANCE_UID),
            )
        }
        Err(_) => Default::default(),
    }
}

async fn store_parts(
    state: AppState,
    who: crate::access::Principal,
    peer: SocketAddr,
    headers: HeaderMap,
    study: Option<String>,
    body: Body,
) -> Result<Response, HttpError> {
    if !who.permits(crate::access::Action::Store) {
        return Err(HttpError::forbidden());
    }
    let boundary = request_boundary(&headers)?;
    if let Some(study) = &study {
        crate::dicom::StudyInstanceUid::new(study)
            .map_err(|e| HttpError::bad_request(e.to_string()))?;
    }
    // Each part's size is bounded by the staging area (ingest.max_instance_mb) as well.
    let limit = state.config.http.max_part_mb.saturating_mul(1024 * 1024);
    let mut multipart = multer::Multipart::new(body.into_data_stream(), boundary);
    let sender = Sender {
        origin_facility: origin_facility(&who, &headers),
        principal: who,
        source: "DICOMWEB".into(),
        address: peer.to_string(),
    };
    let expected = Expected {
        study_instance_uid: study.as_deref(),
        ..Expected::NOTHING
    };

    let mut results = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                // Nothing of this request is half-stored: parts before the damage are complete
                // instances; report the malformed body only if no part could be read at all.
                if results.is_empty() {
                    return Err(HttpError::bad_request(format!(
                        "malformed multipart body: {e}"
                    )));
                }
                results.push(PartResult::failed(
                    reason::CANNOT_UNDERSTAND,
                    format!("malformed multipart body: {e}"),
                ));
                break;
            }
        };
        let part_type = field.content_type().map(|m| m.essence_str().to_string());
        let received = match read_part(field, &state.archive.staging, limit, &sender.source).await {
            Ok(r) => r,
            Err((code, why)) => {
                results.push(PartResult::failed(code, why));
                break;
            }
        };
        if let Some(t) = part_type.filter(|t| t != "application/dicom") {
            results.push(PartResult::failed(
                reason::CANNOT_UNDERSTAND,
                format!("part of type {t} is not application/dicom"),
            ));
            continue;
        }
        let received = match received {
            Part::Instance(r) => r,
            Part::Refused(code, why) => {
                tracing::warn!(source = %sender.address, reason = %why, "STOW-RS part refused");
                results.push(PartResult::failed(code, why));
                continue;
            }
        };
        results.push(store_one(&state, &sender, &expected, received).await);
    }
    if results.is_empty() {
        return Err(HttpError::bad_request("the multipart body holds no parts"));
    }
    let xml = super::accepted(&headers)
        .iter()
        .find(|r| {
            matches!(
                r.essence.as_str(),
                "application/dicom+xml" | "application/dicom+json" | "application/json" | "*/*"
            )
        })
        .is_some_and(|r| r.essence == "application/dicom+xml");
    Ok(respond(&base_url(&state, &headers), &results, xml))
}

/// A part as read: an instance to ingest, or why it cannot be one.
enum Part {
    Instance(ReceivedInstance),
    Refused(u16, String),
}

/// Reads one part through the staging area (`store::staging::receive_part10`); a part past
/// `max` is read to its end and refused, so the next part is read. A large part is uploaded as
/// it arrives, as from `source`.
async fn read_part(
    field: multer::Field<'_>,
    staging: &Staging,
    max: u64,
    source: &str,
) -> Result<Part, (u16, String)> {
    use crate::store::staging::{receive_part10, Part10ReceiveError as E};
    match receive_part10(field, staging, max, false, Some(source)).await {
        Ok(instance) => Ok(Part::Instance(instance)),
        Err(e @ E::NotPart10(_)) => Ok(Part::Refused(reason::CANNOT_UNDERSTAND, e.to_string())),
        Err(e @ E::TooLarge { .. }) => Ok(Part::Refused(reason::OUT_OF_RESOURCES, e.to_string())),
        Err(e @ E::Read(_)) => Err((reason::CANNOT_UNDERSTAND, e.to_string())),
        Err(E::Staging(e)) => {
            tracing::error!(error = %e, "STOW-RS part cannot be staged");
            Err((
                reason::OUT_OF_RESOURCES,
                "the part cannot be staged".to_string(),
            ))
        }
    }
}

async fn store_one(
    state: &AppState,
    sender: &Sender,
    expected: &Expected<'_>,
    received: ReceivedInstance,
) -> PartResult {
    match state
        .archive
        .ingest(received.clone(), sender, expected)
        .await
    {
        Ok(report) => PartResult {
            sop_class_uid: report.attributes.sop_class_uid.to_string(),
            sop_instance_uid: report.attributes.sop_instance_uid.to_string(),
            study_instance_uid: report.attributes.study.study_instance_uid.to_string(),
            series_instance_uid: report.attributes.series.series_instance_uid.to_string(),
            outcome: Ok(report.outcome),
        },
        Err(e) => {
            tracing::warn!(source = %sender.address, error = %e, "STOW-RS part refused");
            let (sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid) =
                tokio::task::spawn_blocking(move || announced_uids(&received))
                    .await
                    .unwrap_or_default();
            PartResult {
                sop_class_uid,
                sop_instance_uid,
                study_instance_uid,
                series_instance_uid,
                outcome: Err((failure_reason(&e), e.to_string())),
            }
        }
    }
}

fn ui(value: &str) -> Value {
    if value.is_empty() {
        json!({ "vr": "UI" })
    } else {
        json!({ "vr": "UI", "Value": [value] })
    }
}

/// Builds the Store Instances Response (PS3.18 I.2) and picks the status: 200 all stored,
/// 202 some failed or warned, 409 none stored.
fn respond(base: &str, results: &[PartResult], xml: bool) -> Response {
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    let mut warnings = Vec::new();
    for r in results {
        let mut item = Map::new();
        item.insert("00081150".into(), ui(&r.sop_class_uid));
        item.insert("00081155".into(), ui(&r.sop_instance_uid));
        match &r.outcome {
            Ok(outcome) => {
                let url = format!(
                    "{base}/studies/{}/series/{}/instances/{}",
                    r.study_instance_uid, r.series_instance_uid, r.sop_instance_uid
                );
                item.insert("00081190".into(), json!({ "vr": "UR", "Value": [url] }));
                if *outcome == IngestOutcome::ConflictKept {
                    item.insert(
                        "00081196".into(),
                        json!({ "vr": "US", "Value": [reason::ELEMENTS_DISCARDED] }),
                    );
                    warnings.push(format!(
                        "{}: another instance with this SOP Instance UID is stored; kept it",
                        r.sop_instance_uid
                    ));
                }
                referenced.push(Value::Object(item));
            }
            Err((code, why)) => {
                item.insert("00081197".into(), json!({ "vr": "US", "Value": [code] }));
                warnings.push(if r.sop_instance_uid.is_empty() {
                    why.clone()
                } else {
                    format!("{}: {why}", r.sop_instance_uid)
                });
                failed.push(Value::Object(item));
            }
        }
    }
    let mut body = Map::new();
    let studies: std::collections::BTreeSet<&str> = results
        .iter()
        .filter(|r| r.outcome.is_ok())
        .map(|r| r.study_instance_uid.as_str())
        .collect();
    if studies.len() == 1 {
        if let Some(study) = studies.iter().next() {
            body.insert(
                "00081190".into(),
                json!({ "vr": "UR", "Value": [format!("{base}/studies/{study}")] }),
            );
        }
    }
    if !failed.is_empty() {
        body.insert("00081198".into(), json!({ "vr": "SQ", "Value": failed }));
    }
    if !referenced.is_empty() {
        body.insert(
            "00081199".into(),
            json!({ "vr": "SQ", "Value": referenced }),
        );
    }
    let status = if referenced.is_empty() {
        StatusCode::CONFLICT
    } else if !failed.is_empty() || !warnings.is_empty() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let body = Value::Object(body);
    let mut response = if xml {
        (
            status,
            [(header::CONTENT_TYPE, "application/dicom+xml")],
            crate::dicom::json::to_native_xml(&body),
        )
            .into_response()
    } else {
        (
            status,
            [(header::CONTENT_TYPE, "application/dicom+json")],
            body.to_string(),
        )
            .into_response()
    };
    for w in warnings.iter().take(20) {
        if let Some(v) = warning_header(w) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

/// The facility a peer tramy says forwarded instances come from (`X-Tramy-Origin-Facility`),
/// believed only from a `node` credential; it stands as the issuer of Patient IDs without one.
fn origin_facility(who: &crate::access::Principal, headers: &HeaderMap) -> Option<String> {
    if !who.roles().contains(&crate::auth::Role::Node) {
        return None;
    }
    let code = headers.get(ORIGIN_FACILITY)?.to_str().ok()?.trim();
    crate::registry::check_facility_code(code).ok()?;
    Some(code.to_string())
}

/// The header a forwarding tramy names the instances' facility in.
pub const ORIGIN_FACILITY: &str = "x-tramy-origin-facility";
