//! C-FIND as SCP (PS3.4 C.4.1): Patient Root and Study Root models at every level they define.
//! The identifier's keys become an [`AttributeQuery`]; each match is answered with the requested
//! keys filled from the index (instance-level keys the index has no column for come from the
//! instance's stored DICOM JSON metadata).

use bytes::Bytes;
use dicom_core::header::Header;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::access::{Action, Principal};
use crate::dicom::query_retrieve;
use crate::store::query::{AttributeQuery, QueryError, QueryLevel, QueryMatch, QueryScope};
use crate::store::IndexError;

/// Why an identifier cannot be answered; carries the status to send.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct IdentifierError {
    /// DIMSE status.
    pub status: u16,
    /// Reason for Error Comment.
    pub reason: String,
}

fn identifier_error(status: u16, reason: impl Into<String>) -> IdentifierError {
    IdentifierError {
        status,
        reason: reason.into(),
    }
}

/// Decodes an identifier (a data set in the context's transfer syntax).
pub fn decode_identifier(
    transfer_syntax: &str,
    bytes: &Bytes,
) -> Result<InMemDicomObject, IdentifierError> {
    let ts = TransferSyntaxRegistry.get(transfer_syntax).ok_or_else(|| {
        identifier_error(
            super::message::status::CANNOT_UNDERSTAND,
            format!("unsupported transfer syntax {transfer_syntax}"),
        )
    })?;
    crate::dicom::declared_lengths::read_dataset(&bytes[..], ts).map_err(|e| {
        identifier_error(
            super::message::status::CANNOT_UNDERSTAND,
            format!("identifier cannot be decoded: {e}"),
        )
    })
}

/// Whether `abstract_syntax` is a Patient Root model (else Study Root).
fn is_patient_root(abstract_syntax: &str) -> bool {
    matches!(
        abstract_syntax,
        query_retrieve::PATIENT_ROOT_FIND
            | query_retrieve::PATIENT_ROOT_GET
            | query_retrieve::PATIENT_ROOT_MOVE
    )
}

/// Reads the identifier into a query: QueryRetrieveLevel must be present and allowed by the model.
pub fn query_from_identifier(
    abstract_syntax: &str,
    identifier: &InMemDicomObject,
) -> Result<AttributeQuery, IdentifierError> {
    let level_text = crate::dicom::attributes::text(identifier, tags::QUERY_RETRIEVE_LEVEL);
    let level = QueryLevel::from_keyword(&level_text).ok_or_else(|| {
        identifier_error(
            super::message::status::DATASET_MISMATCH,
            format!("QueryRetrieveLevel {level_text:?} is missing or not PATIENT, STUDY, SERIES or IMAGE"),
        )
    })?;
    if level == QueryLevel::Patient && !is_patient_root(abstract_syntax) {
        return Err(identifier_error(
            super::message::status::DATASET_MISMATCH,
            "the Study Root model has no PATIENT level (PS3.4 C.6.2)",
        ));
    }
    let conditions = identifier
        .iter()
        .filter(|e| {
            let t = e.tag();
            t != tags::QUERY_RETRIEVE_LEVEL && t != tags::SPECIFIC_CHARACTER_SET && e.vr() != VR::SQ
        })
        .map(|e| {
            (
                e.tag(),
                e.to_str()
                    .map(|s| s.trim_matches(['\0', ' ']).to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    Ok(AttributeQuery {
        level,
        conditions,
        limit: None,
        offset: 0,
        fuzzy_person_names: false,
    })
}

/// Builds the response identifier for one match: every key the request named, plus
/// QueryRetrieveLevel, SpecificCharacterSet (UTF-8) and RetrieveAETitle.
pub fn response_identifier(
    request: &InMemDicomObject,
    level: QueryLevel,
    found: &QueryMatch,
    retrieve_ae_title: &str,
) -> InMemDicomObject {
    let metadata: Option<InMemDicomObject> = found
        .metadata_json
        .as_deref()
        .filter(|_| {
            request
                .iter()
                .any(|e| !found.values.contains_key(&e.tag()) && !is_meta_key(e.tag()))
        })
        .and_then(|json| dicom_json::from_str(json).ok());
    let mut out = InMemDicomObject::new_empty();
    for elem in request.iter() {
        let tag = elem.tag();
        if is_meta_key(tag) {
            continue;
        }
        if let Some(text) = found.values.get(&tag) {
            out.put(DataElement::new(
                tag,
                elem.vr(),
                crate::dicom::attributes::value_from_text(elem.vr(), text),
            ));
        } else if let Some(e) = metadata.as_ref().and_then(|m| m.get(tag)) {
            out.put(e.clone());
        } else {
            out.put(DataElement::new(tag, elem.vr(), PrimitiveValue::Empty));
        }
    }
    out.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(level.keyword()),
    ));
    out.put(DataElement::new(
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        PrimitiveValue::from("ISO_IR 192"),
    ));
    out.put(DataElement::new(
        tags::RETRIEVE_AE_TITLE,
        VR::AE,
        PrimitiveValue::from(retrieve_ae_title),
    ));
    out
}

fn is_meta_key(tag: Tag) -> bool {
    tag == tags::QUERY_RETRIEVE_LEVEL
        || tag == tags::SPECIFIC_CHARACTER_SET
        || tag == tags::RETRIEVE_AE_TITLE
}

/// Encodes a data set in `transfer_syntax`.
pub fn encode_dataset(
    obj: &InMemDicomObject,
    transfer_syntax: &str,
) -> Result<Vec<u8>, IdentifierError> {
    let ts = TransferSyntaxRegistry.get(transfer_syntax).ok_or_else(|| {
        identifier_error(
            super::message::status::CANNOT_UNDERSTAND,
            format!("unsupported transfer syntax {transfer_syntax}"),
        )
    })?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts).map_err(|e| {
        identifier_error(
            super::message::status::CANNOT_UNDERSTAND,
            format!("cannot encode response: {e}"),
        )
    })?;
    Ok(out)
}

/// Serves one C-FIND-RQ: a pending response per match, then the final status.
pub async fn handle<A>(
    channel: &mut Channel<A>,
    service: &DimseService,
    who: &Principal,
    request: Message,
) -> Result<u16, ChannelError>
where
    A: PduTransport,
{
    let pc = request.presentation_context_id;
    let Some(context) = channel.context(pc).cloned() else {
        let rsp = response(
            &request.command,
            command_field::C_FIND_RSP,
            status::SOP_CLASS_NOT_SUPPORTED,
        )
        .dataset(false)
        .error_comment("presentation context not accepted")
        .encode()?;
        channel.send(pc, &rsp, None).await?;
        return Ok(status::SOP_CLASS_NOT_SUPPORTED);
    };
    let outcome = answer(service, who, &context, request.dataset.as_ref()).await;
    match outcome {
        Ok(responses) => {
            for dataset in responses {
                let rsp = response(&request.command, command_field::C_FIND_RSP, status::PENDING)
                    .dataset(true)
                    .encode()?;
                channel.send(pc, &rsp, Some(&dataset)).await?;
            }
            let rsp = response(&request.command, command_field::C_FIND_RSP, status::SUCCESS)
                .dataset(false)
                .encode()?;
            channel.send(pc, &rsp, None).await?;
            Ok(status::SUCCESS)
        }
        Err(e) => {
            // The reason may quote the identifier's values (a birth date, a name): debug only.
            tracing::info!(status = e.status, "C-FIND refused");
            tracing::debug!(reason = %e.reason, "C-FIND refusal reason");
            let rsp = response(&request.command, command_field::C_FIND_RSP, e.status)
                .dataset(false)
                .error_comment(&e.reason)
                .encode()?;
            channel.send(pc, &rsp, None).await?;
            Ok(e.status)
        }
    }
}

/// Decodes the identifier a request carries on `context`, turns it into a query, and runs `run`
/// with it on the index. Shared by C-FIND, C-GET and C-MOVE.
pub async fn query_index<T: Send + 'static>(
    service: &DimseService,
    who: &Principal,
    action: Action,
    context: &AcceptedContext,
    dataset: Option<&Bytes>,
    run: fn(&QueryScope<'_>, &AttributeQuery) -> Result<T, QueryError>,
) -> Result<(InMemDicomObject, QueryLevel, T), IdentifierError> {
    let bytes = dataset.ok_or_else(|| {
        identifier_error(status::CANNOT_UNDERSTAND, "request without an identifier")
    })?;
    let identifier = decode_identifier(&context.transfer_syntax, bytes)?;
    let mut query = query_from_identifier(&context.abstract_syntax, &identifier)?;
    // Retrieval names what it moves by its unique keys; only a search matches names loosely.
    query.fuzzy_person_names = action == Action::Query && service.config.dimse.fuzzy_person_names;
    let level = query.level;
    let found = service
        .archive
        .index()
        .query_as(who, action, move |scope| run(scope, &query))
        .await
        .map_err(|e| match e {
            IndexError::Forbidden { .. } => identifier_error(
                status::NOT_AUTHORIZED,
                "this AE title's role does not allow it",
            ),
            e => identifier_error(status::OUT_OF_RESOURCES, e.to_string()),
        })?
        .map_err(|e| identifier_error(status::CANNOT_UNDERSTAND, e.to_string()))?;
    Ok((identifier, level, found))
}

async fn answer(
    service: &DimseService,
    who: &Principal,
    context: &AcceptedContext,
    dataset: Option<&Bytes>,
) -> Result<Vec<Vec<u8>>, IdentifierError> {
    let (identifier, level, matches) = query_index(
        service,
        who,
        Action::Query,
        context,
        dataset,
        |scope, query| scope.find(query),
    )
    .await?;
    let ae = service.config.dimse.ae_title.clone();
    matches
        .iter()
        .map(|m| {
            encode_dataset(
                &response_identifier(&identifier, level, m, &ae),
                &context.transfer_syntax,
            )
        })
        .collect()
}

use super::channel::{AcceptedContext, Channel, ChannelError, Message, PduTransport};
use super::message::{command_field, response, status};
use super::server::DimseService;
