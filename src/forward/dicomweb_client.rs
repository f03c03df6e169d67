//! tramy as a DICOMweb client of a peer (PS3.18): STOW-RS to send instances (10.5), QIDO-RS to
//! learn which it has (10.6), and, on a tramy peer, its delivery API (manifests and receipts,
//! the presence check by SHA-256). Blocking (ureq, rustls with the Mozilla roots); the sender
//! calls it on a blocking thread. Sent bodies pass through the peer's [`Throttle`].

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::peer::Peer;

/// Most bytes read from any answer of a peer (a STOW-RS response for a few thousand instances
/// is well under this).
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;
/// A stalled connection gives up after this long without progress.
const STALL: Duration = Duration::from_secs(60);

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PeerCallError {
    /// Worth trying again later: the network, a timeout, the peer busy or failing (5xx, 429).
    #[error("{0}")]
    Transient(String),
    /// The peer refused the request as such (4xx): trying again unchanged will not help.
    #[error("{0}")]
    Refused(String),
}

/// A bandwidth limit shared by everything sent to one peer: a token bucket refilled at
/// `bytes_per_sec`, holding at most a quarter second's worth.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: Option<u64>,
    state: Mutex<(Instant, f64)>,
}

impl Throttle {
    /// A limit of `bytes_per_sec` (`None`: none).
    pub fn new(bytes_per_sec: Option<u64>) -> Throttle {
        Throttle {
            bytes_per_sec,
            state: Mutex::new((Instant::now(), 0.0)),
        }
    }

    /// Waits (blocking) until `n` more bytes may go.
    fn take(&self, n: usize) {
        let Some(rate) = self.bytes_per_sec else {
            return;
        };
        let rate = rate as f64;
        let wait = {
            let Ok(mut s) = self.state.lock() else { return };
            let now = Instant::now();
            let burst = (rate / 4.0).max(16_384.0);
            s.1 = (s.1 + now.duration_since(s.0).as_secs_f64() * rate).min(burst) - n as f64;
            s.0 = now;
            if s.1 < 0.0 {
                Duration::from_secs_f64(-s.1 / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A body read through a [`Throttle`], 16 KiB at a time.
struct Throttled<R> {
    inner: R,
    throttle: Arc<Throttle>,
}

impl<R: Read> Read for Throttled<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = buf.len().min(16 * 1024);
        let n = self.inner.read(&mut buf[..len])?;
        self.throttle.take(n);
        Ok(n)
    }
}

/// The chunks of a multipart body as one reader, without copying them.
struct Chunks {
    parts: Vec<Bytes>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(part) = self.parts.get_mut(self.at) {
            if part.is_empty() {
                self.at += 1;
                continue;
            }
            let n = buf.len().min(part.len());
            buf[..n].copy_from_slice(&part.split_to(n));
            return Ok(n);
        }
        Ok(0)
    }
}

/// What a STOW-RS answer says of each instance (PS3.18 10.5.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StowAnswer {
    /// Referenced SOP Sequence: stored.
    pub stored: Vec<String>,
    /// Failed SOP Sequence: SOP Instance UID and Failure Reason.
    pub failed: Vec<(String, u16)>,
}

/// A client of one peer.
#[derive(Clone)]
pub struct PeerClient {
    peer: Peer,
    agent: ureq::Agent,
    throttle: Arc<Throttle>,
    credential: Arc<super::credential::Credential>,
}

impl PeerClient {
    /// A client for `peer`, its sending limited by `throttle`.
    pub fn new(peer: Peer, throttle: Arc<Throttle>) -> PeerClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_per_read(Some(STALL))
            .timeout_per_write(Some(STALL))
            .build()
            .into();
        let credential = Arc::new(match (&peer.token_file, &peer.oidc) {
            (Some(path), _) => super::credential::Credential::TokenFile(path.clone()),
            (None, Some(client)) => {
                super::credential::Credential::Oidc(client.clone(), Default::default())
            }
            (None, None) => super::credential::Credential::None,
        });
        PeerClient {
            peer,
            agent,
            throttle,
            credential,
        }
    }

    pub(crate) fn service_root(&self) -> Result<String, PeerCallError> {
        match &self.peer.endpoint {
            super::PeerEndpoint::DicomWeb { url } => Ok(url.clone()),
            super::PeerEndpoint::Dimse { .. } => Err(PeerCallError::Refused(format!(
                "peer {} is a DIMSE peer",
                self.peer.name
            ))),
        }
    }

    /// The HTTP agent (for the retrieval of priors, `dicomweb_retrieve.rs`).
    pub(crate) fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// The peer.
    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    fn api_base(&self) -> Result<String, PeerCallError> {
        self.peer.api_base().ok_or_else(|| {
            PeerCallError::Refused(format!("peer {} has no HTTP API", self.peer.name))
        })
    }

    /// The `Authorization` header value: the token file's token (read at each call, so a
    /// rotated token is used at once) or an access token from the OpenID Connect provider.
    pub(crate) fn authorization(&self) -> Result<Option<String>, PeerCallError> {
        self.credential.authorization(&self.peer.name, &self.agent)
    }

    pub(crate) fn answer(
        &self,
        what: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), PeerCallError> {
        let mut response = result.map_err(|e| {
            PeerCallError::Transient(format!("{what} to peer {}: {e}", self.peer.name))
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| {
                PeerCallError::Transient(format!(
                    "{what} to peer {}: reading the answer: {e}",
                    self.peer.name
                ))
            })?;
        Ok((status, body))
    }

    pub(crate) fn classify(&self, what: &str, status: u16, body: &str) -> PeerCallError {
        let detail = problem_detail(body);
        let message = format!("{what}: peer {} answered {status}{detail}", self.peer.name);
        if status == 401 {
            self.credential.refused();
        }
        if status == 429 || status >= 500 || status == 401 || status == 408 {
            // 401: a token not yet registered or being rotated at the peer; keep trying.
            PeerCallError::Transient(message)
        } else {
            PeerCallError::Refused(message)
        }
    }

    /// Sends `files` (Part 10) of one study, all of facility `origin`, in one STOW-RS request.
    pub fn stow(
        &self,
        study: &str,
        origin: &str,
        files: Vec<Bytes>,
    ) -> Result<StowAnswer, PeerCallError> {
        let boundary = format!("tramy-{}", hex::encode(rand_bytes()));
        let mut parts = Vec::with_capacity(files.len() * 2 + 1);
        for f in files {
            parts.push(Bytes::from(format!(
                "--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"
            )));
            parts.push(f);
            parts.push(Bytes::from_static(b"\r\n"));
        }
        parts.push(Bytes::from(format!("--{boundary}--\r\n")));
        let length: usize = parts.iter().map(Bytes::len).sum();
        let body = Throttled {
            inner: Chunks { parts, at: 0 },
            throttle: self.throttle.clone(),
        };
        let url = format!("{}/studies/{study}", self.service_root()?);
        let mut request = self
            .agent
            .post(&url)
            .header(
                "Content-Type",
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header("Accept", "application/dicom+json")
            .header("Content-Length", length.to_string())
            // A tramy peer records it as the issuer of Patient IDs that have none.
            .header("X-Tramy-Origin-Facility", origin);
        if let Some(auth) = self.authorization()? {
            request = request.header("Authorization", auth);
        }
        let (status, text) = self.answer(
            "STOW-RS",
            request.send(ureq::SendBody::from_owned_reader(body)),
        )?;
        match status {
            200 | 202 | 409 => Ok(stow_answer(&text)),
            _ => Err(self.classify("STOW-RS", status, &text)),
        }
    }

    /// Which of `instances` (SOP Instance UID, SHA-256) of `study` the peer holds already: on a
    /// tramy peer with the same SHA-256; on another, by SOP Instance UID (QIDO-RS).
    pub fn holds(
        &self,
        study: &str,
        instances: &[(String, String)],
    ) -> Result<Vec<bool>, PeerCallError> {
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        if self.peer.kind == super::PeerKind::Tramy {
            return self.holds_by_sha256(instances);
        }
        let uids: Vec<&str> = instances.iter().map(|(u, _)| u.as_str()).collect();
        let url = format!(
            "{}/studies/{study}/instances?SOPInstanceUID={}&includefield=00080018",
            self.service_root()?,
            // A UID list, comma-separated (PS3.18 8.3.4.1).
            uids.join(",")
        );
        let mut request = self
            .agent
            .get(&url)
            .header("Accept", "application/dicom+json");
        if let Some(auth) = self.authorization()? {
            request = request.header("Authorization", auth);
        }
        let (status, text) = self.answer("QIDO-RS", request.call())?;
        let found: Vec<String> = match status {
            200 => sop_uids(&text),
            204 | 404 => Vec::new(),
            _ => return Err(self.classify("QIDO-RS", status, &text)),
        };
        Ok(uids.iter().map(|u| found.iter().any(|f| f == u)).collect())
    }

    /// Every SOP Instance UID the peer lists in `study` (QIDO-RS, PS3.18 10.6), page by page
    /// until an empty page: no UID list matching, whose separator servers disagree on (comma
    /// or backslash), and a peer that caps a page below `limit` is still read to the end.
    pub fn instances_in_study(&self, study: &str) -> Result<Vec<String>, PeerCallError> {
        const LIMIT: usize = 1000;
        let mut found = Vec::new();
        loop {
            let url = format!(
                "{}/studies/{study}/instances?includefield=00080018&limit={LIMIT}&offset={}",
                self.service_root()?,
                found.len()
            );
            let mut request = self
                .agent
                .get(&url)
                .header("Accept", "application/dicom+json");
            if let Some(auth) = self.authorization()? {
                request = request.header("Authorization", auth);
            }
            let (status, text) = self.answer("QIDO-RS", request.call())?;
            let page = match status {
                200 => sop_uids(&text),
                204 | 404 => Vec::new(),
                _ => return Err(self.classify("QIDO-RS", status, &text)),
            };
            if page.is_empty() {
                return Ok(found);
            }
            found.extend(page);
        }
    }

    fn holds_by_sha256(&self, instances: &[(String, String)]) -> Result<Vec<bool>, PeerCallError> {
        let body = serde_json::json!({
            "instances": instances.iter().map(|(u, s)| serde_json::json!({"sop_instance_uid": u, "sha256": s})).collect::<Vec<_>>()
        });
        let (status, text) = self.post_api(
            "/api/v1/deliveries/check",
            "application/json",
            body.to_string(),
        )?;
        if status != 200 {
            return Err(self.classify("presence check", status, &text));
        }
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            PeerCallError::Transient(format!(
                "presence check: peer {} answered no JSON",
                self.peer.name
            ))
        })?;
        let present = value
            .get("present")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if present.len() != instances.len() {
            return Err(PeerCallError::Transient(format!(
                "presence check: peer {} answered for {} of {} instances",
                self.peer.name,
                present.len(),
                instances.len()
            )));
        }
        Ok(present
            .iter()
            .map(|v| v.as_bool().unwrap_or(false))
            .collect())
    }

    /// Delivers a signed manifest to a tramy peer; its signed receipt back.
    pub fn deliver_manifest(&self, jws: &str) -> Result<String, PeerCallError> {
        let (status, text) =
            self.post_api("/api/v1/deliveries", "application/jose", jws.to_string())?;
        match status {
            200 | 201 => Ok(text),
            _ => Err(self.classify("manifest", status, &text)),
        }
    }

    fn post_api(
        &self,
        path: &str,
        content_type: &str,
        body: String,
    ) -> Result<(u16, String), PeerCallError> {
        let url = format!("{}{path}", self.api_base()?);
        let mut request = self.agent.post(&url).header("Content-Type", content_type);
        if let Some(auth) = self.authorization()? {
            request = request.header("Authorization", auth);
        }
        self.answer(path, request.send(body))
    }

    /// GET on a tramy peer's API (JSON).
    pub fn get_api(&self, path: &str) -> Result<Value, PeerCallError> {
        let url = format!("{}{path}", self.api_base()?);
        let mut request = self.agent.get(&url).header("Accept", "application/json");
        if let Some(auth) = self.authorization()? {
            request = request.header("Authorization", auth);
        }
        let (status, text) = self.answer(path, request.call())?;
        if status != 200 {
            return Err(self.classify(path, status, &text));
        }
        serde_json::from_str(&text).map_err(|_| {
            PeerCallError::Transient(format!("{path}: peer {} answered no JSON", self.peer.name))
        })
    }
}

fn rand_bytes() -> [u8; 12] {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    b
}

/// `: detail` of an RFC 9457 problem body, if it is one.
fn problem_detail(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("detail")
                .and_then(Value::as_str)
                .map(|d| format!(": {}", d.chars().take(300).collect::<String>()))
        })
        .unwrap_or_default()
}

/// Values of a tag in DICOM JSON items.
fn string_value(item: &Value, tag: &str) -> Option<String> {
    item.get(tag)?
        .get("Value")?
        .get(0)?
        .as_str()
        .map(str::to_string)
}

fn sop_uids(text: &str) -> Vec<String> {
    let items: Vec<Value> = serde_json::from_str(text).unwrap_or_default();
    items
        .iter()
        .filter_map(|i| string_value(i, "00080018"))
        .collect()
}

/// Reads a STOW-RS response (PS3.18 10.5.3.1: Referenced SOP Sequence (0008,1199), Failed SOP
/// Sequence (0008,1198) with Failure Reason (0008,1197)).
pub fn stow_answer(text: &str) -> StowAnswer {
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let items = |tag: &str| {
        value
            .get(tag)
            .and_then(|s| s.get("Value"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    StowAnswer {
        stored: items("00081199")
            .iter()
            .filter_map(|i| string_value(i, "00081155"))
            .collect(),
        failed: items("00081198")
            .iter()
            .filter_map(|i| {
                let reason = i
                    .get("00081197")?
                    .get("Value")?
                    .get(0)?
                    .as_u64()
                    .unwrap_or(0x0110) as u16;
                Some((string_value(i, "00081155")?, reason))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stow_response_gives_stored_and_failed_instances() {
        let text = r#"{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3"]}}]},
                       "00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.4"]},"00081197":{"vr":"US","Value":[42752]}}]}}"#;
        let a = stow_answer(text);
        assert_eq!(a.stored, vec!["1.2.3".to_string()]);
        assert_eq!(a.failed, vec![("1.2.4".to_string(), 0xA700)]);
    }

    #[test]
    fn the_throttle_holds_a_rate() {
        let t = Throttle::new(Some(400_000));
        let start = Instant::now();
        for _ in 0..10 {
            t.take(50_000);
        }
        // 500 kB at 400 kB/s with a 100 kB burst: at least one second.
        assert!(
            start.elapsed() >= Duration::from_millis(900),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn chunks_read_back_in_order() {
        let mut c = Chunks {
            parts: vec![
                Bytes::from_static(b"ab"),
                Bytes::new(),
                Bytes::from_static(b"cde"),
            ],
            at: 0,
        };
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, "abcde");
    }
}
