//! The DICOM listener: accepts TCP connections, negotiates (refusing with a transient reason
//! when the archive cannot take work), and dispatches each message of an association to its
//! service.

use std::net::SocketAddr;
use std::sync::Arc;

use dicom_ul::pdu::AssociationRJServiceProviderPresentationReason;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::association::{accept, AcceptError, Refusal};
use super::channel::{AcceptorTransport, Channel, ChannelError, Incoming, Message};
use super::message::{command_field, response, status};
use crate::config::Config;
use crate::ingest::{Archive, Sender};

/// What the DIMSE services share.
pub struct DimseService {
    /// The archive.
    pub archive: Archive,
    /// Server configuration.
    pub config: Arc<Config>,
}

/// Serves associations on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, service: Arc<DimseService>) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(service.config.dimse.max_associations));
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
        // Nagle plus delayed ACK stalls every request/response exchange by tens of milliseconds.
        let _ = socket.set_nodelay(true);
        let slot = slots.clone().try_acquire_owned().ok();
        let refusal = if let Err(e) = service.archive.check_free_space() {
            Some(Refusal {
                reason: e.to_string(),
                code: AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            })
        } else if slot.is_none() {
            Some(Refusal {
                reason: format!(
                    "{} associations already open (dimse.max_associations)",
                    service.config.dimse.max_associations
                ),
                code: AssociationRJServiceProviderPresentationReason::TemporaryCongestion,
            })
        } else {
            None
        };
        let service = service.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve_association(socket, peer, refusal, &service).await;
        });
    }
}

async fn serve_association(
    socket: TcpStream,
    peer: SocketAddr,
    refusal: Option<Refusal>,
    service: &DimseService,
) {
    let association = match accept(
        socket,
        &service.config.dimse,
        service.config.pdu_timeout(),
        refusal,
    )
    .await
    {
        Ok(a) => a,
        Err(AcceptError::Rejected(reason)) => {
            metrics::counter!("tramy_dimse_associations_total", "result" => "rejected")
                .increment(1);
            tracing::warn!(%peer, %reason, "association rejected");
            return;
        }
        Err(e) => {
            tracing::info!(%peer, error = %e, "association not established");
            return;
        }
    };
    let sender = Sender {
        source: association.calling_ae_title.clone(),
        address: peer.to_string(),
    };
    tracing::debug!(%peer, calling_ae_title = %sender.source, contexts = association.contexts.len(), "association established");
    metrics::counter!("tramy_dimse_associations_total", "result" => "accepted").increment(1);
    let mut channel = Channel::accepted(association).with_staging(service.archive.staging.clone());
    loop {
        let message = match channel.receive().await {
            Ok(Incoming::Message(m)) => m,
            Ok(Incoming::Released) | Ok(Incoming::Aborted) => return,
            Err(e) => {
                tracing::info!(%peer, error = %e, "association ended with an error");
                channel.into_association().abort().await;
                return;
            }
        };
        if let Err(e) = dispatch(&mut channel, service, &sender, message).await {
            tracing::info!(%peer, error = %e, "association aborted");
            channel.into_association().abort().await;
            return;
        }
    }
}

async fn dispatch(
    channel: &mut Channel<AcceptorTransport>,
    service: &DimseService,
    sender: &Sender,
    message: Message,
) -> Result<(), ChannelError> {
    let pc = message.presentation_context_id;
    match message.command.command_field() {
        Some(command_field::C_ECHO_RQ) => {
            let rsp = super::echo::respond(&message)?;
            channel.send(pc, &rsp, None).await
        }
        Some(command_field::C_STORE_RQ) => {
            let context = channel.context(pc).cloned();
            let rsp =
                super::store::handle(&service.archive, context.as_ref(), sender, message).await?;
            channel.send(pc, &rsp, None).await
        }
        Some(command_field::C_FIND_RQ) => super::find::handle(channel, service, message).await,
        Some(command_field::C_GET_RQ) => {
            super::retrieve::handle_get(channel, service, message).await
        }
        Some(command_field::C_MOVE_RQ) => {
            super::retrieve::handle_move(channel, service, sender, message).await
        }
        // A cancel for an operation already finished: nothing to do (PS3.7 9.3.2.3).
        Some(command_field::C_CANCEL_RQ) => Ok(()),
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
            channel.send(pc, &rsp, None).await
        }
    }
}
