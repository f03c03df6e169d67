//! C-GET and C-MOVE as SCP (PS3.4 C.4.2, C.4.3): resolve the identifier to stored instances, send
//! each as a C-STORE sub-operation (back on the same association for C-GET, to the configured
//! destination for C-MOVE), and report progress with pending responses.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;

use super::channel::{Channel, ChannelError, Message, PduTransport};
use super::find::{decode_identifier, encode_dataset, query_from_identifier, IdentifierError};
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

async fn resolve(
    service: &DimseService,
    abstract_syntax: &str,
    transfer_syntax: &str,
    request: &Message,
) -> Result<Vec<StoredInstance>, IdentifierError> {
    let bytes = request.dataset.as_ref().ok_or_else(|| IdentifierError {
        status: status::CANNOT_UNDERSTAND,
        reason: "request without an identifier".into(),
    })?;
    let identifier = decode_identifier(transfer_syntax, bytes)?;
    let query = query_from_identifier(abstract_syntax, &identifier)?;
    service
        .archive
        .index
        .read(move |conn| Ok(crate::store::query::instances(conn, &query)))
        .await
        .map_err(|e| IdentifierError {
            status: status::OUT_OF_RESOURCES_MATCHES,
            reason: e.to_string(),
        })?
        .map_err(|e| IdentifierError {
            status: status::CANNOT_UNDERSTAND,
            reason: e.to_string(),
        })
}

async fn refuse<A>(
    channel: &mut Channel<A>,
    request: &Message,
    rsp_field: u16,
    e: IdentifierError,
) -> Result<(), ChannelError>
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
        .await
}

async fn finish<A>(
    channel: &mut Channel<A>,
    request: &Command,
    pc: u8,
    transfer_syntax: &str,
    rsp_field: u16,
    progress: &Progress,
    cancelled: bool,
) -> Result<(), ChannelError>
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
    channel.send(pc, &rsp, identifier.as_deref()).await
}

/// Serves a C-GET-RQ: sub-operations go back over the same association.
pub async fn handle_get<A>(
    channel: &mut Channel<A>,
    service: &DimseService,
    request: Message,
) -> Result<(), ChannelError>
where
    A: PduTransport,
{
    let pc = request.presentation_context_id;
    let Some(context) = channel.context(pc).cloned() else {
        let e = IdentifierError {
            status: status::SOP_CLASS_NOT_SUPPORTED,
            reason: "presentation context not accepted".into(),
        };
        return refuse(channel, &request, command_field::C_GET_RSP, e).await;
    };
    let instances = match resolve(
        service,
        &context.abstract_syntax,
        &context.transfer_syntax,
        &request,
    )
    .await
    {
        Ok(i) => i,
        Err(e) => return refuse(channel, &request, command_field::C_GET_RSP, e).await,
    };
    let mut progress = Progress {
        remaining: instances.len().min(u16::MAX as usize) as u16,
        ..Progress::default()
    };
    let mut cancelled = false;
    for (n, instance) in instances.iter().enumerate() {
        if cancelled {
            break;
        }
        let message_id = (n as u16).wrapping_add(1);
        let (result, cancel) =
            store_scu::send_instance(channel, &service.archive, instance, message_id, None).await?;
        cancelled |= cancel;
        progress.record(instance, result);
        if progress.remaining > 0 && !cancelled {
            let rsp = progress
                .with_counts(
                    response(&request.command, command_field::C_GET_RSP, status::PENDING),
                    true,
                )
                .dataset(false)
                .encode()?;
            channel.send(pc, &rsp, None).await?;
        }
    }
    finish(
        channel,
        &request.command,
        pc,
        &context.transfer_syntax,
        command_field::C_GET_RSP,
        &progress,
        cancelled,
    )
    .await
}

/// Serves a C-MOVE-RQ: sub-operations go to the Move Destination, looked up in the configuration.
pub async fn handle_move<A>(
    channel: &mut Channel<A>,
    service: &DimseService,
    sender: &Sender,
    request: Message,
) -> Result<(), ChannelError>
where
    A: PduTransport,
{
    let pc = request.presentation_context_id;
    let Some(context) = channel.context(pc).cloned() else {
        let e = IdentifierError {
            status: status::SOP_CLASS_NOT_SUPPORTED,
            reason: "presentation context not accepted".into(),
        };
        return refuse(channel, &request, command_field::C_MOVE_RSP, e).await;
    };
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
        return refuse(channel, &request, command_field::C_MOVE_RSP, e).await;
    };
    let instances = match resolve(
        service,
        &context.abstract_syntax,
        &context.transfer_syntax,
        &request,
    )
    .await
    {
        Ok(i) => i,
        Err(e) => return refuse(channel, &request, command_field::C_MOVE_RSP, e).await,
    };
    let mut progress = Progress {
        remaining: instances.len().min(u16::MAX as usize) as u16,
        ..Progress::default()
    };
    if instances.is_empty() {
        return finish(
            channel,
            &request.command,
            pc,
            &context.transfer_syntax,
            command_field::C_MOVE_RSP,
            &progress,
            false,
        )
        .await;
    }
    let mut destination_channel = match store_scu::connect(
        &address,
        &service.config.dimse.ae_title,
        destination.trim(),
        &instances,
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
            return refuse(channel, &request, command_field::C_MOVE_RSP, e).await;
        }
    };
    let originator = MoveOriginator {
        ae_title: sender.source.clone(),
        message_id: request.command.message_id(),
    };
    for (n, instance) in instances.iter().enumerate() {
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
        progress.record(instance, result);
        if progress.remaining > 0 {
            let rsp = progress
                .with_counts(
                    response(&request.command, command_field::C_MOVE_RSP, status::PENDING),
                    true,
                )
                .dataset(false)
                .encode()?;
            channel.send(pc, &rsp, None).await?;
        }
    }
    let _ = destination_channel.into_association().release().await;
    finish(
        channel,
        &request.command,
        pc,
        &context.transfer_syntax,
        command_field::C_MOVE_RSP,
        &progress,
        false,
    )
    .await
}
