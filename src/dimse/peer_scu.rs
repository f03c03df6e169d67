//! tramy as a DIMSE client of another archive (issue #10, forwarding to a DIMSE peer): C-STORE
//! of stored instances on one association (PS3.4 B.2, through `store_scu`), and Storage
//! Commitment as SCU (PS3.4 J.3), whose report may come back on the same association or, as
//! Orthanc does, on a new one to tramy's listener (routed here by Transaction UID,
//! `commitment::expect`).
//!
//! Every failure to reach the peer is a [`PeerError`] that says what to check; nothing waits
//! longer than the timeouts given.

use std::time::Duration;

use dicom_ul::association::AsyncClientAssociation;
use tokio::net::TcpStream;

use super::channel::{Channel, ChannelError, Incoming, PduTransport};
use super::commitment::{self, Report, PUSH_MODEL_SOP_CLASS, PUSH_MODEL_SOP_INSTANCE};
use super::message::{command_field, n_action_rq, n_event_report_rsp, status};
use super::store_scu::{self, Sent};
use crate::access::Principal;
use crate::dicom::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::ingest::Archive;
use crate::store::StoredInstance;

/// Time to connect and negotiate, and for each answer of the peer (a C-STORE-RSP, the
/// N-ACTION-RSP).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// A DIMSE peer: where it listens and who tramy calls as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimsePeer {
    /// The peer's AE title (the called AE title).
    pub ae_title: String,
    /// Its host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The AE title tramy calls with (registered at the peer).
    pub calling_ae_title: String,
}

impl DimsePeer {
    /// The peer written `AE@host:port` (a `[[peers]]` entry's `dimse`; an IPv6 host in
    /// brackets), called with `calling_ae_title`. The error says what is wrong.
    pub fn parse(spec: &str, calling_ae_title: &str) -> Result<DimsePeer, String> {
        let form = || format!("DIMSE peer {spec:?} is not AE@host:port");
        let (ae, address) = spec.split_once('@').ok_or_else(form)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(form)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("DIMSE peer {spec:?}: port must be 1-65535"))?;
        let ae_title = crate::registry::normalise_ae_title(ae).map_err(|e| e.to_string())?;
        let calling =
            crate::registry::normalise_ae_title(calling_ae_title).map_err(|e| e.to_string())?;
        crate::registry::check_host(host).map_err(|e| e.to_string())?;
        Ok(DimsePeer {
            ae_title,
            host: host.to_string(),
            port,
            calling_ae_title: calling,
        })
    }

    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn named(&self) -> String {
        format!("{}@{}", self.ae_title, self.address())
    }
}

/// What became of one instance sent to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The peer stored it (C-STORE-RSP 0000H).
    Stored,
    /// The peer stored it with a warning (Bxxx, e.g. B007H: coerced or a duplicate).
    Warning(u16),
    /// The peer refused it with this status (PS3.4 B.2.3: A7xx out of resources, A9xx data set
    /// does not match SOP class, Cxxx cannot understand); retrying is unlikely to help unless
    /// the status is A7xx.
    Refused(u16),
    /// Not sent: tramy could not offer it (the peer accepted no presentation context for its
    /// SOP class and transfer syntax, or the object is not visible to the caller, missing or
    /// damaged here: see the reason).
    NotSent(String),
}

/// A peer's Storage Commitment answer (PS3.4 J.3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentResult {
    /// The Transaction UID tramy sent.
    pub transaction_uid: String,
    /// SOP Instance UIDs the peer committed to keep.
    pub committed: Vec<String>,
    /// SOP Instance UIDs it did not commit, with its Failure Reason (0110H processing failure,
    /// 0112H no such object instance, 0119H class/instance conflict, ...).
    pub failed: Vec<(String, u16)>,
}

impl From<Report> for CommitmentResult {
    fn from(r: Report) -> Self {
        CommitmentResult {
            transaction_uid: r.transaction_uid,
            committed: r.committed.into_iter().map(|(_, i)| i).collect(),
            failed: r.failed.into_iter().map(|((_, i), why)| (i, why)).collect(),
        }
    }
}

/// Why talking to a peer failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No TCP connection (refused, unreachable, name unknown).
    #[error("cannot connect to DIMSE peer {peer}: {reason}; check that it runs and that host and port are right")]
    Unreachable {
        /// The peer, AE@host:port.
        peer: String,
        /// The cause.
        reason: String,
    },
    /// The peer answered A-ASSOCIATE-RJ.
    #[error("DIMSE peer {peer} rejected the association ({reason}); register AE title {calling} at the peer and check its called AE title")]
    Rejected {
        /// The peer.
        peer: String,
        /// The calling AE title tramy used.
        calling: String,
        /// The rejection's source and reason.
        reason: String,
    },
    /// The peer accepted none of the presentation contexts tramy needs.
    #[error(
        "DIMSE peer {peer} accepted no presentation context for {what}; it may not support it"
    )]
    NotSupported {
        /// The peer.
        peer: String,
        /// What was proposed.
        what: String,
    },
    /// The peer did not answer in time.
    #[error("DIMSE peer {peer} did not answer within {after:?} ({during}); it may be overloaded or the link down: retry later")]
    Timeout {
        /// The peer.
        peer: String,
        /// How long tramy waited.
        after: Duration,
        /// What tramy waited for.
        during: &'static str,
    },
    /// The association broke or the peer broke the protocol.
    #[error("DIMSE peer {peer}: {reason}; retry later")]
    Association {
        /// The peer.
        peer: String,
        /// What happened.
        reason: String,
    },
    /// The peer refused the Storage Commitment request (N-ACTION-RSP failure status).
    #[error("DIMSE peer {peer} refused the Storage Commitment request with status {status:04X}{comment}")]
    CommitmentRefused {
        /// The peer.
        peer: String,
        /// The N-ACTION-RSP status.
        status: u16,
        /// Its Error Comment, if any (with a leading ": ").
        comment: String,
    },
    /// Too many commitment transactions wait in this process, or this one already does.
    #[error("{0}")]
    Busy(String),
    /// The index could not be read.
    #[error("the index cannot be read: {0}")]
    Index(#[from] crate::store::IndexError),
}

impl PeerError {
    fn from_channel(peer: &DimsePeer, e: ChannelError, waited: Duration) -> PeerError {
        use dicom_ul::association::Error as Ul;
        let named = peer.named();
        match e {
            ChannelError::Ul(Ul::Connect { source, .. })
            | ChannelError::Ul(Ul::ToAddress { source, .. }) => PeerError::Unreachable {
                peer: named,
                reason: source.to_string(),
            },
            ChannelError::Ul(Ul::Rejected { association_rj, .. }) => PeerError::Rejected {
                peer: named,
                calling: peer.calling_ae_title.clone(),
                reason: format!("{:?}", association_rj.source),
            },
            ChannelError::Ul(Ul::NoAcceptedPresentationContexts { .. }) => {
                PeerError::NotSupported {
                    peer: named,
                    what: "the instances' SOP classes".into(),
                }
            }
            ChannelError::Ul(Ul::Timeout { .. }) => PeerError::Timeout {
                peer: named,
                after: waited,
                during: "an answer",
            },
            other => PeerError::Association {
                peer: named,
                reason: other.to_string(),
            },
        }
    }
}

/// Runs `work` for at most `limit`, a timeout reading as [`PeerError::Timeout`].
async fn bounded<T>(
    peer: &DimsePeer,
    limit: Duration,
    during: &'static str,
    work: impl std::future::Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(PeerError::Timeout {
            peer: peer.named(),
            after: limit,
            during,
        })
    })
}

/// Sends each of `instances` that `who` may retrieve, read through `Archive::read_instance`, on
/// one association to `peer`; per instance (by SOP Instance UID, in order) what became of it.
/// An association that breaks midway fails the call: what was answered before is stored there,
/// and re-sending it is a duplicate the peer recognises.
pub async fn store_instances(
    archive: &Archive,
    who: &Principal,
    peer: &DimsePeer,
    instances: &[StoredInstance],
) -> Result<Vec<(String, SendOutcome)>, PeerError> {
    store_instances_with(archive, who, peer, instances, PEER_TIMEOUT).await
}

/// [`store_instances`] with `answer_timeout` instead of [`PEER_TIMEOUT`].
pub async fn store_instances_with(
    archive: &Archive,
    who: &Principal,
    peer: &DimsePeer,
    instances: &[StoredInstance],
    answer_timeout: Duration,
) -> Result<Vec<(String, SendOutcome)>, PeerError> {
    let uids = instances
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    // The caller's instances are looked up again through the checkpoint (invariant 17).
    let visible = archive.index().visible_instances(who, uids).await?;
    let sendable: Vec<StoredInstance> = visible.iter().flatten().cloned().collect();
    if sendable.is_empty() {
        return Ok(instances
            .iter()
            .map(|i| (i.sop_instance_uid.clone(), not_visible()))
            .collect());
    }
    let connect = async {
        store_scu::connect(
            &peer.address(),
            &peer.calling_ae_title,
            &peer.ae_title,
            &sendable,
            answer_timeout,
        )
        .await
        .map_err(|e| PeerError::from_channel(peer, e, answer_timeout))
    };
    let mut channel = bounded(peer, answer_timeout, "association negotiation", connect).await?;
    let mut outcomes = Vec::with_capacity(instances.len());
    for (n, (asked, found)) in instances.iter().zip(visible).enumerate() {
        let Some(instance) = found else {
            outcomes.push((asked.sop_instance_uid.clone(), not_visible()));
            continue;
        };
        let message_id = (n as u16).wrapping_add(1).max(1);
        let send = async {
            store_scu::send_instance_answer(&mut channel, archive, &instance, message_id, None)
                .await
                .map_err(|e| PeerError::from_channel(peer, e, answer_timeout))
        };
        // The whole instance must go and be answered at no less than 64 kB/s after the first
        // answer_timeout: a stalled link fails, a slow one does not.
        let limit =
            answer_timeout + Duration::from_secs(instance.size_bytes.max(0) as u64 / 65_536);
        let (sent, _) = bounded(peer, limit, "a C-STORE-RSP", send).await?;
        outcomes.push((instance.sop_instance_uid.clone(), outcome(sent)));
    }
    release(channel).await;
    Ok(outcomes)
}

fn not_visible() -> SendOutcome {
    SendOutcome::NotSent("no such instance for this caller".into())
}

fn outcome(sent: Sent) -> SendOutcome {
    match sent {
        Sent::Answered(status::SUCCESS) => SendOutcome::Stored,
        Sent::Answered(code @ 0xB000..=0xBFFF) => SendOutcome::Warning(code),
        Sent::Answered(code) => SendOutcome::Refused(code),
        Sent::NoContext => SendOutcome::NotSent(
            "the peer accepted no presentation context for its SOP class and transfer syntax"
                .into(),
        ),
        Sent::Unreadable(why) => SendOutcome::NotSent(why),
    }
}

/// Releases an association, giving up after a few seconds (the work is done either way).
async fn release(channel: Channel<AsyncClientAssociation<TcpStream>>) {
    let association = channel.into_association();
    let _ = tokio::time::timeout(Duration::from_secs(5), association.release()).await;
}

/// Asks `peer` to commit to keeping `refs` (SOP Class UID, SOP Instance UID) and waits up to
/// `wait` for its report: on the same association, or on a new one to tramy's listener (whose
/// calling AE title must be the peer's and registered here, and tramy's AE title must be known
/// to the peer with this server's host and DIMSE port). At most
/// [`commitment::MAX_REFERENCES`] references per request.
pub async fn request_commitment(
    peer: &DimsePeer,
    refs: &[(String, String)],
    wait: Duration,
) -> Result<CommitmentResult, PeerError> {
    request_commitment_with(peer, refs, wait, PEER_TIMEOUT).await
}

/// [`request_commitment`] with `answer_timeout` for negotiation and the N-ACTION-RSP instead of
/// [`PEER_TIMEOUT`].
pub async fn request_commitment_with(
    peer: &DimsePeer,
    refs: &[(String, String)],
    wait: Duration,
    answer_timeout: Duration,
) -> Result<CommitmentResult, PeerError> {
    if refs.is_empty() || refs.len() > commitment::MAX_REFERENCES {
        return Err(PeerError::Busy(format!(
            "a Storage Commitment request carries 1 to {} references, not {}",
            commitment::MAX_REFERENCES,
            refs.len()
        )));
    }
    let transaction_uid = new_transaction_uid();
    // Registered before asking: a report on a new association may come before the N-ACTION-RSP.
    let mut expected = commitment::expect(&transaction_uid, &peer.ae_title).ok_or_else(|| {
        PeerError::Busy("too many Storage Commitment requests wait for reports; retry later".into())
    })?;
    let connect = async {
        dicom_ul::ClientAssociationOptions::new()
            .calling_ae_title(peer.calling_ae_title.clone())
            .called_ae_title(peer.ae_title.clone())
            .with_presentation_context(PUSH_MODEL_SOP_CLASS, vec![EXPLICIT_VR_LE, IMPLICIT_VR_LE])
            .read_timeout(answer_timeout.max(wait))
            .write_timeout(answer_timeout)
            .connection_timeout(answer_timeout)
            .establish_async(peer.address().as_str())
            .await
            .map_err(|e| PeerError::from_channel(peer, e.into(), answer_timeout))
    };
    let mut association = bounded(peer, answer_timeout, "association negotiation", connect).await?;
    let _ = association.inner_stream().set_nodelay(true);
    let mut channel = Channel::requested(association);
    let Some(pc) = channel
        .contexts()
        .iter()
        .find(|c| c.abstract_syntax == PUSH_MODEL_SOP_CLASS)
        .map(|c| c.id)
    else {
        release(channel).await;
        return Err(PeerError::NotSupported {
            peer: peer.named(),
            what: "Storage Commitment Push Model".into(),
        });
    };
    let ask = ask(
        &mut channel,
        pc,
        peer,
        &transaction_uid,
        refs,
        answer_timeout,
    );
    if let Err(e) = bounded(peer, answer_timeout, "the N-ACTION-RSP", ask).await {
        release(channel).await;
        return Err(e);
    }
    let report = await_report(&mut channel, &mut expected, peer, &transaction_uid, wait).await;
    release(channel).await;
    report.map(CommitmentResult::from)
}

/// A fresh Transaction UID under the UUID-derived root (PS3.5 B.2): 122 random bits, as a
/// version 4 UUID has. Without an entropy source, time and a counter stand in (unique here).
fn new_transaction_uid() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&now.to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
    }
    bytes[0] &= 0x7f;
    format!("2.25.{}", u128::from_be_bytes(bytes))
}

/// Sends the N-ACTION-RQ and reads its N-ACTION-RSP.
async fn ask<A: PduTransport>(
    channel: &mut Channel<A>,
    pc: u8,
    peer: &DimsePeer,
    transaction_uid: &str,
    refs: &[(String, String)],
    answer_timeout: Duration,
) -> Result<(), PeerError> {
    let ts = channel
        .context(pc)
        .map(|c| c.transfer_syntax.clone())
        .unwrap_or_else(|| IMPLICIT_VR_LE.to_string());
    let info = commitment::action_information(transaction_uid, refs);
    let dataset = super::find::encode_dataset(&info, &ts).map_err(|e| PeerError::Association {
        peer: peer.named(),
        reason: e.reason,
    })?;
    let rq = n_action_rq(
        1,
        PUSH_MODEL_SOP_CLASS,
        PUSH_MODEL_SOP_INSTANCE,
        commitment::ACTION_REQUEST,
    )
    .encode()
    .map_err(|e| PeerError::from_channel(peer, e.into(), answer_timeout))?;
    let exchange = async {
        channel.send(pc, &rq, Some(&dataset)).await?;
        commitment::await_response(channel, command_field::N_ACTION_RSP).await
    };
    let rsp = exchange
        .await
        .map_err(|e| PeerError::from_channel(peer, e, answer_timeout))?;
    match rsp.status() {
        Some(status::SUCCESS) => Ok(()),
        code => Err(PeerError::CommitmentRefused {
            peer: peer.named(),
            status: code.unwrap_or(status::PROCESSING_FAILURE),
            comment: {
                let c = crate::dicom::attributes::text(
                    &rsp.elements,
                    dicom_dictionary_std::tags::ERROR_COMMENT,
                );
                if c.is_empty() {
                    c
                } else {
                    format!(": {c}")
                }
            },
        }),
    }
}

/// Waits up to `wait` for the report of `transaction_uid`: on `channel` (answered there) or
/// handed over by the listener; the association ending first leaves the listener.
async fn await_report<A: PduTransport>(
    channel: &mut Channel<A>,
    expected: &mut commitment::Expected,
    peer: &DimsePeer,
    transaction_uid: &str,
    wait: Duration,
) -> Result<Report, PeerError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut association_open = true;
    loop {
        tokio::select! {
            report = &mut expected.report => {
                return report.map_err(|_| PeerError::Association {
                    peer: peer.named(),
                    reason: "the report's hand-over was dropped".into(),
                });
            }
            incoming = channel.receive(), if association_open => {
                match incoming {
                    Ok(Incoming::Message(m)) if m.command.command_field() == Some(command_field::N_EVENT_REPORT_RQ) => {
                        if let Some(report) = answer_report(channel, m, transaction_uid).await {
                            return Ok(report);
                        }
                    }
                    Ok(Incoming::Message(m)) => {
                        tracing::info!(command_field = ?m.command.command_field(), "unexpected message while awaiting a Storage Commitment report");
                    }
                    Ok(_) | Err(_) => association_open = false,
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(PeerError::Timeout {
                    peer: peer.named(),
                    after: wait,
                    during: "the Storage Commitment report (N-EVENT-REPORT); ask again later",
                });
            }
        }
    }
}

/// Answers an N-EVENT-REPORT-RQ received on our association; its report when it is the one
/// awaited.
async fn answer_report<A: PduTransport>(
    channel: &mut Channel<A>,
    m: super::channel::Message,
    transaction_uid: &str,
) -> Option<Report> {
    let pc = m.presentation_context_id;
    let report = match (channel.context(pc), m.dataset.as_ref()) {
        (Some(c), Some(bytes)) => commitment::decode_report(&c.transfer_syntax.clone(), bytes),
        _ => Err("no event information".into()),
    };
    let (code, found) = match report {
        Ok(r) if r.transaction_uid == transaction_uid => (status::SUCCESS, Some(r)),
        Ok(_) => (status::PROCESSING_FAILURE, None),
        Err(e) => {
            tracing::info!(error = %e, "undecodable Storage Commitment report");
            (status::PROCESSING_FAILURE, None)
        }
    };
    if let Ok(rsp) = n_event_report_rsp(&m.command, code).encode() {
        let _ = channel.send(pc, &rsp, None).await;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_written_ae_at_host_colon_port() {
        let p = DimsePeer::parse("HOSPITAL@10.0.0.5:104", "TRAMY").unwrap();
        assert_eq!(
            (p.ae_title.as_str(), p.host.as_str(), p.port),
            ("HOSPITAL", "10.0.0.5", 104)
        );
        assert_eq!(p.address(), "10.0.0.5:104");
        let v6 = DimsePeer::parse("HUB@[::1]:11112", "TRAMY").unwrap();
        assert_eq!(v6.address(), "[::1]:11112");
        for bad in [
            "HOSPITAL",
            "HOSPITAL@host",
            "HOSPITAL@host:0",
            "@host:104",
            "A_TITLE_LONGER_THAN_16@h:1",
        ] {
            assert!(DimsePeer::parse(bad, "TRAMY").is_err(), "{bad}");
        }
    }

    #[test]
    fn transaction_uids_are_fresh_and_valid() {
        let (a, b) = (new_transaction_uid(), new_transaction_uid());
        assert_ne!(a, b);
        assert!(
            a.len() <= 64 && a.starts_with("2.25.") && !a[5..].starts_with('0'),
            "{a}"
        );
    }
}
