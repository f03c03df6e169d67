//! C-GET and C-MOVE as SCP (PS3.4 C.4.2, C.4.3): resolve the identifier to stored instances, send
//! each as a C-STORE sub-operation (back on the same association for C-GET, to the configured
//! destination for C-MOVE), and report progress with pending responses.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;

use super::channel::{AcceptedContext, Channel, ChannelError, Message, PduTransport};
use super::find::{encode_dataset, query_index, IdentifierError};
use super::message::{command_field, response, status, Command, CommandBuilder};
use super::server::DimseService;
use super::store_scu::{self, MoveOriginator, SubOperation};
use crate::ingest::Sender;
use crate::store::StoredInstance;

#[derive(Debug, Default)]
struct Progress {
    remaining: u16,
    completed: u16,
    failed: u16,
    warning: u16,
    failed_uids: Vec<String>,
}

impl Progress {
    fn record(&mut self, instance: &StoredInstance, result: SubOperation) {
        self.remaining = self.remaining.saturating_sub(1);
        match result {
            SubOperation::Completed => self.completed = self.completed.saturating_add(1),
            SubOperation::Warning => self.warning = self.warning.saturating_add(1),
            SubOperation::Failed => {
                self.failed = self.failed.saturating_add(1);
                self.failed_uids.push(instance.sop_instance_uid.clone());
            }
        }
    }

    fn with_counts(&self, b: CommandBuilder, include_remaining: bool) -> CommandBuilder {
        let b = if include_remaining {
            b.u16(tags::NUMBER_OF_REMAINING_SUBOPERATIONS, self.remaining)
        } else {
            b
        };
        b.u16(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, self.completed)
            .u16(tags::NUMBER_OF_FAILED_SUBOPERATIONS, self.failed)
            .u16(tags::NUMBER_OF_WARNING_SUBOPERATIONS, self.warning)
    }

    /// Final status: success, warning when any sub-operation failed or warned, failure when all failed.
    fn final_status(&self, cancelled: bool) -> u16 {
        if cancelled {
            status::CANCEL
        } else if self.failed > 0 && self.completed == 0 && self.warning == 0 {
            status::OUT_OF_RESOURCES_SUBOPERATIONS
        } else if self.failed > 0 || self.warning > 0 {
            status::WARNING_SUBOPERATIONS
        } else {
            status::SUCCESS
        }
    }
}

async fn refuse<A>(
    channel: &mut Channel<A>,
    request: &Message,
    rsp_field: u16,
    e: IdentifierError,
) -> Result<u16, ChannelError>
where
    A: PduTransport,
{
    tracing::info!(reason = %e.reason, "retrieve refused");
    let rsp = response(&request.command, rsp_field, e.status)
        .dataset(false)
        .error_comment(&e.reason)
        .encode()?;
    channel
        .send(request.presentation_context_id, &rsp, None)
        .await?;
    Ok(e.status)
}

async fn finish<A>(
    channel: &mut Channel<A>,
    request: &Command,
    pc: u8,
    transfer_syntax: &str,
    rsp_field: u16,
    progress: &Progress,
    cancelled: bool,
) -> Result<u16, ChannelError>
where
    A: PduTransport,
{
    let final_status = progress.final_status(cancelled);
    let mut identifier = None;
    if !progress.failed_uids.is_empty() {
        let mut obj = dicom_object::InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::FAILED_SOP_INSTANCE_UID_LIST,
            VR::UI,
            PrimitiveValue::Strs(progress.failed_uids.iter().cloned().collect()),
        ));
        identifier = encode_dataset(&obj, transfer_syntax).ok();
    }
    let rsp = progress
        .with_counts(response(request, rsp_field, final_status), cancelled)
        .dataset(identifier.is_some())
        .encode()?;
    channel.send(pc, &rsp, identifier.as_deref()).await?;
    Ok(final_status)
}

/// A retrieve that can go ahead: the context it arrived on, what to send, and the counts so far.
struct Retrieval {
    context: AcceptedContext,
    instances: Vec<StoredInstance>,
    progress: Progress,
}

/// Resolves the request's identifier to stored instances, or answers the request with the
/// failure and returns its status.
async fn begin<A: PduTransport>(
    channel: &mut Channel<A>,
    service: &DimseService,
    who: &crate::access::Principal,
    request: &Message,
    rsp_field: u16,
) -> Result<Result<Retrieval, u16>, ChannelError> {
    let Some(context) = channel.context(request.presentation_context_id).cloned() else {
        let e = IdentifierError {
            status: status::SOP_CLASS_NOT_SUPPORTED,
            reason: "presentation context not accepted".into(),
        };
        return Ok(Err(refuse(channel, request, rsp_field, e).await?));
    };
    match query_index(
        service,
        who,
        crate::access::Action::Retrieve,
        &context,
        request.dataset.as_ref(),
        |scope, query| scope.instances(query),
    )
    .await
    {
        Ok((_, _, instances)) => Ok(Ok(Retrieval {
            progress: Progress {
                remaining: instances.len().min(u16::MAX as usize) as u16,
                ..Progress::default()
            },
            context,
            instances,
        })),
        Err(e) => Ok(Err(refuse(channel, request, rsp_field, e).await?)),
    }
}

/// Sends a pending response with the counts so far.
async fn pending<A: PduTransport>(
    channel: &mut Channel<A>,
    request: &Message,
    rsp_field: u16,
    progress: &Progress,
) -> Result<(), ChannelError> {
    let rsp = progress
        .with_counts(response(&request.command, rsp_field, status::PENDING), true)
        .dataset(false)
        .encode()?;
    channel
        .send(request.presentation_context_id, &rsp, None)
        .await
}

/// Serves a C-GET-RQ: sub-operations go back over the same association.
pub async fn handle_get<A: PduTransport>(
    channel: &mut Channel<A>,
    service: &DimseService,
    who: &crate::access::Principal,
    request: Message,
) -> Result<u16, ChannelError> {
    const RSP: u16 = command_field::C_GET_RSP;
    let mut retrieval = match begin(channel, service, who, &request, RSP).await? {
        Ok(r) => r,
        Err(status) => return Ok(status),
    };
    let mut cancelled = false;
    for (n, instance) in retrieval.instances.iter().enumerate() {
        let message_id = (n as u16).wrapping_add(1);
        let (result, cancel) =
            store_scu::send_instance(channel, &service.archive, instance, message_id, None).await?;
        cancelled |= cancel;
        retrieval.progress.record(instance, result);
        if cancelled {
            break;
        }
        if retrieval.progress.remaining > 0 {
            pending(channel, &request, RSP, &retrieval.progress).await?;
        }
    }
    finish(
        channel,
        &request.command,
        request.presentation_context_id,
        &retrieval.context.transfer_syntax,
        RSP,
        &retrieval.progress,
        cancelled,
    )
    .await
}

/// Serves a C-MOVE-RQ: sub-operations go to the Move Destination, looked up in the configuration.
pub async fn handle_move<A: PduTransport>(
    channel: &mut Channel<A>,
    service: &DimseService,
    sender: &Sender,
    request: Message,
) -> Result<u16, ChannelError> {
    const RSP: u16 = command_field::C_MOVE_RSP;
    let destination = request.command.move_destination();
    let Some(address) = service
        .config
        .dimse
        .move_destinations
        .get(destination.trim())
        .cloned()
    else {
        let e = IdentifierError {
            status: status::MOVE_DESTINATION_UNKNOWN,
            reason: format!(
                "move destination {destination:?} is not configured (dimse.move_destinations)"
            ),
        };
        return refuse(channel, &request, RSP, e).await;
    };
    let mut retrieval = match begin(channel, service, &sender.principal, &request, RSP).await? {
        Ok(r) => r,
        Err(status) => return Ok(status),
    };
    let pc = request.presentation_context_id;
    let ts = retrieval.context.transfer_syntax.clone();
    if retrieval.instances.is_empty() {
        return finish(
            channel,
            &request.command,
            pc,
            &ts,
            RSP,
            &retrieval.progress,
            false,
        )
        .await;
    }
    let mut destination_channel = match store_scu::connect(
        &address,
        &service.config.dimse.ae_title,
        destination.trim(),
        &retrieval.instances,
        service.config.pdu_timeout(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            let e = IdentifierError {
                status: status::OUT_OF_RESOURCES_SUBOPERATIONS,
                reason: format!("cannot associate with {destination} at {address}: {e}"),
            };
            return refuse(channel, &request, RSP, e).await;
        }
    };
    let originator = MoveOriginator {
        ae_title: sender.source.clone(),
        message_id: request.command.message_id(),
    };
    for (n, instance) in retrieval.instances.iter().enumerate() {
        let message_id = (n as u16).wrapping_add(1);
        let result = match store_scu::send_instance(
            &mut destination_channel,
            &service.archive,
            instance,
            message_id,
            Some(&originator),
        )
        .await
        {
            Ok((r, _)) => r,
            Err(e) => {
                tracing::warn!(error = %e, "C-MOVE destination association failed");
                SubOperation::Failed
            }
        };
        retrieval.progress.record(instance, result);
        if retrieval.progress.remaining > 0 {
            pending(channel, &request, RSP, &retrieval.progress).await?;
        }
    }
    let _ = destination_channel.into_association().release().await;
    finish(
        channel,
        &request.command,
        pc,
        &ts,
        RSP,
        &retrieval.progress,
        false,
    )
    .await
}
