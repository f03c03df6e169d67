//! C-STORE as SCP (PS3.4 B.2, PS3.7 9.1.1): hand the data set to the ingest path and answer with
//! the status that says what happened, with a reason in Error Comment when it is not success.

use dicom_dictionary_std::tags;

use super::channel::{AcceptedContext, Message};
use super::message::{command_field, response, status, CommandBuilder, CommandError};
use crate::dicom::ReceivedInstance;
use crate::ingest::{Archive, Expected, IngestError, IngestOutcome, Sender};
use crate::store::staging::{MemoryHold, Received};

/// A status and, unless it is success, the reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    /// The DIMSE status code.
    pub code: u16,
    /// Why, for Error Comment.
    pub reason: Option<String>,
}

/// Maps an ingest result to a C-STORE status (PS3.4 B.2.3).
pub fn store_status(result: &Result<IngestOutcome, IngestError>) -> StoreStatus {
    let (code, reason) = match result {
        Ok(IngestOutcome::Stored) | Ok(IngestOutcome::Duplicate) | Ok(IngestOutcome::Replaced) => {
            (status::SUCCESS, None)
        }
        Ok(IngestOutcome::ConflictKept) => (
            status::WARNING_ELEMENTS_DISCARDED,
            Some("another data set is stored under this SOP Instance UID; kept it".to_string()),
        ),
        Err(e) => {
            let code = match e {
                IngestError::Unreadable(_) | IngestError::MissingKey(_) => {
                    status::CANNOT_UNDERSTAND
                }
                IngestError::Mismatch { .. } => status::DATASET_MISMATCH,
                IngestError::Conflict(_) => status::DUPLICATE_SOP_INSTANCE,
                IngestError::DiskFull { .. } => status::OUT_OF_RESOURCES,
                IngestError::Index(crate::store::IndexError::Forbidden { .. }) => {
                    status::NOT_AUTHORIZED
                }
                IngestError::Object(_)
                | IngestError::Index(_)
                | IngestError::Metadata(_)
                | IngestError::Journal(_) => status::OUT_OF_RESOURCES,
            };
            (code, Some(e.to_string()))
        }
    };
    StoreStatus { code, reason }
}

/// The refusal of an instance over the size limit: Refused, Out of Resources (PS3.4 B.2.3).
fn too_large(received: u64, max: u64) -> StoreStatus {
    const MB: u64 = 1024 * 1024;
    StoreStatus {
        code: status::OUT_OF_RESOURCES,
        reason: Some(format!(
            "an instance of {} MB exceeds the {} MB limit of this archive",
            received.div_ceil(MB),
            max / MB
        )),
    }
}

/// What a C-STORE did: the encoded C-STORE-RSP, its status, and the study of the instance when
/// it was read (for the audit trail).
#[derive(Debug)]
pub struct StoreAnswer {
    /// The encoded C-STORE-RSP.
    pub rsp: Vec<u8>,
    /// Its status.
    pub status: u16,
    /// The Study Instance UID of the instance, when it parsed.
    pub study_instance_uid: Option<String>,
}

/// Handles a C-STORE-RQ.
pub async fn handle(
    archive: &Archive,
    context: Option<&AcceptedContext>,
    sender: &Sender,
    request: Message,
) -> Result<StoreAnswer, CommandError> {
    let sop_class = request.command.affected_sop_class_uid();
    let sop_instance = request.command.affected_sop_instance_uid();
    let received = match (request.received, request.dataset) {
        (Some(received), _) => Some(received),
        (None, Some(bytes)) => Some(Received::InMemory(bytes, MemoryHold::default())),
        (None, None) => None,
    };
    let result = match (context, received) {
        (None, _) => Err(StoreStatus {
            code: status::SOP_CLASS_NOT_SUPPORTED,
            reason: Some(format!(
                "presentation context {} was not accepted on this association",
                request.presentation_context_id
            )),
        }),
        (Some(_), None) => Err(StoreStatus {
            code: status::CANNOT_UNDERSTAND,
            reason: Some("C-STORE-RQ without a data set".into()),
        }),
        (Some(_), Some(Received::TooLarge { received, max })) => {
            tracing::warn!(source = %sender.source, received, max, "C-STORE refused: instance larger than allowed");
            Err(too_large(received, max))
        }
        (Some(ctx), Some(Received::InMemory(dataset, hold))) => {
            Ok(ReceivedInstance::from_dataset(&ctx.transfer_syntax, dataset).holding(hold))
        }
        (Some(ctx), Some(Received::Spooled(file))) => Ok(ReceivedInstance::from_spooled(
            &ctx.transfer_syntax,
            "",
            file,
        )),
    };
    let mut study_instance_uid = None;
    let result = match result {
        Ok(received) => {
            let outcome = archive
                .ingest(
                    received,
                    sender,
                    &Expected {
                        sop_class_uid: Some(&sop_class),
                        sop_instance_uid: Some(&sop_instance),
                        study_instance_uid: None,
                    },
                )
                .await
                .map(|r| {
                    study_instance_uid =
                        Some(r.attributes.study.study_instance_uid.as_str().to_string());
                    r.outcome
                });
            if let Err(e) = &outcome {
                tracing::warn!(source = %sender.source, sop_instance_uid = %sop_instance, error = %e, "C-STORE refused");
            }
            Ok(store_status(&outcome))
        }
        Err(st) => Err(st),
    };
    let st = result.unwrap_or_else(|s| s);
    let mut rsp: CommandBuilder =
        response(&request.command, command_field::C_STORE_RSP, st.code).dataset(false);
    if !sop_instance.is_empty() {
        rsp = rsp.uid(tags::AFFECTED_SOP_INSTANCE_UID, &sop_instance);
    }
    if let Some(reason) = &st.reason {
        rsp = rsp.error_comment(reason);
    }
    Ok(StoreAnswer {
        rsp: rsp.encode()?,
        status: st.code,
        study_instance_uid,
    })
}
