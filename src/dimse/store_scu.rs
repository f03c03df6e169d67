//! C-STORE as SCU (PS3.4 B.2, PS3.7 9.1.1), for delivering C-GET and C-MOVE sub-operations:
//! chooses a presentation context for each instance, sends it, and reads the status back.

use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_ul::association::AsyncClientAssociation;
use dicom_ul::ClientAssociationOptions;
use tokio::net::TcpStream;

use super::channel::{AcceptedContext, Channel, ChannelError, Incoming, PduTransport};
use super::message::{command_field, status, CommandBuilder};
use crate::dicom::transcode::{is_native, transcode_native};
use crate::dicom::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::ingest::Archive;
use crate::store::StoredInstance;

/// The result of one sub-operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubOperation {
    /// The receiver answered success.
    Completed,
    /// The receiver answered a warning status.
    Warning,
    /// The receiver answered a failure, or the instance could not be sent.
    Failed,
}

/// Who asked for a C-MOVE, for the Move Originator attributes.
#[derive(Debug, Clone)]
pub struct MoveOriginator {
    /// Move Originator Application Entity Title.
    pub ae_title: String,
    /// Move Originator Message ID.
    pub message_id: u16,
}

/// Picks the context to send `instance` on: one with its SOP class and stored transfer syntax,
/// or, for a native stored syntax, one with another native syntax to re-encode to.
pub fn choose_context<'a>(
    contexts: &'a [AcceptedContext],
    instance: &StoredInstance,
) -> Option<&'a AcceptedContext> {
    let same_class = || {
        contexts
            .iter()
            .filter(|c| c.abstract_syntax == instance.sop_class_uid)
    };
    same_class()
        .find(|c| c.transfer_syntax == instance.transfer_syntax_uid)
        .or_else(|| {
            is_native(&instance.transfer_syntax_uid)
                .then(|| same_class().find(|c| is_native(&c.transfer_syntax)))
                .flatten()
        })
}

/// What became of one C-STORE-RQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The receiver answered with this status.
    Answered(u16),
    /// No accepted presentation context can carry the instance.
    NoContext,
    /// The stored instance could not be read (missing, damaged) or re-encoded: why.
    Unreadable(String),
}

impl Sent {
    /// As a sub-operation result.
    pub fn sub_operation(&self) -> SubOperation {
        match self {
            Sent::Answered(status::SUCCESS) => SubOperation::Completed,
            Sent::Answered(0xB000..=0xBFFF) => SubOperation::Warning,
            _ => SubOperation::Failed,
        }
    }
}

/// Sends one instance as a C-STORE-RQ on `channel` and waits for its C-STORE-RSP. Returns the
/// sub-operation result and whether a C-CANCEL-RQ arrived meanwhile.
pub async fn send_instance<A>(
    channel: &mut Channel<A>,
    archive: &Archive,
    instance: &StoredInstance,
    message_id: u16,
    originator: Option<&MoveOriginator>,
) -> Result<(SubOperation, bool), ChannelError>
where
    A: PduTransport,
{
    let (sent, cancelled) =
        send_instance_answer(channel, archive, instance, message_id, originator).await?;
    Ok((sent.sub_operation(), cancelled))
}

/// [`send_instance`] with the receiver's status, or why nothing was sent.
pub async fn send_instance_answer<A>(
    channel: &mut Channel<A>,
    archive: &Archive,
    instance: &StoredInstance,
    message_id: u16,
    originator: Option<&MoveOriginator>,
) -> Result<(Sent, bool), ChannelError>
where
    A: PduTransport,
{
    let Some(context) = choose_context(channel.contexts(), instance).cloned() else {
        tracing::info!(sop_class = %instance.sop_class_uid, transfer_syntax = %instance.transfer_syntax_uid,
            "no accepted presentation context can carry this instance");
        return Ok((Sent::NoContext, false));
    };
    let dataset = match load_dataset(archive, instance, &context.transfer_syntax).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(key = %instance.object_key, error = %e, "stored instance cannot be sent");
            return Ok((Sent::Unreadable(e), false));
        }
    };
    let mut command = CommandBuilder::new(command_field::C_STORE_RQ)
        .u16(tags::MESSAGE_ID, message_id)
        .uid(tags::AFFECTED_SOP_CLASS_UID, &instance.sop_class_uid)
        .uid(tags::AFFECTED_SOP_INSTANCE_UID, &instance.sop_instance_uid)
        .u16(tags::PRIORITY, 0)
        .dataset(true);
    if let Some(o) = originator {
        command = command
            .ae(tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE, &o.ae_title)
            .u16(tags::MOVE_ORIGINATOR_MESSAGE_ID, o.message_id);
    }
    channel
        .send(context.id, &command.encode()?, Some(&dataset))
        .await?;

    let mut cancelled = false;
    loop {
        match channel.receive().await? {
            Incoming::Message(m) => match m.command.command_field() {
                Some(command_field::C_STORE_RSP) => {
                    let code = m.command.status().unwrap_or(status::PROCESSING_FAILURE);
                    return Ok((Sent::Answered(code), cancelled));
                }
                Some(command_field::C_CANCEL_RQ) => cancelled = true,
                other => {
                    return Err(ChannelError::Protocol(format!(
                        "expected C-STORE-RSP, got command field {other:?}"
                    )))
                }
            },
            Incoming::Released | Incoming::Aborted => {
                return Err(ChannelError::Protocol(
                    "peer ended the association during a sub-operation".into(),
                ))
            }
        }
    }
}

async fn load_dataset(
    archive: &Archive,
    instance: &StoredInstance,
    target_ts: &str,
) -> Result<Vec<u8>, String> {
    let file = archive
        .read_instance(instance)
        .await
        .map_err(|e| e.to_string())?;
    let stored = crate::dicom::ReceivedInstance::from_part10(file).map_err(|e| e.to_string())?;
    if stored.transfer_syntax == target_ts {
        return Ok(stored.dataset.to_vec());
    }
    let from = stored.transfer_syntax.clone();
    let target = target_ts.to_string();
    tokio::task::spawn_blocking(move || transcode_native(&stored.dataset, &from, &target))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Opens an association to a C-MOVE destination, proposing each SOP class among `instances` with
/// its stored transfer syntax and the two little-endian native ones.
pub async fn connect(
    address: &str,
    calling_ae_title: &str,
    called_ae_title: &str,
    instances: &[StoredInstance],
    timeout: Duration,
) -> Result<Channel<AsyncClientAssociation<TcpStream>>, ChannelError> {
    let mut proposals: Vec<(String, Vec<String>)> = Vec::new();
    for i in instances {
        let entry = match proposals.iter_mut().find(|(c, _)| *c == i.sop_class_uid) {
            Some(e) => e,
            None => {
                proposals.push((
                    i.sop_class_uid.clone(),
                    vec![EXPLICIT_VR_LE.into(), IMPLICIT_VR_LE.into()],
                ));
                proposals.last_mut().expect("just pushed")
            }
        };
        if !entry.1.contains(&i.transfer_syntax_uid) {
            entry.1.insert(0, i.transfer_syntax_uid.clone());
        }
    }
    // One context per transfer syntax, so the receiver can accept each stored syntax it supports.
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(calling_ae_title.to_string())
        .called_ae_title(called_ae_title.to_string())
        .read_timeout(timeout)
        .write_timeout(timeout)
        .connection_timeout(timeout);
    let mut count = 0;
    'outer: for (class, syntaxes) in &proposals {
        for ts in syntaxes {
            if count == 127 {
                tracing::warn!(
                    "C-MOVE needs more than 127 presentation contexts; some instances will fail"
                );
                break 'outer;
            }
            options = options.with_presentation_context(class.clone(), vec![ts.clone()]);
            count += 1;
        }
    }
    let mut association = options.establish_async(address).await?;
    let _ = association.inner_stream().set_nodelay(true);
    Ok(Channel::requested(association))
}
