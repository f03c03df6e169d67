//! `multipart/related` response bodies (RFC 2387, PS3.18 8.7.1.2), streamed part by part so a
//! study is never assembled in memory.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;

/// A fresh boundary that cannot occur in DICOM data by accident.
pub fn boundary() -> String {
    format!("tramy-{:032x}", rand_u128())
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u128;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(a);
    (a << 64) | h.finish() as u128
}

/// The bytes that open a part.
pub fn part_header(boundary: &str, content_type: &str, location: Option<&str>) -> Bytes {
    let mut s = format!("--{boundary}\r\nContent-Type: {content_type}\r\n");
    if let Some(loc) = location {
        s.push_str(&format!("Content-Location: {loc}\r\n"));
    }
    s.push_str("\r\n");
    Bytes::from(s)
}

/// The closing delimiter.
pub fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("--{boundary}--\r\n"))
}

/// A 200 response streaming `body` as `multipart/related; type="{part_type}"`.
pub fn response<S>(boundary: &str, part_type: &str, body: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let content_type = format!("multipart/related; type=\"{part_type}\"; boundary={boundary}");
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}
