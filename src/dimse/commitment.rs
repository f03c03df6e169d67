//! Storage Commitment Push Model (PS3.4 Annex J) over DIMSE-N: N-ACTION (PS3.7 10.1.4) asks
//! the SCP to commit to keeping SOP instances; N-EVENT-REPORT (PS3.7 10.1.1) answers which it
//! holds (Event Type 1: all, 2: some failed, with a Failure Reason each, PS3.4 J.3.3.1.1).
//!
//! As SCP tramy answers N-ACTION-RSP at once, checks each referenced instance
//! ([`Archive::check_held`]: filed, visible to the caller, of the named class, object intact)
//! and reports on the same association; when the requestor has released it before
//! acknowledging the report, tramy opens an association to the requestor's registered host and
//! port, proposing the SCP role (PS3.4 J.3.3, J.6). As SCU (`peer_scu`), a report may come back
//! on a new association to tramy's listener (Orthanc does this): the listener hands it to the
//! request waiting for that Transaction UID through [`expect`] / [`deliver`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use tokio::sync::oneshot;

use super::audit;
use super::channel::{Channel, ChannelError, Message, PduTransport};
use super::message::{
    command_field, n_action_rsp, n_event_report_rq, n_event_report_rsp, status, Command,
};
use crate::access::Principal;
use crate::audit::{AuditAction, AuditOutcome, NewAuditEvent};
use crate::dicom::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::ingest::{Archive, Sender};
use crate::integrity::commitment::Held;

/// Storage Commitment Push Model SOP Class (PS3.4 J.3).
pub const PUSH_MODEL_SOP_CLASS: &str = "1.2.840.10008.1.20.1";
/// Its well-known SOP Instance (PS3.4 J.3.5).
pub const PUSH_MODEL_SOP_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
/// Action Type ID "Request Storage Commitment" (PS3.4 J.3.2.1).
pub const ACTION_REQUEST: u16 = 1;
/// Event Type ID: every referenced instance committed (PS3.4 J.3.3.1).
pub const EVENT_ALL_COMMITTED: u16 = 1;
/// Event Type ID: some failed.
pub const EVENT_SOME_FAILED: u16 = 2;
/// The most references one N-ACTION may carry; more are refused with 0213H (the whole check
/// reads each object, so this bounds one request's cost; the 4 MB identifier limit of
/// `channel.rs` bounds its memory first).
pub const MAX_REFERENCES: usize = 10_000;
/// The most reports one association may leave unacknowledged (each up to [`MAX_REFERENCES`]
/// references); beyond it the oldest is dropped, and its requestor must ask again.
pub const MAX_UNACKNOWLEDGED: usize = 16;
/// The most transactions waiting for a report in this process (a report's sender cannot make
/// the table grow; only tramy's own requests add to it).
const MAX_WAITING: usize = 4096;
/// Attempts at delivering a report on a new association, and the pause before each retry.
const DELIVERY_RETRIES: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(10)];

/// A (SOP Class UID, SOP Instance UID) pair.
pub type Reference = (String, String);

/// A Storage Commitment result: the Event Information of N-EVENT-REPORT (PS3.4 J.3.3.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Transaction UID of the request it answers.
    pub transaction_uid: String,
    /// Committed instances.
    pub committed: Vec<Reference>,
    /// Failed instances with their Failure Reason (0110H, 0112H, 0119H, ...).
    pub failed: Vec<(Reference, u16)>,
}

impl Report {
    /// The Event Type ID this report is sent with.
    pub fn event_type_id(&self) -> u16 {
        if self.failed.is_empty() {
            EVENT_ALL_COMMITTED
        } else {
            EVENT_SOME_FAILED
        }
    }

    /// The Event Information data set; committed items name `retrieve_ae_title`.
    pub fn to_dataset(&self, retrieve_ae_title: &str) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(uid_element(tags::TRANSACTION_UID, &self.transaction_uid));
        if !retrieve_ae_title.is_empty() {
            obj.put(DataElement::new(
                tags::RETRIEVE_AE_TITLE,
                VR::AE,
                PrimitiveValue::from(retrieve_ae_title),
            ));
        }
        if !self.committed.is_empty() {
            let items = self.committed.iter().map(|r| reference_item(r, None));
            obj.put(sequence(tags::REFERENCED_SOP_SEQUENCE, items.collect()));
        }
        if !self.failed.is_empty() {
            let items = self
                .failed
                .iter()
                .map(|(r, why)| reference_item(r, Some(*why)));
            obj.put(sequence(tags::FAILED_SOP_SEQUENCE, items.collect()));
        }
        obj
    }

    /// Reads an Event Information data set; an item without a Failure Reason reads as 0110H.
    pub fn from_dataset(obj: &InMemDicomObject) -> Result<Report, String> {
        let transaction_uid = text(obj, tags::TRANSACTION_UID);
        if transaction_uid.is_empty() {
            return Err("the event information has no Transaction UID".into());
        }
        let committed = references(obj, tags::REFERENCED_SOP_SEQUENCE)?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let failed = references(obj, tags::FAILED_SOP_SEQUENCE)?
            .into_iter()
            .map(|(r, why)| (r, why.unwrap_or(status::PROCESSING_FAILURE)))
            .collect();
        Ok(Report {
            transaction_uid,
            committed,
            failed,
        })
    }
}

/// The Action Information of a request (PS3.4 J.3.2.1.1): Transaction UID and references.
pub fn action_information(transaction_uid: &str, refs: &[Reference]) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(uid_element(tags::TRANSACTION_UID, transaction_uid));
    let items = refs.iter().map(|r| reference_item(r, None)).collect();
    obj.put(sequence(tags::REFERENCED_SOP_SEQUENCE, items));
    obj
}

fn uid_element(tag: dicom_core::Tag, uid: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(uid))
}

fn sequence(tag: dicom_core::Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, dicom_core::value::DataSetSequence::from(items))
}

fn reference_item((class, instance): &Reference, failure: Option<u16>) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.put(uid_element(tags::REFERENCED_SOP_CLASS_UID, class));
    item.put(uid_element(tags::REFERENCED_SOP_INSTANCE_UID, instance));
    if let Some(why) = failure {
        item.put(DataElement::new(
            tags::FAILURE_REASON,
            VR::US,
            PrimitiveValue::from(why),
        ));
    }
    item
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    crate::dicom::attributes::text(obj, tag)
}

/// The items of sequence `tag` as references with their Failure Reason, if any (at most
/// [`MAX_REFERENCES`]).
fn references(
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
) -> Result<Vec<(Reference, Option<u16>)>, String> {
    let Some(items) = obj.get(tag).and_then(|e| e.items()) else {
        return Ok(Vec::new());
    };
    if items.len() > MAX_REFERENCES {
        return Err(format!(
            "{} references; at most {MAX_REFERENCES} per request",
            items.len()
        ));
    }
    Ok(items
        .iter()
        .map(|item| {
            let class = text(item, tags::REFERENCED_SOP_CLASS_UID);
            let instance = text(item, tags::REFERENCED_SOP_INSTANCE_UID);
            let why = item
                .get(tags::FAILURE_REASON)
                .and_then(|e| e.to_int::<u16>().ok());
            ((class, instance), why)
        })
        .collect())
}

/// Why a request was refused: the N-ACTION-RSP status and the Error Comment.
struct Refused(u16, String);

/// The Transaction UID and references of an N-ACTION-RQ, or why it is refused.
fn parse_request(
    message: &Message,
    transfer_syntax: &str,
) -> Result<(String, Vec<Reference>), Refused> {
    let command = &message.command;
    if command.requested_sop_class_uid() != PUSH_MODEL_SOP_CLASS {
        return Err(Refused(
            status::NO_SUCH_SOP_CLASS,
            "only Storage Commitment Push Model takes N-ACTION here".into(),
        ));
    }
    if command.requested_sop_instance_uid() != PUSH_MODEL_SOP_INSTANCE {
        return Err(Refused(
            status::INVALID_OBJECT_INSTANCE,
            format!("Requested SOP Instance must be {PUSH_MODEL_SOP_INSTANCE}"),
        ));
    }
    if command.action_type_id() != Some(ACTION_REQUEST) {
        return Err(Refused(
            status::NO_SUCH_ACTION,
            "Action Type ID must be 1 (Request Storage Commitment)".into(),
        ));
    }
    let Some(bytes) = message.dataset.as_ref() else {
        return Err(Refused(
            status::INVALID_ARGUMENT_VALUE,
            "no Action Information data set".into(),
        ));
    };
    let obj = super::find::decode_identifier(transfer_syntax, bytes)
        .map_err(|e| Refused(status::INVALID_ARGUMENT_VALUE, e.reason))?;
    let transaction_uid = text(&obj, tags::TRANSACTION_UID);
    if transaction_uid.is_empty() {
        return Err(Refused(
            status::INVALID_ARGUMENT_VALUE,
            "Transaction UID (0008,1195) is missing".into(),
        ));
    }
    let refs = references(&obj, tags::REFERENCED_SOP_SEQUENCE)
        .map_err(|e| Refused(status::RESOURCE_LIMITATION, e))?;
    if refs.is_empty() {
        return Err(Refused(
            status::INVALID_ARGUMENT_VALUE,
            "Referenced SOP Sequence (0008,1199) is missing or empty".into(),
        ));
    }
    Ok((transaction_uid, refs.into_iter().map(|(r, _)| r).collect()))
}

/// The failure reason a check result reports (PS3.4 J.3.3.1.1), or `None`: committed.
fn failure_reason(held: Held) -> Option<u16> {
    match held {
        Held::Intact => None,
        Held::Unknown => Some(status::NO_SUCH_OBJECT_INSTANCE),
        Held::ClassMismatch => Some(status::CLASS_INSTANCE_CONFLICT),
        Held::Unreadable => Some(status::PROCESSING_FAILURE),
    }
}

/// Checks `refs` for `who` and makes the report; an index failure fails every reference.
async fn check(
    archive: &Archive,
    who: &Principal,
    transaction_uid: String,
    refs: Vec<Reference>,
) -> Report {
    let held = match archive.check_held(who, &refs).await {
        Ok(held) => held,
        Err(e) => {
            tracing::error!(error = %e, "storage commitment: the index cannot be read");
            vec![Held::Unreadable; refs.len()]
        }
    };
    let mut report = Report {
        transaction_uid,
        committed: Vec::new(),
        failed: Vec::new(),
    };
    for (r, held) in refs.into_iter().zip(held) {
        match failure_reason(held) {
            None => report.committed.push(r),
            Some(why) => report.failed.push((r, why)),
        }
    }
    report
}

/// A report sent on the requestor's association and not yet acknowledged: if the association
/// ends first, it goes on a new one ([`deliver_later`]).
#[derive(Debug)]
pub struct Unacknowledged {
    /// The N-EVENT-REPORT-RQ's Message ID.
    pub message_id: u16,
    /// The requestor's AE title.
    pub requestor: String,
    /// The report.
    pub report: Report,
}

/// What serving an N-ACTION did: its audit event and the report awaiting acknowledgement.
pub struct Served {
    /// The audit event.
    pub event: NewAuditEvent,
    /// The report sent (or to send on a new association), when the request was accepted.
    pub unacknowledged: Option<Unacknowledged>,
}

static NEXT_MESSAGE_ID: AtomicU16 = AtomicU16::new(1);

fn next_message_id() -> u16 {
    NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed).max(1)
}

/// Serves an N-ACTION-RQ on an accepted association (see the module documentation).
pub async fn handle_action<A: PduTransport>(
    channel: &mut Channel<A>,
    archive: &Archive,
    retrieve_ae_title: &str,
    sender: &Sender,
    message: Message,
) -> Result<Served, ChannelError> {
    let pc = message.presentation_context_id;
    let who = &sender.principal;
    let parsed = match channel.context(pc) {
        Some(c) if c.abstract_syntax == PUSH_MODEL_SOP_CLASS => {
            parse_request(&message, &c.transfer_syntax.clone())
        }
        _ => Err(Refused(
            status::NO_SUCH_SOP_CLASS,
            "presentation context is not Storage Commitment Push Model".into(),
        )),
    };
    let (transaction_uid, refs) = match parsed {
        Ok(p) => p,
        Err(refused) => return refuse(channel, &message, who, refused).await,
    };
    let rsp = n_action_rsp(&message.command, status::SUCCESS)
        .dataset(false)
        .encode()?;
    channel.send(pc, &rsp, None).await?;
    let report = check(archive, who, transaction_uid, refs).await;
    let event = report_event(who, &report);
    let message_id = next_message_id();
    let unacknowledged = Unacknowledged {
        message_id,
        requestor: sender.source.clone(),
        report,
    };
    // A failed send leaves the report to a new association when the loop sees the end.
    if let Err(e) = send_report(
        channel,
        pc,
        message_id,
        &unacknowledged.report,
        retrieve_ae_title,
    )
    .await
    {
        tracing::info!(error = %e, "storage commitment report not sent on the requesting association");
    }
    Ok(Served {
        event,
        unacknowledged: Some(unacknowledged),
    })
}

/// Answers a refused N-ACTION-RQ with its status and reason; no report follows.
async fn refuse<A: PduTransport>(
    channel: &mut Channel<A>,
    message: &Message,
    who: &Principal,
    Refused(code, reason): Refused,
) -> Result<Served, ChannelError> {
    tracing::info!(%reason, "storage commitment request refused");
    let rsp = n_action_rsp(&message.command, code)
        .dataset(false)
        .error_comment(&reason)
        .encode()?;
    channel
        .send(message.presentation_context_id, &rsp, None)
        .await?;
    let detail = format!("Storage Commitment N-ACTION {code:04X}: {reason}");
    let event = audit::event(
        who,
        AuditAction::Store,
        AuditOutcome::Failed,
        None,
        None,
        detail,
    );
    Ok(Served {
        event,
        unacknowledged: None,
    })
}

fn report_event(who: &Principal, report: &Report) -> NewAuditEvent {
    let outcome = if report.failed.is_empty() {
        AuditOutcome::Success
    } else {
        AuditOutcome::Failed
    };
    let detail = format!(
        "Storage Commitment transaction {}: {} committed, {} failed",
        report.transaction_uid,
        report.committed.len(),
        report.failed.len()
    );
    audit::event(who, AuditAction::Store, outcome, None, None, detail)
}

/// Sends `report` as an N-EVENT-REPORT-RQ on context `pc`.
async fn send_report<A: PduTransport>(
    channel: &mut Channel<A>,
    pc: u8,
    message_id: u16,
    report: &Report,
    retrieve_ae_title: &str,
) -> Result<(), ChannelError> {
    let ts = channel
        .context(pc)
        .map(|c| c.transfer_syntax.clone())
        .unwrap_or_else(|| IMPLICIT_VR_LE.to_string());
    let dataset = super::find::encode_dataset(&report.to_dataset(retrieve_ae_title), &ts)
        .map_err(|e| ChannelError::Protocol(e.reason))?;
    let rq = n_event_report_rq(
        message_id,
        PUSH_MODEL_SOP_CLASS,
        PUSH_MODEL_SOP_INSTANCE,
        report.event_type_id(),
    )
    .encode()?;
    channel.send(pc, &rq, Some(&dataset)).await
}

/// Delivers reports the requestor did not acknowledge on its association: on a new association
/// to its registered host and port, in the background, a few times.
pub fn deliver_later(
    archive: Archive,
    calling_ae_title: String,
    pending: Vec<Unacknowledged>,
    timeout: Duration,
) {
    for report in pending {
        let (archive, calling) = (archive.clone(), calling_ae_title.clone());
        tokio::spawn(async move {
            let mut pauses = DELIVERY_RETRIES.iter();
            loop {
                match deliver_once(&archive, &calling, &report, timeout).await {
                    Ok(()) => return,
                    Err(e) => match pauses.next() {
                        Some(pause) => {
                            tracing::info!(requestor = %report.requestor, error = %e, "storage commitment report not delivered yet; retrying");
                            tokio::time::sleep(*pause).await;
                        }
                        None => {
                            tracing::warn!(requestor = %report.requestor, transaction_uid = %report.report.transaction_uid,
                                error = %e, "storage commitment report not delivered; the requestor must ask again");
                            return;
                        }
                    },
                }
            }
        });
    }
}

/// Why a report could not be delivered on a new association.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("AE title {0} has no host and port registered (tramy ae add {0} --facility F --host H --port P)")]
    NoAddress(String),
    #[error("the registry cannot be read: {0}")]
    Registry(String),
    #[error("{0}")]
    Association(#[from] ChannelError),
    #[error("no association within {0:?}")]
    Timeout(Duration),
    #[error("the requestor answered N-EVENT-REPORT with status {0:04X}")]
    Status(u16),
}

async fn deliver_once(
    archive: &Archive,
    calling: &str,
    pending: &Unacknowledged,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let ae = archive
        .index()
        .application_entity_now(&Principal::system(), &pending.requestor)
        .map_err(|e| DeliveryError::Registry(e.to_string()))?;
    let Some((host, port)) = ae.and_then(|ae| Some((ae.host?, ae.port?))) else {
        return Err(DeliveryError::NoAddress(pending.requestor.clone()));
    };
    let address = format!("{host}:{port}");
    let work = async {
        let options = dicom_ul::ClientAssociationOptions::new()
            .calling_ae_title(calling.to_string())
            .called_ae_title(pending.requestor.clone())
            .with_presentation_context(PUSH_MODEL_SOP_CLASS, vec![EXPLICIT_VR_LE, IMPLICIT_VR_LE])
            // tramy invokes N-EVENT-REPORT here: it proposes the SCP role only (PS3.4 J.6).
            .with_role_selection(PUSH_MODEL_SOP_CLASS, false, true)
            .read_timeout(timeout)
            .write_timeout(timeout)
            .connection_timeout(timeout);
        let association = options
            .establish_async(address.as_str())
            .await
            .map_err(ChannelError::from)?;
        let mut channel = Channel::requested(association);
        let pc = channel
            .contexts()
            .iter()
            .find(|c| c.abstract_syntax == PUSH_MODEL_SOP_CLASS)
            .map(|c| c.id)
            .ok_or_else(|| {
                ChannelError::Protocol("Storage Commitment context not accepted".into())
            })?;
        let message_id = next_message_id();
        send_report(&mut channel, pc, message_id, &pending.report, calling).await?;
        let answer = await_response(&mut channel, command_field::N_EVENT_REPORT_RSP).await;
        let _ = channel.into_association().release().await;
        Ok::<u16, DeliveryError>(answer?.status().unwrap_or(status::PROCESSING_FAILURE))
    };
    match tokio::time::timeout(timeout * 3, work).await {
        Err(_) => Err(DeliveryError::Timeout(timeout * 3)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(status::SUCCESS)) => {
            tracing::info!(requestor = %pending.requestor, "storage commitment report delivered on a new association");
            Ok(())
        }
        Ok(Ok(code)) => Err(DeliveryError::Status(code)),
    }
}

/// Reads messages until the response `field`; requests meanwhile are a protocol violation.
pub async fn await_response<A: PduTransport>(
    channel: &mut Channel<A>,
    field: u16,
) -> Result<Command, ChannelError> {
    match channel.receive().await? {
        super::channel::Incoming::Message(m) if m.command.command_field() == Some(field) => {
            Ok(m.command)
        }
        super::channel::Incoming::Message(m) => Err(ChannelError::Protocol(format!(
            "expected command field {field:04X}, got {:?}",
            m.command.command_field()
        ))),
        _ => Err(ChannelError::Protocol(
            "the peer ended the association before answering".into(),
        )),
    }
}

/// Serves an N-EVENT-REPORT-RQ arriving on an accepted association: a peer reporting on a
/// transaction tramy asked for. Answered 0000H when a request waits for it from this AE title,
/// else 0110H with the reason.
pub async fn handle_event_report<A: PduTransport>(
    channel: &mut Channel<A>,
    sender: &Sender,
    message: Message,
) -> Result<NewAuditEvent, ChannelError> {
    let pc = message.presentation_context_id;
    let parsed = match (channel.context(pc), message.dataset.as_ref()) {
        (Some(c), Some(bytes)) if c.abstract_syntax == PUSH_MODEL_SOP_CLASS => {
            decode_report(&c.transfer_syntax.clone(), bytes)
        }
        _ => Err("not a Storage Commitment report".into()),
    };
    let outcome = parsed.and_then(|report| {
        let uid = report.transaction_uid.clone();
        if deliver(&sender.source, report) {
            Ok(uid)
        } else {
            Err(format!(
                "no request of this AE title waits for transaction {uid}"
            ))
        }
    });
    let (code, detail) = match &outcome {
        Ok(uid) => (
            status::SUCCESS,
            format!("Storage Commitment report for transaction {uid} received"),
        ),
        Err(reason) => (
            status::PROCESSING_FAILURE,
            format!("Storage Commitment report refused: {reason}"),
        ),
    };
    let mut rsp = n_event_report_rsp(&message.command, code);
    if let Err(reason) = &outcome {
        tracing::info!(%reason, "storage commitment report refused");
        rsp = rsp.error_comment(reason);
    }
    channel.send(pc, &rsp.encode()?, None).await?;
    let outcome = if code == status::SUCCESS {
        AuditOutcome::Success
    } else {
        AuditOutcome::Failed
    };
    Ok(audit::event(
        &sender.principal,
        AuditAction::Store,
        outcome,
        None,
        None,
        detail,
    ))
}

/// Decodes an Event Information data set.
pub fn decode_report(transfer_syntax: &str, bytes: &Bytes) -> Result<Report, String> {
    let obj = super::find::decode_identifier(transfer_syntax, bytes).map_err(|e| e.reason)?;
    Report::from_dataset(&obj)
}

/// A request waiting for its report, by Transaction UID, with the peer that must send it.
struct Waiting {
    peer_ae_title: String,
    report: oneshot::Sender<Report>,
}

static WAITING: LazyLock<Mutex<HashMap<String, Waiting>>> = LazyLock::new(Default::default);

fn waiting() -> std::sync::MutexGuard<'static, HashMap<String, Waiting>> {
    WAITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registered wait for a transaction's report; dropping it forgets the transaction.
pub struct Expected {
    transaction_uid: String,
    /// Receives the report [`deliver`] hands over.
    pub report: oneshot::Receiver<Report>,
}

impl Drop for Expected {
    fn drop(&mut self) {
        waiting().remove(&self.transaction_uid);
    }
}

/// Registers that a report for `transaction_uid` from `peer_ae_title` is awaited; `None` when
/// [`MAX_WAITING`] transactions already wait or this one already does.
pub fn expect(transaction_uid: &str, peer_ae_title: &str) -> Option<Expected> {
    let mut table = waiting();
    if table.len() >= MAX_WAITING || table.contains_key(transaction_uid) {
        return None;
    }
    let (tx, rx) = oneshot::channel();
    table.insert(
        transaction_uid.to_string(),
        Waiting {
            peer_ae_title: peer_ae_title.trim().to_string(),
            report: tx,
        },
    );
    Some(Expected {
        transaction_uid: transaction_uid.to_string(),
        report: rx,
    })
}

/// Hands `report`, received from `calling_ae_title`, to the request waiting for it; false when
/// none waits or it waits for another peer (no AE can answer for another).
pub fn deliver(calling_ae_title: &str, report: Report) -> bool {
    let mut table = waiting();
    let matches = table
        .get(&report.transaction_uid)
        .is_some_and(|w| w.peer_ae_title == calling_ae_title.trim());
    if !matches {
        return false;
    }
    match table.remove(&report.transaction_uid) {
        Some(w) => w.report.send(report).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(class: &str, instance: &str) -> Reference {
        (class.to_string(), instance.to_string())
    }

    #[test]
    fn a_report_round_trips_through_its_data_set() {
        let report = Report {
            transaction_uid: "1.2.3".into(),
            committed: vec![r("1.2.840.10008.5.1.4.1.1.2", "1.2.3.1")],
            failed: vec![(r("1.2.840.10008.5.1.4.1.1.2", "1.2.3.2"), 0x0112)],
        };
        assert_eq!(report.event_type_id(), EVENT_SOME_FAILED);
        let obj = report.to_dataset("TRAMY");
        let bytes = super::super::find::encode_dataset(&obj, EXPLICIT_VR_LE).unwrap();
        assert_eq!(
            decode_report(EXPLICIT_VR_LE, &Bytes::from(bytes)).unwrap(),
            report
        );
    }

    #[test]
    fn a_report_goes_only_to_the_waiting_request_of_its_peer() {
        let report = Report {
            transaction_uid: "1.2.99.1".into(),
            committed: vec![],
            failed: vec![],
        };
        let mut expected = expect("1.2.99.1", "PEER").unwrap();
        assert!(
            expect("1.2.99.1", "PEER").is_none(),
            "one wait per transaction"
        );
        assert!(
            !deliver("OTHER", report.clone()),
            "another AE cannot answer"
        );
        assert!(deliver("PEER", report.clone()));
        assert_eq!(expected.report.try_recv().unwrap(), report);
        assert!(!deliver("PEER", report), "delivered once");
        drop(expected);
        assert!(
            expect("1.2.99.1", "PEER").is_some(),
            "forgotten when dropped"
        );
    }

    #[test]
    fn checks_map_to_the_failure_reasons_of_ps3_4_j() {
        assert_eq!(failure_reason(Held::Intact), None);
        assert_eq!(failure_reason(Held::Unknown), Some(0x0112));
        assert_eq!(failure_reason(Held::ClassMismatch), Some(0x0119));
        assert_eq!(failure_reason(Held::Unreadable), Some(0x0110));
    }
}
