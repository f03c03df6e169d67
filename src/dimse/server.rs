//! The DICOM listener: accepts TCP connections, refuses them early when the archive cannot take
//! work (too many associations, disk nearly full), negotiates, and dispatches each message of an
//! association to its service.

use std::net::SocketAddr;
use std::sync::Arc;

use dicom_ul::association::{Association, AsyncServerAssociation};
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::channel::{Channel, ChannelError, Incoming, Message};
use super::message::{command_field, response, status};
use super::negotiation::{acceptor_options, AePolicy, RoleSelection};
use crate::config::Config;
use crate::ingest::{Archive, Sender};

/// What the DIMSE services share.
pub struct DimseService {
    /// The archive.
    pub archive: Archive,
    /// Server configuration.
    pub config: Arc<Config>,
}

type Options = ServerAssociationOptions<'static, AePolicy, RoleSelection>;

/// Serves associations on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, service: Arc<DimseService>) -> std::io::Result<()> {
    let options: Arc<Options> = Arc::new(acceptor_options(
        &service.config.dimse,
        service.config.pdu_timeout(),
    ));
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
        if let Err(e) = service.archive.check_free_space() {
            tracing::warn!(%peer, reason = %e, "association refused: storage nearly full");
            tokio::spawn(refuse(
                socket,
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ));
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = service.config.dimse.max_associations, "association refused: too many concurrent associations");
            tokio::spawn(refuse(
                socket,
                AssociationRJServiceProviderPresentationReason::TemporaryCongestion,
            ));
            continue;
        };
        let options = options.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve_association(socket, peer, &options, &service).await;
        });
    }
}

/// Reads the A-ASSOCIATE-RQ and answers A-ASSOCIATE-RJ (transient, service provider), so the
/// modality knows to retry later rather than seeing a dropped connection.
async fn refuse(mut socket: TcpStream, reason: AssociationRJServiceProviderPresentationReason) {
    let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
    let read = async {
        loop {
            if let Ok(Some(_)) =
                dicom_ul::read_pdu(&mut std::io::Cursor::new(&buf[..]), 1 << 20, false)
            {
                return true;
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            if buf.len() > 1 << 20 {
                return false;
            }
        }
    };
    if !matches!(
        tokio::time::timeout(std::time::Duration::from_secs(10), read).await,
        Ok(true)
    ) {
        return;
    }
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(reason),
    });
    let mut out = Vec::new();
    if dicom_ul::write_pdu(&mut out, &rj).is_ok() {
        let _ = socket.write_all(&out).await;
    }
}

async fn serve_association(
    socket: TcpStream,
    peer: SocketAddr,
    options: &Options,
    service: &DimseService,
) {
    let association: AsyncServerAssociation<TcpStream> = match options.establish_async(socket).await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(%peer, error = %e, "association not established");
            return;
        }
    };
    let sender = Sender {
        source: association.peer_ae_title().trim().to_string(),
        address: peer.to_string(),
    };
    tracing::debug!(%peer, calling_ae_title = %sender.source, "association established");
    let mut channel = Channel::new(association);
    loop {
        let message = match channel.receive().await {
            Ok(Incoming::Message(m)) => m,
            Ok(Incoming::Released) | Ok(Incoming::Aborted) => return,
            Err(e) => {
                tracing::info!(%peer, error = %e, "association ended with an error");
                let _ = channel.into_association().abort().await;
                return;
            }
        };
        if let Err(e) = dispatch(&mut channel, service, &sender, message).await {
            tracing::info!(%peer, error = %e, "association aborted");
            let _ = channel.into_association().abort().await;
            return;
        }
    }
}

async fn dispatch(
    channel: &mut Channel<AsyncServerAssociation<TcpStream>>,
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
