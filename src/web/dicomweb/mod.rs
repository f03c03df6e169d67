//! DICOMweb origin server (PS3.18): STOW-RS ([`stow`]), QIDO-RS ([`qido`]) and WADO-RS ([`wado`])
//! under `/dicomweb`, plus the media-type negotiation they share.

pub mod multipart;
pub mod qido;
pub mod rendered;
pub mod stow;
pub mod wado;

use axum::http::{header, HeaderMap, Method};
use axum::routing::{get, post, MethodRouter};

use super::AppState;

/// The DICOMweb routes (PS3.18 10.4–10.6), one method each, under `/dicomweb`.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::GET, "/studies", get(qido::studies)),
        (Method::POST, "/studies", post(stow::store)),
        (Method::GET, "/studies/{study}", get(wado::study)),
        (Method::POST, "/studies/{study}", post(stow::store_in_study)),
        (
            Method::GET,
            "/studies/{study}/metadata",
            get(wado::study_metadata),
        ),
        (
            Method::GET,
            "/studies/{study}/series",
            get(qido::study_series),
        ),
        (
            Method::GET,
            "/studies/{study}/instances",
            get(qido::study_instances),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}",
            get(wado::series),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/metadata",
            get(wado::series_metadata),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/instances",
            get(qido::series_instances),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/instances/{sop}",
            get(wado::instance),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/instances/{sop}/metadata",
            get(wado::instance_metadata),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
            get(wado::frames),
        ),
        (
            Method::GET,
            "/studies/{study}/rendered",
            get(rendered::study),
        ),
        (
            Method::GET,
            "/studies/{study}/thumbnail",
            get(rendered::study_thumbnail),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/rendered",
            get(rendered::series),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/thumbnail",
            get(rendered::series_thumbnail),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/instances/{sop}/rendered",
            get(rendered::instance),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/instances/{sop}/thumbnail",
            get(rendered::instance_thumbnail),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered",
            get(rendered::frame),
        ),
        (
            Method::GET,
            "/studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag}",
            get(wado::bulkdata),
        ),
        (Method::GET, "/series", get(qido::all_series)),
        (Method::GET, "/instances", get(qido::all_instances)),
    ]
}

/// The instances a request names by UID (validated: a malformed UID is a 400).
pub fn select_instances(
    study: String,
    series: Option<String>,
    sop: Option<String>,
) -> Result<crate::store::query::AttributeQuery, super::error::HttpError> {
    use dicom_dictionary_std::tags;
    let mut conditions = vec![(tags::STUDY_INSTANCE_UID, study)];
    conditions.extend(series.map(|s| (tags::SERIES_INSTANCE_UID, s)));
    conditions.extend(sop.map(|s| (tags::SOP_INSTANCE_UID, s)));
    for (_, uid) in &conditions {
        crate::dicom::SopInstanceUid::new(uid).map_err(|_| {
            super::error::HttpError::bad_request(format!("{uid:?} is not a valid UID"))
        })?;
    }
    Ok(crate::store::query::AttributeQuery {
        level: crate::store::query::QueryLevel::Image,
        conditions,
        limit: None,
        offset: 0,
        fuzzy_person_names: false,
    })
}

/// The stored instances `query` selects; 404 when there are none.
pub async fn stored_instances(
    state: &AppState,
    who: &crate::access::Principal,
    query: crate::store::query::AttributeQuery,
) -> Result<Vec<crate::store::StoredInstance>, super::error::HttpError> {
    use super::error::HttpError;
    let found = state
        .archive
        .index()
        .instances(who, query)
        .await
        .map_err(HttpError::from)?
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    if found.is_empty() {
        return Err(HttpError::not_found("no such study, series or instance"));
    }
    Ok(found)
}

/// One instance, named by its UIDs, and its stored Part 10 file.
pub async fn instance_file(
    state: &AppState,
    who: &crate::access::Principal,
    study: String,
    series: String,
    sop: String,
) -> Result<(crate::store::StoredInstance, bytes::Bytes), super::error::HttpError> {
    let instance = stored_instances(
        state,
        who,
        select_instances(study, Some(series), Some(sop))?,
    )
    .await?
    .remove(0);
    let file = state.archive.read_instance(&instance).await?;
    Ok((instance, file))
}

/// The base URL of the DICOMweb service as clients see it (for RetrieveURL and BulkDataURI):
/// `[http] public_url`; else the scheme and host a reverse proxy names in `Forwarded` (RFC 7239)
/// or `X-Forwarded-Proto` / `X-Forwarded-Host`; else the request's Host header. Forwarded values
/// that are not a plain scheme or host name are ignored, so no header can inject text into URLs.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let configured = state.config.http.public_url.trim_end_matches('/');
    if !configured.is_empty() {
        return format!("{configured}/dicomweb");
    }
    let (proto, forwarded_host) = forwarded(headers);
    let host = forwarded_host
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| valid_host(h))
                .map(str::to_string)
        })
        .unwrap_or_else(|| state.config.http.addr.to_string());
    format!("{}://{host}/dicomweb", proto.unwrap_or("http"))
}

/// The scheme and host the client used, as the nearest proxy's `Forwarded` element says
/// (its first element: RFC 7239 section 4, appended to by each proxy), else `X-Forwarded-*`.
/// Each is `None` when absent or not valid.
fn forwarded(headers: &HeaderMap) -> (Option<&'static str>, Option<String>) {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
    };
    let (proto, host) = match first("forwarded") {
        Some(element) => {
            let pair = |key: &str| {
                element.split(';').find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case(key)
                        .then(|| v.trim().trim_matches('"').to_string())
                })
            };
            (pair("proto"), pair("host"))
        }
        None => (first("x-forwarded-proto"), first("x-forwarded-host")),
    };
    let proto = proto.and_then(|p| match p.to_ascii_lowercase().as_str() {
        "https" => Some("https"),
        "http" => Some("http"),
        _ => None,
    });
    (proto, host.filter(|h| valid_host(h)))
}

/// A host name, IPv4 or bracketed IPv6 address with an optional port: nothing that could end
/// the URL or a header.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

/// One media range of an Accept header, with its parameters.
#[derive(Debug, Clone)]
pub struct MediaRange {
    /// e.g. `application/dicom+json`, `multipart/related`, `*/*`.
    pub essence: String,
    /// Parameters with lower-case names, quotes removed.
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether the Accept header takes DICOM JSON (`application/dicom+json`, plain JSON or a wildcard).
pub fn accepts_dicom_json(headers: &HeaderMap) -> bool {
    accepted(headers).iter().any(|r| {
        matches!(
            r.essence.as_str(),
            "application/dicom+json" | "application/json" | "*/*" | "application/*"
        )
    })
}

/// Parses an Accept header into media ranges (in the order given; quality values are ignored
/// except `q=0`, which removes the range). No header means `*/*`.
pub fn accepted(headers: &HeaderMap) -> Vec<MediaRange> {
    let raw: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if raw.is_empty() {
        return vec![MediaRange {
            essence: "*/*".into(),
            params: Vec::new(),
        }];
    }
    let mut ranges = Vec::new();
    for value in raw {
        for item in split_outside_quotes(value, ',') {
            let mut parts = split_outside_quotes(&item, ';').into_iter();
            let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            if essence.is_empty() {
                continue;
            }
            let params: Vec<(String, String)> = parts
                .filter_map(|p| {
                    let (n, v) = p.split_once('=')?;
                    Some((
                        n.trim().to_ascii_lowercase(),
                        v.trim().trim_matches('"').to_string(),
                    ))
                })
                .collect();
            if params
                .iter()
                .any(|(n, v)| n == "q" && v.parse::<f32>().is_ok_and(|q| q == 0.0))
            {
                continue;
            }
            ranges.push(MediaRange { essence, params });
        }
    }
    ranges
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c == sep && !quoted => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_scheme_and_host_are_taken_from_the_nearest_proxy_and_validated() {
        let f = |pairs: &[(&'static str, &str)]| forwarded(&headers(pairs));
        assert_eq!(
            f(&[(
                "forwarded",
                "for=10.0.0.1;proto=https;host=\"pacs.example.org\", for=10.0.0.2;host=inner"
            )]),
            (Some("https"), Some("pacs.example.org".into()))
        );
        assert_eq!(
            f(&[
                ("x-forwarded-proto", "HTTPS"),
                ("x-forwarded-host", "pacs.example.org:8443, inner")
            ]),
            (Some("https"), Some("pacs.example.org:8443".into()))
        );
        assert_eq!(
            f(&[
                ("x-forwarded-proto", "javascript"),
                ("x-forwarded-host", "evil.org/x?")
            ]),
            (None, None),
            "neither a scheme tramy knows nor a host name"
        );
        assert_eq!(f(&[("x-forwarded-host", "a.org\"><script>")]), (None, None));
        assert_eq!(f(&[]), (None, None));
    }

    #[test]
    fn accept_with_quoted_parameters_is_split_correctly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*, application/json;q=0"
                .parse()
                .unwrap(),
        );
        let ranges = accepted(&h);
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0].essence, "multipart/related");
        assert_eq!(ranges[0].param("type"), Some("application/dicom"));
        assert_eq!(ranges[0].param("transfer-syntax"), Some("*"));
    }
}
