//! Association establishment as acceptor (PS3.8 7.1, 9.3.2–9.3.4) over a raw TCP stream, using
//! dicom-ul's PDU codec. Owning this step lets tramy choose the transfer syntax of each
//! presentation context by its own rule, refuse with a *transient* reason when it is busy or its
//! disk is nearly full, and check AE titles against the configuration.
//!
//! Transfer syntax rule: the requestor's first supported proposal wins ("stored as received"),
//! except that Explicit VR Little Endian is taken over Implicit VR Little Endian or Explicit VR
//! Big Endian when both are proposed, so value representations are kept.

use std::time::Duration;

use bytes::BytesMut;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationAC, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderASCEReason, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ,
    PresentationContextProposed, PresentationContextResult, PresentationContextResultReason,
    RequestorRoles, UserVariableItem,
};
use dicom_ul::Pdu;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::channel::AcceptedContext;
use super::stream::DimseStream;
use crate::config::DimseConfig;
use crate::dicom::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use crate::dicom::{is_storage_sop_class, query_retrieve, EXPLICIT_VR_LE, VERIFICATION_SOP_CLASS};

/// The DICOM application context name (PS3.7 A.2.1).
pub const APPLICATION_CONTEXT_NAME: &str = "1.2.840.10008.3.1.1.1";
const PDU_HEADER: usize = 6;

/// Errors on the wire.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Socket failure.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// No PDU within the timeout.
    #[error("no PDU within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// A PDU that does not decode, or is larger than we accept.
    #[error("malformed PDU: {0}")]
    Malformed(String),
    /// A message arrives slower than [`MIN_MESSAGE_RATE`] allows.
    #[error("a message arrived at under {MIN_MESSAGE_RATE} bytes/s")]
    TooSlow,
}

/// The slowest a DIMSE message may arrive once its first `timeout` has passed, in bytes per
/// second: complete minimal PDUs, each within the PDU deadline, must not hold an association
/// forever. (A 64 kbit/s link carries 8000.)
pub const MIN_MESSAGE_RATE: u64 = 4096;

/// Reads and writes whole PDUs on a connection (TCP, or TLS over it).
pub struct PduStream {
    socket: DimseStream,
    read_buffer: BytesMut,
    write_buffer: Vec<u8>,
    max_pdu_length: u32,
    timeout: Duration,
    /// When the first PDU of the message fragment now arriving came (none between messages).
    message_since: Option<tokio::time::Instant>,
    /// Bytes of the message now arriving.
    message_bytes: u64,
}

impl PduStream {
    /// Wraps a connected socket. `max_pdu_length` bounds what we accept.
    pub fn new(socket: impl Into<DimseStream>, max_pdu_length: u32, timeout: Duration) -> Self {
        PduStream {
            socket: socket.into(),
            read_buffer: BytesMut::with_capacity(64 * 1024),
            write_buffer: Vec::with_capacity(64 * 1024),
            max_pdu_length,
            timeout,
            message_since: None,
            message_bytes: 0,
        }
    }

    /// Reads the next PDU, which must arrive whole within the stream's timeout. The deadline
    /// covers the whole PDU, so a peer trickling bytes cannot hold the association open.
    pub async fn read(&mut self) -> Result<Pdu, WireError> {
        let pdu = self.read_within(self.timeout).await?;
        self.check_message_rate(&pdu)?;
        Ok(pdu)
    }

    /// Fails when the command or data set now arriving has taken longer, since its first PDU,
    /// than `timeout` plus its size at [`MIN_MESSAGE_RATE`]. The wait before a first PDU is
    /// bounded by the PDU deadline instead, so time spent sending (C-GET) never counts.
    fn check_message_rate(&mut self, pdu: &Pdu) -> Result<(), WireError> {
        let Pdu::PData { data } = pdu else {
            return Ok(());
        };
        if data.iter().any(|v| v.is_last) {
            self.message_since = None;
            return Ok(());
        }
        let since = match self.message_since {
            Some(since) => since,
            None => {
                self.message_bytes = 0;
                *self.message_since.insert(tokio::time::Instant::now())
            }
        };
        let bytes: usize = data.iter().map(|v| v.data.len()).sum();
        self.message_bytes += bytes as u64;
        let allowed = self.timeout + Duration::from_secs(self.message_bytes / MIN_MESSAGE_RATE);
        if since.elapsed() > allowed {
            return Err(WireError::TooSlow);
        }
        Ok(())
    }

    /// Reads the next PDU, which must arrive whole within `within` from now.
    async fn read_within(&mut self, within: Duration) -> Result<Pdu, WireError> {
        let deadline = tokio::time::Instant::now() + within;
        // A-ASSOCIATE-RQ may exceed the P-DATA limit (128 contexts), so allow at least 1 MiB.
        let limit = (self.max_pdu_length as usize).max(1 << 20);
        loop {
            if self.read_buffer.len() >= PDU_HEADER {
                let len = u32::from_be_bytes([
                    self.read_buffer[2],
                    self.read_buffer[3],
                    self.read_buffer[4],
                    self.read_buffer[5],
                ]) as usize;
                if len > limit {
                    return Err(WireError::Malformed(format!(
                        "PDU of {len} bytes exceeds the {limit}-byte limit"
                    )));
                }
                if self.read_buffer.len() >= PDU_HEADER + len {
                    let mut frame = self.read_buffer.split_to(PDU_HEADER + len);
                    return match dicom_ul::read_pdu(
                        &mut frame,
                        dicom_ul::pdu::MAXIMUM_PDU_SIZE,
                        false,
                    ) {
                        Ok(Some(pdu)) => Ok(pdu),
                        Ok(None) => Err(WireError::Malformed("incomplete PDU".into())),
                        Err(e) => Err(WireError::Malformed(e.to_string())),
                    };
                }
                self.read_buffer
                    .reserve(PDU_HEADER + len - self.read_buffer.len());
            }
            let n = tokio::time::timeout_at(deadline, self.socket.read_buf(&mut self.read_buffer))
                .await
                .map_err(|_| WireError::Timeout(within))??;
            if n == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// Writes one PDU.
    pub async fn write(&mut self, pdu: &Pdu) -> Result<(), WireError> {
        self.write_buffer.clear();
        dicom_ul::write_pdu(&mut self.write_buffer, pdu)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        // The flush sends what TLS still buffers (a no-op on TCP).
        let socket = &mut self.socket;
        let buffer = &self.write_buffer;
        tokio::time::timeout(self.timeout, async move {
            socket.write_all(buffer).await?;
            socket.flush().await
        })
        .await
        .map_err(|_| WireError::Timeout(self.timeout))??;
        Ok(())
    }

    /// After an A-ASSOCIATE-RJ, waits (at most `artim`) for the requestor to close the
    /// connection, as PS3.8 9.2 state Sta13 prescribes. Closing first instead can race the
    /// requestor reading the RJ: it may see only the closed connection and not learn why.
    pub async fn await_peer_close(mut self, artim: Duration) {
        let _ = self.socket.shutdown().await;
        let mut discard = [0u8; 1024];
        let _ = tokio::time::timeout(artim, async {
            while let Ok(n) = self.socket.read(&mut discard).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Sends A-ABORT (service provider) and closes.
    pub async fn abort(mut self) {
        let _ = self
            .write(&Pdu::AbortRQ {
                source: AbortRQSource::ServiceProvider(
                    AbortRQServiceProviderReason::ReasonNotSpecified,
                ),
            })
            .await;
        let _ = self.socket.shutdown().await;
    }
}

/// Why an association was not established.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Wire failure before or during negotiation.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// We sent A-ASSOCIATE-RJ.
    #[error("association rejected: {0}")]
    Rejected(String),
    /// The first PDU was not an A-ASSOCIATE-RQ.
    #[error("expected A-ASSOCIATE-RQ")]
    Unexpected,
}

/// A transient refusal decided before negotiation (busy, disk nearly full).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Why, for the log.
    pub reason: String,
    /// The presentation-layer reason sent in A-ASSOCIATE-RJ.
    pub code: AssociationRJServiceProviderPresentationReason,
}

/// An established association as acceptor.
pub struct AcceptedAssociation {
    /// The PDU stream.
    pub stream: PduStream,
    /// Calling AE title (the peer).
    pub calling_ae_title: String,
    /// Called AE title (as the peer addressed us).
    pub called_ae_title: String,
    /// Accepted presentation contexts.
    pub contexts: Vec<AcceptedContext>,
    /// The peer's maximum PDU length (0 = unlimited).
    pub peer_max_pdu_length: u32,
}

/// Whether we serve `abstract_syntax` at all.
fn is_supported_abstract_syntax(abstract_syntax: &str) -> bool {
    abstract_syntax == VERIFICATION_SOP_CLASS
        || abstract_syntax == super::commitment::PUSH_MODEL_SOP_CLASS
        || query_retrieve::ALL.contains(&abstract_syntax)
        || is_storage_sop_class(abstract_syntax)
}

/// The transfer syntax we accept from a proposal (see the module documentation), if any.
pub fn choose_transfer_syntax(proposed: &[String]) -> Option<String> {
    let trimmed: Vec<&str> = proposed
        .iter()
        .map(|t| t.trim_end_matches(['\0', ' ']))
        .collect();
    let readable = |ts: &&&str| {
        TransferSyntaxRegistry
            .get(ts)
            .is_some_and(|t| t.can_decode_dataset())
    };
    let first = *trimmed.iter().find(readable)?;
    let native_other = first == crate::dicom::IMPLICIT_VR_LE || first == "1.2.840.10008.1.2.2";
    if native_other && trimmed.contains(&EXPLICIT_VR_LE) {
        return Some(EXPLICIT_VR_LE.to_string());
    }
    Some(first.to_string())
}

fn negotiate_context(
    pc: &PresentationContextProposed,
) -> (PresentationContextResult, Option<AcceptedContext>) {
    let abstract_syntax = pc.abstract_syntax.trim_end_matches(['\0', ' ']).to_string();
    let rejected = |reason| {
        (
            PresentationContextResult {
                id: pc.id,
                reason,
                transfer_syntax: crate::dicom::IMPLICIT_VR_LE.to_string(),
            },
            None,
        )
    };
    if !is_supported_abstract_syntax(&abstract_syntax) {
        return rejected(PresentationContextResultReason::AbstractSyntaxNotSupported);
    }
    match choose_transfer_syntax(&pc.transfer_syntaxes) {
        None => rejected(PresentationContextResultReason::TransferSyntaxesNotSupported),
        Some(ts) => (
            PresentationContextResult {
                id: pc.id,
                reason: PresentationContextResultReason::Acceptance,
                transfer_syntax: ts.clone(),
            },
            Some(AcceptedContext {
                id: pc.id,
                abstract_syntax,
                transfer_syntax: ts,
            }),
        ),
    }
}

/// Sends A-ASSOCIATE-RJ, then lets the requestor close the connection first (at most ARTIM).
/// Sends A-ASSOCIATE-RJ and waits (up to ARTIM) for the requestor to close. A requestor that is
/// already gone is no error: the caller still logs why it was rejected.
async fn reject(
    mut stream: PduStream,
    artim: Duration,
    result: AssociationRJResult,
    source: AssociationRJSource,
) {
    let rj = Pdu::AssociationRJ(AssociationRJ { result, source });
    if let Err(e) = stream.write(&rj).await {
        tracing::debug!(error = %e, "A-ASSOCIATE-RJ not delivered");
        return;
    }
    stream.await_peer_close(artim).await;
}

/// Timers of association establishment.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// Time for the whole next PDU once established.
    pub pdu: Duration,
    /// Time for the A-ASSOCIATE-RQ after the connection opens, and for a rejected requestor to
    /// close (PS3.8 9.1.5 ARTIM).
    pub artim: Duration,
}

/// A received A-ASSOCIATE-RQ, not yet answered.
pub struct Request {
    stream: PduStream,
    rq: AssociationRQ,
    artim: Duration,
}

/// Reads the A-ASSOCIATE-RQ on `socket`; it must arrive whole within ARTIM of the connection
/// opening, so sockets that never speak do not hold resources (PS3.8 9.2, Sta2).
pub async fn receive_request(
    socket: impl Into<DimseStream>,
    config: &DimseConfig,
    timers: Timers,
) -> Result<Request, AcceptError> {
    let mut stream = PduStream::new(socket, config.max_pdu_length, timers.pdu);
    match stream.read_within(timers.artim).await? {
        Pdu::AssociationRQ(rq) => Ok(Request {
            stream,
            rq,
            artim: timers.artim,
        }),
        _ => {
            stream.abort().await;
            Err(AcceptError::Unexpected)
        }
    }
}

/// Answers a received A-ASSOCIATE-RQ: A-ASSOCIATE-RJ for `refusal`, a bad application context
/// or an AE title the configuration does not allow; A-ASSOCIATE-AC otherwise.
pub async fn answer(
    request: Request,
    config: &DimseConfig,
    refusal: Option<Refusal>,
    calling_ae_registered: impl FnOnce(&str) -> Result<(), String>,
) -> Result<AcceptedAssociation, AcceptError> {
    let Request {
        mut stream,
        rq,
        artim,
    } = request;
    if let Some(refusal) = refusal {
        reject(
            stream,
            artim,
            AssociationRJResult::Transient,
            AssociationRJSource::ServiceProviderPresentation(refusal.code),
        )
        .await;
        return Err(AcceptError::Rejected(refusal.reason));
    }
    if rq.protocol_version & 1 == 0 {
        reject(
            stream,
            artim,
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
            ),
        )
        .await;
        return Err(AcceptError::Rejected(
            "protocol version not supported".into(),
        ));
    }
    if rq.application_context_name.trim_end_matches(['\0', ' ']) != APPLICATION_CONTEXT_NAME {
        reject(
            stream,
            artim,
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::ApplicationContextNameNotSupported,
            ),
        )
        .await;
        return Err(AcceptError::Rejected("unknown application context".into()));
    }
    let calling = rq.calling_ae_title.trim().to_string();
    let called = rq.called_ae_title.trim().to_string();
    if config.require_called_ae_title && called != config.ae_title.trim() {
        reject(
            stream,
            artim,
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            ),
        )
        .await;
        return Err(AcceptError::Rejected(format!(
            "Called AE Title {called:?} is not ours"
        )));
    }
    // The allow-list first; then every association acts for a registered AE title's facility
    // (issue #9 item 3). Either refusal is "calling AE title not recognized".
    let on_allow_list = config.allowed_calling_ae_titles.is_empty()
        || config
            .allowed_calling_ae_titles
            .iter()
            .any(|ae| ae.trim() == calling);
    let calling_refused = if on_allow_list {
        calling_ae_registered(&calling)
    } else {
        Err(format!(
            "Calling AE Title {calling:?} is not on the allow-list"
        ))
    };
    if let Err(reason) = calling_refused {
        reject(
            stream,
            artim,
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
            ),
        )
        .await;
        return Err(AcceptError::Rejected(reason));
    }

    let mut peer_max_pdu_length = 16_384;
    let mut user_variables = vec![
        UserVariableItem::MaxLength(config.max_pdu_length),
        UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
        UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_string()),
    ];
    for item in &rq.user_variables {
        match item {
            UserVariableItem::MaxLength(len) => peer_max_pdu_length = *len,
            // C-GET needs the requestor to act as storage SCP (PS3.4 C.4.3.1, PS3.7 D.3.3.4).
            // Storage Commitment: a peer may propose either role, so that the N-EVENT-REPORT can
            // travel on the association it opens or on one it opened to report (PS3.4 J.3.3,
            // J.6); tramy serves both ends.
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, roles) => {
                let commitment =
                    uid.trim_end_matches(['\0', ' ']) == super::commitment::PUSH_MODEL_SOP_CLASS;
                user_variables.push(UserVariableItem::ScuScpRoleSelectionSubItem(
                    uid.clone(),
                    RequestorRoles {
                        scu: roles.scu,
                        scp: roles.scp && (is_storage_sop_class(uid) || commitment),
                    },
                ));
            }
            _ => {}
        }
    }
    let mut results = Vec::with_capacity(rq.presentation_contexts.len());
    let mut contexts = Vec::new();
    for pc in &rq.presentation_contexts {
        let (result, accepted) = negotiate_context(pc);
        results.push(result);
        contexts.extend(accepted);
    }
    stream
        .write(&Pdu::AssociationAC(AssociationAC {
            protocol_version: 1,
            calling_ae_title: rq.calling_ae_title.clone(),
            called_ae_title: rq.called_ae_title.clone(),
            application_context_name: APPLICATION_CONTEXT_NAME.to_string(),
            presentation_contexts: results,
            user_variables,
        }))
        .await?;
    Ok(AcceptedAssociation {
        stream,
        calling_ae_title: calling,
        called_ae_title: called,
        contexts,
        peer_max_pdu_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn explicit_le_is_preferred_over_other_native_syntaxes() {
        assert_eq!(
            choose_transfer_syntax(&ts(&["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])).as_deref(),
            Some(EXPLICIT_VR_LE)
        );
    }

    #[test]
    fn a_compressed_first_choice_is_kept() {
        assert_eq!(
            choose_transfer_syntax(&ts(&["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"]))
                .as_deref(),
            Some("1.2.840.10008.1.2.4.50")
        );
    }

    #[test]
    fn unknown_syntaxes_are_skipped() {
        assert_eq!(
            choose_transfer_syntax(&ts(&["1.2.3.4", "1.2.840.10008.1.2"])).as_deref(),
            Some("1.2.840.10008.1.2")
        );
        assert_eq!(choose_transfer_syntax(&ts(&["1.2.3.4"])), None);
    }
}
