//! tramy as a DICOMweb client fetching from a peer (PS3.18): QIDO-RS to find a patient's studies
//! and their instances (10.6), WADO-RS to retrieve one instance at a time (10.4), streamed into
//! the staging area (`store::staging`) so an instance costs bounded memory whatever its size.
//! The blocking HTTP client (ureq) runs on a blocking thread and hands its chunks to the async
//! side over a small bounded channel; dropping the receiver stops the download.

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::dicomweb_client::{PeerCallError, PeerClient};
use crate::dicom::ReceivedInstance;
use crate::store::staging::Staging;

/// Bytes read from the peer at a time.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the HTTP thread and the spool.
const IN_FLIGHT: usize = 4;
/// Bytes of a part read while looking for the end of its File Meta group.
/// Bytes of an error answer kept for its reason.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// One instance the peer lists in a study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedInstance {
    /// Series Instance UID.
    pub series: String,
    /// SOP Instance UID.
    pub sop: String,
}

/// The value of `tag` in a DICOM JSON item (PS3.18 F.2).
fn string_value(item: &Value, tag: &str) -> Option<String> {
    item.get(tag)?
        .get("Value")?
        .get(0)?
        .as_str()
        .map(str::to_string)
}

fn json_items(text: &str) -> Vec<Value> {
    serde_json::from_str(text).unwrap_or_default()
}

impl PeerClient {
    /// QIDO-RS `GET {root}{path}?{params}`: the DICOM JSON items, none on 204.
    fn qido(&self, path: &str, params: &[(&str, String)]) -> Result<Vec<Value>, PeerCallError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            query.append_pair(k, v);
        }
        let url = format!("{}{path}?{}", self.service_root()?, query.finish());
        let mut request = self
            .agent()
            .get(&url)
            .header("Accept", "application/dicom+json");
        if let Some(auth) = self.authorization()? {
            request = request.header("Authorization", auth);
        }
        let (status, text) = self.answer("QIDO-RS", request.call())?;
        match status {
            200 => Ok(json_items(&text)),
            204 => Ok(Vec::new()),
            _ => Err(self.classify("QIDO-RS", status, &text)),
        }
    }

    /// Study Instance UIDs of the studies matching `params` (at most `limit`).
    pub fn find_studies(
        &self,
        params: &[(&str, String)],
        limit: usize,
    ) -> Result<Vec<String>, PeerCallError> {
        let mut params = params.to_vec();
        params.push(("includefield", "0020000D".into()));
        params.push(("limit", limit.to_string()));
        let items = self.qido("/studies", &params)?;
        let mut uids: Vec<String> = items
            .iter()
            .filter_map(|i| string_value(i, "0020000D"))
            .collect();
        uids.dedup();
        uids.truncate(limit);
        Ok(uids)
    }

    /// The instances of `study` the peer lists (at most `limit`).
    pub fn study_instances(
        &self,
        study: &str,
        limit: usize,
    ) -> Result<Vec<ListedInstance>, PeerCallError> {
        let params = [
            ("includefield", "0020000E".to_string()),
            ("limit", limit.to_string()),
        ];
        let items = self.qido(&format!("/studies/{study}/instances"), &params)?;
        let mut listed: Vec<ListedInstance> = items
            .iter()
            .filter_map(|i| {
                Some(ListedInstance {
                    series: string_value(i, "0020000E")?,
                    sop: string_value(i, "00080018")?,
                })
            })
            .collect();
        listed.truncate(limit);
        Ok(listed)
    }

    /// WADO-RS of one instance as stored (`transfer-syntax=*`), its data set through `staging`
    /// (refused past `max` bytes). UIDs must have been validated by the caller.
    pub async fn fetch_instance(
        &self,
        staging: &Staging,
        study: &str,
        instance: &ListedInstance,
        max: u64,
    ) -> Result<ReceivedInstance, PeerCallError> {
        let url = format!(
            "{}/studies/{study}/series/{}/instances/{}",
            self.service_root()?,
            instance.series,
            instance.sop
        );
        let mut request = self.agent().get(&url).header(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        );
        if let Some(auth) = self.authorization()? {
            request = request.header("Authorization", auth);
        }
        let (tx, mut rx) = mpsc::channel(IN_FLIGHT);
        tokio::task::spawn_blocking(move || download(request, tx));
        let (status, content_type) = match rx.recv().await {
            Some(Piece::Head {
                status,
                content_type,
            }) => (status, content_type),
            Some(Piece::Failed(e)) => {
                return Err(PeerCallError::Transient(format!(
                    "WADO-RS to peer {}: {e}",
                    self.peer().name
                )))
            }
            _ => return Err(PeerCallError::Transient("WADO-RS: no answer".into())),
        };
        if status != 200 {
            let body = error_text(&mut rx).await;
            return Err(self.classify("WADO-RS", status, &body));
        }
        let boundary = multipart_boundary(&content_type).ok_or_else(|| {
            PeerCallError::Refused(format!(
                "WADO-RS: peer {} answered no multipart/related body",
                self.peer().name
            ))
        })?;
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Some(Piece::Chunk(b)) => Some((Ok::<Bytes, std::io::Error>(b), rx)),
                Some(Piece::Failed(e)) => Some((Err(std::io::Error::other(e)), rx)),
                _ => None,
            }
        });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let field = multipart
            .next_field()
            .await
            .map_err(|e| PeerCallError::Transient(format!("WADO-RS: reading the answer: {e}")))?
            .ok_or_else(|| PeerCallError::Refused("WADO-RS: the answer holds no part".into()))?;
        receive_part10(field, staging, max).await
    }
}

/// The boundary of a `multipart/related` body (PS3.18 8.7.3.3; multer's own parser takes only
/// `multipart/form-data`).
fn multipart_boundary(content_type: &str) -> Option<String> {
    let m: mime::Mime = content_type.parse().ok()?;
    (m.type_() == mime::MULTIPART && m.subtype() == "related")
        .then(|| m.get_param(mime::BOUNDARY).map(|b| b.to_string()))
        .flatten()
}

/// What the HTTP thread hands over.
enum Piece {
    Head { status: u16, content_type: String },
    Chunk(Bytes),
    Failed(String),
}

/// Runs the request and sends its status, then its body chunk by chunk; stops when the
/// receiver is gone.
fn download(request: ureq::RequestBuilder<ureq::typestate::WithoutBody>, tx: mpsc::Sender<Piece>) {
    let response = match request.call() {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.blocking_send(Piece::Failed(e.to_string()));
            return;
        }
    };
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let head = Piece::Head {
        status: response.status().as_u16(),
        content_type,
    };
    if tx.blocking_send(head).is_err() {
        return;
    }
    let mut reader = response.into_body().into_reader();
    loop {
        let mut buf = vec![0u8; CHUNK];
        let piece = match std::io::Read::read(&mut reader, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                Piece::Chunk(Bytes::from(buf))
            }
            Err(e) => Piece::Failed(e.to_string()),
        };
        let failed = matches!(piece, Piece::Failed(_));
        if tx.blocking_send(piece).is_err() || failed {
            return;
        }
    }
}

/// The start of an error answer, for its reason.
async fn error_text(rx: &mut mpsc::Receiver<Piece>) -> String {
    let mut body = Vec::new();
    while let Some(Piece::Chunk(b)) = rx.recv().await {
        body.extend_from_slice(&b[..b.len().min(MAX_ERROR_BYTES - body.len())]);
        if body.len() >= MAX_ERROR_BYTES {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Reads a Part 10 part through the staging area (`store::staging::receive_part10`); more than
/// `max` bytes stops the download and refuses the instance.
async fn receive_part10(
    field: multer::Field<'_>,
    staging: &Staging,
    max: u64,
) -> Result<ReceivedInstance, PeerCallError> {
    use crate::store::staging::Part10ReceiveError as E;
    match crate::store::staging::receive_part10(field, staging, max, true, None).await {
        Ok(instance) => Ok(instance),
        Err(e @ E::Read(_)) => Err(PeerCallError::Transient(format!("WADO-RS: {e}"))),
        Err(E::Staging(e)) => {
            tracing::error!(error = %e, "a retrieved instance cannot be staged");
            Err(PeerCallError::Transient(
                "the instance cannot be staged here".into(),
            ))
        }
        Err(e @ E::TooLarge { .. }) => Err(PeerCallError::Refused(e.to_string())),
        Err(e @ E::NotPart10(_)) => Err(PeerCallError::Refused(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_json_items_give_their_uids_and_junk_gives_none() {
        let text = r#"[{"0020000E":{"vr":"UI","Value":["1.2.3"]},"00080018":{"vr":"UI","Value":["1.2.3.4"]}}]"#;
        let items = json_items(text);
        assert_eq!(
            string_value(&items[0], "00080018").as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(string_value(&items[0], "0020000D"), None);
        assert!(json_items("<html>").is_empty());
    }

    #[test]
    fn the_boundary_comes_from_a_multipart_related_type_only() {
        let ct = r#"multipart/related; type="application/dicom"; boundary="a b""#;
        assert_eq!(multipart_boundary(ct).as_deref(), Some("a b"));
        assert_eq!(multipart_boundary("application/dicom+json"), None);
        assert_eq!(multipart_boundary("multipart/related; type=x"), None);
    }
}
