//! The DICOM listener: accepts TCP connections, negotiates (refusing with a transient reason
//! when the archive cannot take work), and dispatches each message of an association to its
//! service.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use dicom_ul::pdu::AssociationRJServiceProviderPresentationReason;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::association::{answer, receive_request, AcceptError, Refusal, Timers};
use super::audit;
use super::channel::{AcceptorTransport, Channel, ChannelError, Incoming, Message};
use super::message::{command_field, response, status};
use super::stream::DimseStream;
use crate::audit::{AuditAction, AuditOutcome};
use crate::config::Config;
use crate::ingest::{Archive, Sender};

/// What the DIMSE services share.
pub struct DimseService {
    /// The archive.
    pub archive: Archive,
    /// Server configuration.
    pub config: Arc<Config>,
    /// Refuses addresses that presented too many unregistered AE titles (shared with HTTP).
    pub authenticator: crate::auth::authenticator::Authenticator,
}

impl DimseService {
    /// The DIMSE services of `archive` with `config`, with an authenticator of their own (the
    /// server shares one with HTTP; this is for embedding a listener, e.g. in tests).
    pub fn new(
        archive: Archive,
        config: Arc<Config>,
    ) -> Result<DimseService, crate::auth::authenticator::AuthSetupError> {
        let authenticator =
            crate::auth::authenticator::Authenticator::new(archive.index().clone(), &config.auth)?;
        Ok(DimseService {
            archive,
            config,
            authenticator,
        })
    }
}

/// Open connections per peer IP address, for `dimse.max_associations_per_peer`.
#[derive(Default)]
struct PeerCounts(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted in [`PeerCounts`]; dropping it uncounts it.
struct PeerGuard {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl PeerCounts {
    /// Counts a new connection from `ip`; returns its guard and how many are now open from `ip`.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> (PeerGuard, usize) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        *n += 1;
        let open = *n;
        let guard = PeerGuard {
            counts: self.clone(),
            ip,
        };
        (guard, open)
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Most connections still negotiating (no A-ASSOCIATE-RQ yet, or being answered) at once; more
/// are closed as soon as they are accepted. Each holds a descriptor for at most ARTIM, so this
/// bounds what many addresses together can hold without speaking.
const MAX_NEGOTIATING: usize = 1024;

/// Serves associations on `listener` until the task is dropped.
///
/// A connection takes one of `max_associations` slots only once its A-ASSOCIATE-RQ has arrived,
/// which must happen within ARTIM, so sockets that never speak cannot lock modalities out; one
/// peer address holds at most `max_associations_per_peer` connections in any state (the next
/// as many are refused with A-ASSOCIATE-RJ, more are closed unread), and at most
/// [`MAX_NEGOTIATING`] connections from all peers are negotiating at once. With `tls`, every
/// connection must first complete a TLS handshake within ARTIM (PS3.15 B.1).
pub async fn serve(
    listener: TcpListener,
    service: Arc<DimseService>,
    tls: Option<crate::tls::TlsAcceptor>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(service.config.dimse.max_associations));
    let peers = Arc::new(PeerCounts::default());
    let negotiating = Arc::new(Semaphore::new(MAX_NEGOTIATING));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (peer_guard, open_from_peer) = peers.enter(peer.ip());
        // Up to twice its limit, a peer's connections are read and refused with a reason;
        // beyond that the peer is flooding and its connections are closed unread.
        if open_from_peer
            > service
                .config
                .dimse
                .max_associations_per_peer
                .saturating_mul(2)
        {
            metrics::counter!("tramy_dimse_associations_total", "result" => "dropped").increment(1);
            tracing::debug!(%peer, "connection closed: far over dimse.max_associations_per_peer");
            continue;
        }
        let Ok(negotiation) = negotiating.clone().try_acquire_owned() else {
            metrics::counter!("tramy_dimse_associations_total", "result" => "dropped").increment(1);
            tracing::debug!(%peer, "connection closed: {MAX_NEGOTIATING} already negotiating");
            continue;
        };
        // Nagle plus delayed ACK stalls every request/response exchange by tens of milliseconds.
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        let slots = slots.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _peer_guard = peer_guard;
            let artim = service.config.artim();
            let socket = match super::stream::accept(socket, tls.as_ref(), artim).await {
                Ok(socket) => socket,
                Err(e) => {
                    metrics::counter!("tramy_dimse_associations_total", "result" => "tls_failed")
                        .increment(1);
                    tracing::info!(%peer, error = %e, "association not established");
                    return;
                }
            };
            serve_association(socket, peer, open_from_peer, negotiation, &slots, &service).await;
        });
    }
}

/// Why a new association must be refused now, if it must (transient reasons only).
fn refusal(service: &DimseService, has_slot: bool, open_from_peer: usize) -> Option<Refusal> {
    let dimse = &service.config.dimse;
    if let Err(e) = service.archive.check_free_space() {
        Some(Refusal {
            reason: e.to_string(),
            code: AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        })
    } else if open_from_peer > dimse.max_associations_per_peer {
        Some(Refusal {
            reason: format!(
                "{} connections already open from this address (dimse.max_associations_per_peer)",
                open_from_peer - 1
            ),
            code: AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        })
    } else if !has_slot {
        Some(Refusal {
            reason: format!(
                "{} associations already open (dimse.max_associations)",
                dimse.max_associations
            ),
            code: AssociationRJServiceProviderPresentationReason::TemporaryCongestion,
        })
    } else {
        None
    }
}

async fn serve_association(
    socket: DimseStream,
    peer: SocketAddr,
    open_from_peer: usize,
    negotiation: OwnedSemaphorePermit,
    slots: &Arc<Semaphore>,
    service: &DimseService,
) {
    let timers = Timers {
        pdu: service.config.pdu_timeout(),
        artim: service.config.artim(),
    };
    let request = match receive_request(socket, &service.config.dimse, timers).await {
        Ok(r) => r,
        Err(e) => {
            metrics::counter!("tramy_dimse_associations_total", "result" => "no_request")
                .increment(1);
            tracing::info!(%peer, error = %e, "association not established");
            return;
        }
    };
    // Held until the association ends.
    let _slot = slots.clone().try_acquire_owned().ok();
    let refused = refusal(service, _slot.is_some(), open_from_peer);
    let (mut principal, mut unknown_caller) = (None, false);
    let identify = |calling: &str| {
        let found = calling_principal(service, calling, peer);
        unknown_caller = found.is_err();
        principal = Some(found?);
        Ok(())
    };
    let association = match answer(request, &service.config.dimse, refused, identify).await {
        Ok(a) => a,
        Err(AcceptError::Rejected(reason)) => {
            metrics::counter!("tramy_dimse_associations_total", "result" => "rejected")
                .increment(1);
            tracing::warn!(%peer, %reason, "association rejected");
            if unknown_caller {
                let who = crate::access::Principal::anonymous().from_address(peer.ip().to_string());
                let detail = format!("A-ASSOCIATE-RJ: {reason}");
                let event = audit::event(
                    &who,
                    AuditAction::LoginFailure,
                    AuditOutcome::Denied,
                    None,
                    None,
                    detail,
                );
                audit::record(service.archive.index(), event).await;
            }
            return;
        }
        Err(e) => {
            tracing::info!(%peer, error = %e, "association not established");
            return;
        }
    };
    drop(negotiation);
    let sender = Sender {
        principal: principal
            .unwrap_or_else(crate::access::Principal::anonymous)
            .from_address(peer.ip().to_string()),
        source: association.calling_ae_title.clone(),
        address: peer.to_string(),
        origin_facility: None,
    };
    tracing::debug!(%peer, calling_ae_title = %sender.source, contexts = association.contexts.len(), "association established");
    metrics::counter!("tramy_dimse_associations_total", "result" => "accepted").increment(1);
    let mut channel = Channel::accepted(association)
        .with_staging(service.archive.staging.clone(), &sender.source);
    let mut stored = audit::StoredStudies::default();
    let mut reports = Vec::new();
    let ended = serve_messages(
        &mut channel,
        service,
        &sender,
        &mut stored,
        &mut reports,
        peer,
    )
    .await;
    if let Ended::Abort = ended {
        channel.into_association().abort().await;
    }
    // Storage Commitment reports the requestor did not acknowledge go on a new association.
    if !reports.is_empty() {
        super::commitment::deliver_later(
            service.archive.clone(),
            service.config.dimse.ae_title.clone(),
            reports,
            service.config.pdu_timeout(),
        );
    }
    stored
        .record(service.archive.index(), &sender.principal)
        .await;
}

/// How an association's message loop ended.
enum Ended {
    /// Released or aborted by the peer.
    ByPeer,
    /// It must be aborted.
    Abort,
}

/// Serves the association's messages until it ends; C-STOREs are noted in `stored`, Storage
/// Commitment reports sent and not yet acknowledged in `reports`.
async fn serve_messages(
    channel: &mut Channel<AcceptorTransport>,
    service: &DimseService,
    sender: &Sender,
    stored: &mut audit::StoredStudies,
    reports: &mut Vec<super::commitment::Unacknowledged>,
    peer: SocketAddr,
) -> Ended {
    loop {
        let message = match channel.receive().await {
            Ok(Incoming::Message(m)) => m,
            Ok(Incoming::Released) | Ok(Incoming::Aborted) => return Ended::ByPeer,
            Err(e) => {
                tracing::info!(%peer, error = %e, "association ended with an error");
                return Ended::Abort;
            }
        };
        // A report the requestor took; one it refused goes again on a new association.
        if message.command.command_field() == Some(command_field::N_EVENT_REPORT_RSP) {
            let answered = message.command.message_id_being_responded_to();
            if message.command.status() == Some(status::SUCCESS) {
                reports.retain(|r| Some(r.message_id) != answered);
            }
            continue;
        }
        match dispatch(channel, service, sender, message).await {
            Ok(Some(Done::Committing(served))) => {
                audit::record(service.archive.index(), served.event).await;
                reports.extend(served.unacknowledged);
                // A requestor that never acknowledges must not make the list grow without bound.
                if reports.len() > super::commitment::MAX_UNACKNOWLEDGED {
                    let dropped = reports.remove(0);
                    tracing::warn!(%peer, transaction_uid = %dropped.report.transaction_uid,
                        "storage commitment report dropped: too many unacknowledged on this association");
                }
            }
            Ok(Some(Done::Stored { study, status })) => {
                if stored.note(study, status) {
                    stored
                        .record(service.archive.index(), &sender.principal)
                        .await;
                }
            }
            Ok(Some(Done::Other(event))) => audit::record(service.archive.index(), event).await,
            Ok(None) => {}
            Err(e) => {
                tracing::info!(%peer, error = %e, "association aborted");
                return Ended::Abort;
            }
        }
    }
}

/// What an operation did, for the audit trail.
enum Done {
    /// A C-STORE: its study (when it parsed) and status.
    Stored { study: Option<String>, status: u16 },
    /// Another operation's event.
    Other(crate::audit::NewAuditEvent),
    /// A Storage Commitment request: its event and the report sent.
    Committing(super::commitment::Served),
}

/// Who an association calling as `calling` from `peer` acts for: its registered AE title's
/// facility, as that facility's clinical staff would (store, query, retrieve). Refused with the
/// reason when the title is not registered or calls from another host than registered.
fn calling_principal(
    service: &DimseService,
    calling: &str,
    peer: SocketAddr,
) -> Result<crate::access::Principal, String> {
    service
        .authenticator
        .address_allowed(peer.ip())
        .map_err(|e| e.to_string())?;
    let registered = service
        .archive
        .index()
        .application_entity_now(&crate::access::Principal::system(), calling)
        .map_err(|e| format!("the registry cannot be read: {e}"))?;
    let Some(ae) = registered else {
        service.authenticator.failed_at(peer.ip());
        return Err(format!(
            "Calling AE Title {calling:?} is not registered (tramy ae add TITLE --facility CODE)"
        ));
    };
    if let Some(host) = ae.host.as_deref().filter(|h| !host_matches(h, peer)) {
        return Err(format!(
            "Calling AE Title {calling:?} is registered for host {host}, not this one"
        ));
    }
    Ok(crate::access::Principal::authenticated(
        crate::auth::Identity {
            subject: format!("ae:{}", ae.ae_title),
            facility: Some(ae.facility),
            roles: vec![crate::auth::Role::Clinician],
        },
    ))
}

/// Whether `peer` is the registered `host` (an IP address, or a name that resolves to it).
fn host_matches(host: &str, peer: SocketAddr) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == peer.ip(),
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
            .map(|mut addrs| addrs.any(|a| a.ip() == peer.ip()))
            .unwrap_or(false),
    }
}

async fn dispatch(
    channel: &mut Channel<AcceptorTransport>,
    service: &DimseService,
    sender: &Sender,
    message: Message,
) -> Result<Option<Done>, ChannelError> {
    let pc = message.presentation_context_id;
    let field = message.command.command_field();
    let (action, name) = match field {
        Some(command_field::C_FIND_RQ) => (AuditAction::Query, "C-FIND"),
        Some(command_field::C_GET_RQ) => (AuditAction::Retrieve, "C-GET"),
        Some(command_field::C_MOVE_RQ) => (AuditAction::Retrieve, "C-MOVE"),
        _ => (AuditAction::Query, ""),
    };
    let subject = match (channel.context(pc), &message.dataset) {
        (Some(context), Some(identifier)) if !name.is_empty() => {
            audit::identifier_subject(&context.transfer_syntax, identifier)
        }
        _ => (None, None),
    };
    let who = &sender.principal;
    let status = match field {
        Some(command_field::C_ECHO_RQ) => {
            let rsp = super::echo::respond(&message)?;
            channel.send(pc, &rsp, None).await?;
            return Ok(None);
        }
        Some(command_field::C_STORE_RQ) => {
            let context = channel.context(pc).cloned();
            let answer =
                super::store::handle(&service.archive, context.as_ref(), sender, message).await?;
            channel.send(pc, &answer.rsp, None).await?;
            return Ok(Some(Done::Stored {
                study: answer.study_instance_uid,
                status: answer.status,
            }));
        }
        Some(command_field::C_FIND_RQ) => {
            super::find::handle(channel, service, who, message).await?
        }
        Some(command_field::C_GET_RQ) => {
            super::retrieve::handle_get(channel, service, who, message).await?
        }
        Some(command_field::C_MOVE_RQ) => {
            super::retrieve::handle_move(channel, service, sender, message).await?
        }
        Some(command_field::N_ACTION_RQ) => {
            let served = super::commitment::handle_action(
                channel,
                &service.archive,
                &service.config.dimse.ae_title,
                sender,
                message,
            )
            .await?;
            return Ok(Some(Done::Committing(served)));
        }
        Some(command_field::N_EVENT_REPORT_RQ) => {
            let event = super::commitment::handle_event_report(channel, sender, message).await?;
            return Ok(Some(Done::Other(event)));
        }
        // A cancel for an operation already finished: nothing to do (PS3.7 9.3.2.3).
        Some(command_field::C_CANCEL_RQ) => return Ok(None),
        other => {
            let field = other.unwrap_or(0);
            tracing::info!(command_field = field, "unsupported DIMSE command");
            let rsp = response(
                &message.command,
                field | 0x8000,
                status::UNRECOGNIZED_OPERATION,
            )
            .dataset(false)
            .error_comment("operation not supported by this SCP")
            .encode()?;
            channel.send(pc, &rsp, None).await?;
            return Ok(None);
        }
    };
    let (study, patient) = subject;
    let detail = format!("{name} {status:04X}");
    Ok(Some(Done::Other(audit::event(
        who,
        action,
        audit::outcome_of(status),
        study,
        patient,
        detail,
    ))))
}
