//! DIMSE messages (PS3.7 6.3, 9.3): the command set, always Implicit VR Little Endian with its
//! group length first, and the command field and status codes tramy uses.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Command Field values (PS3.7 E.1).
pub mod command_field {
    /// C-STORE-RQ
    pub const C_STORE_RQ: u16 = 0x0001;
    /// C-STORE-RSP
    pub const C_STORE_RSP: u16 = 0x8001;
    /// C-GET-RQ
    pub const C_GET_RQ: u16 = 0x0010;
    /// C-GET-RSP
    pub const C_GET_RSP: u16 = 0x8010;
    /// C-FIND-RQ
    pub const C_FIND_RQ: u16 = 0x0020;
    /// C-FIND-RSP
    pub const C_FIND_RSP: u16 = 0x8020;
    /// C-MOVE-RQ
    pub const C_MOVE_RQ: u16 = 0x0021;
    /// C-MOVE-RSP
    pub const C_MOVE_RSP: u16 = 0x8021;
    /// C-ECHO-RQ
    pub const C_ECHO_RQ: u16 = 0x0030;
    /// C-ECHO-RSP
    pub const C_ECHO_RSP: u16 = 0x8030;
    /// C-CANCEL-RQ
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
    /// N-EVENT-REPORT-RQ (PS3.7 10.3.1)
    pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
    /// N-EVENT-REPORT-RSP
    pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
    /// N-ACTION-RQ (PS3.7 10.3.4)
    pub const N_ACTION_RQ: u16 = 0x0130;
    /// N-ACTION-RSP
    pub const N_ACTION_RSP: u16 = 0x8130;
}

/// Status codes (PS3.7 Annex C; PS3.4 B.2.3, C.4.1.1.4, C.4.2.1.5, C.4.3.1.4).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Pending (C-FIND, C-GET, C-MOVE).
    pub const PENDING: u16 = 0xFF00;
    /// Cancelled.
    pub const CANCEL: u16 = 0xFE00;
    /// Warning: sub-operations complete, one or more failures or warnings.
    pub const WARNING_SUBOPERATIONS: u16 = 0xB000;
    /// C-STORE warning: elements discarded (we kept the stored copy and discarded the new one).
    pub const WARNING_ELEMENTS_DISCARDED: u16 = 0xB007;
    /// Refused: out of resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// C-GET/C-MOVE: out of resources, unable to calculate number of matches.
    pub const OUT_OF_RESOURCES_MATCHES: u16 = 0xA701;
    /// C-GET/C-MOVE: out of resources, unable to perform sub-operations.
    pub const OUT_OF_RESOURCES_SUBOPERATIONS: u16 = 0xA702;
    /// C-MOVE: move destination unknown.
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// Data set or identifier does not match SOP class.
    pub const DATASET_MISMATCH: u16 = 0xA900;
    /// Cannot understand / unable to process.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Duplicate SOP instance (PS3.7 C.4.1).
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    /// Processing failure (PS3.7 C.4.2).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// SOP class not supported (PS3.7 C.4.3).
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Refused: Not Authorized (PS3.7 C.5.18): the caller may not do this.
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    /// Unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// DIMSE-N: no such SOP instance; Storage Commitment Failure Reason (PS3.4 J.3.2.1.1.1).
    pub const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
    /// DIMSE-N: invalid argument value (PS3.7 C.5.10).
    pub const INVALID_ARGUMENT_VALUE: u16 = 0x0115;
    /// DIMSE-N: invalid SOP instance (PS3.7 C.5.11).
    pub const INVALID_OBJECT_INSTANCE: u16 = 0x0117;
    /// DIMSE-N: no such SOP class (PS3.7 C.5.14).
    pub const NO_SUCH_SOP_CLASS: u16 = 0x0118;
    /// DIMSE-N: class-instance conflict; Storage Commitment Failure Reason (PS3.4 J.3.2.1.1.1).
    pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
    /// DIMSE-N: no such action type (PS3.7 C.5.17).
    pub const NO_SUCH_ACTION: u16 = 0x0123;
    /// DIMSE-N: resource limitation (PS3.7 C.5.20).
    pub const RESOURCE_LIMITATION: u16 = 0x0213;
}

/// CommandDataSetType value meaning "no data set follows" (PS3.7 E.1).
pub const NO_DATASET: u16 = 0x0101;
/// A CommandDataSetType value meaning "a data set follows".
pub const HAS_DATASET: u16 = 0x0000;

/// Errors decoding or encoding a command set.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The bytes are not an Implicit VR Little Endian command set.
    #[error("malformed command set: {0}")]
    Malformed(String),
    /// Encoding failed.
    #[error("cannot encode command set: {0}")]
    Encode(String),
}

/// A decoded command set with typed accessors.
#[derive(Debug, Clone)]
pub struct Command {
    /// The raw command elements.
    pub elements: InMemDicomObject,
}

impl Command {
    /// Decodes a command set.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
        let elements = crate::dicom::declared_lengths::read_dataset(bytes, &ts)
            .map_err(CommandError::Malformed)?;
        Ok(Command { elements })
    }

    fn u16(&self, tag: Tag) -> Option<u16> {
        self.elements.get(tag).and_then(|e| e.to_int::<u16>().ok())
    }

    fn text(&self, tag: Tag) -> String {
        crate::dicom::attributes::text(&self.elements, tag)
    }

    /// Command Field (0000,0100).
    pub fn command_field(&self) -> Option<u16> {
        self.u16(tags::COMMAND_FIELD)
    }

    /// Message ID (0000,0110).
    pub fn message_id(&self) -> u16 {
        self.u16(tags::MESSAGE_ID).unwrap_or(0)
    }

    /// Whether a data set follows (CommandDataSetType != 0x0101).
    pub fn has_dataset(&self) -> bool {
        self.u16(tags::COMMAND_DATA_SET_TYPE)
            .map(|v| v != NO_DATASET)
            .unwrap_or(false)
    }

    /// Affected SOP Class UID (0000,0002).
    pub fn affected_sop_class_uid(&self) -> String {
        self.text(tags::AFFECTED_SOP_CLASS_UID)
    }

    /// Affected SOP Instance UID (0000,1000).
    pub fn affected_sop_instance_uid(&self) -> String {
        self.text(tags::AFFECTED_SOP_INSTANCE_UID)
    }

    /// Move Destination (0000,0600).
    pub fn move_destination(&self) -> String {
        self.text(tags::MOVE_DESTINATION)
    }

    /// Priority (0000,0700).
    pub fn priority(&self) -> u16 {
        self.u16(tags::PRIORITY).unwrap_or(0)
    }

    /// Status (0000,0900), in responses.
    pub fn status(&self) -> Option<u16> {
        self.u16(tags::STATUS)
    }

    /// Message ID Being Responded To (0000,0120), in responses.
    pub fn message_id_being_responded_to(&self) -> Option<u16> {
        self.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO)
    }

    /// Requested SOP Class UID (0000,0003), in N-ACTION and N-GET/N-SET requests.
    pub fn requested_sop_class_uid(&self) -> String {
        self.text(tags::REQUESTED_SOP_CLASS_UID)
    }

    /// Requested SOP Instance UID (0000,1001).
    pub fn requested_sop_instance_uid(&self) -> String {
        self.text(tags::REQUESTED_SOP_INSTANCE_UID)
    }

    /// Action Type ID (0000,1008), in N-ACTION.
    pub fn action_type_id(&self) -> Option<u16> {
        self.u16(tags::ACTION_TYPE_ID)
    }

    /// Event Type ID (0000,1002), in N-EVENT-REPORT.
    pub fn event_type_id(&self) -> Option<u16> {
        self.u16(tags::EVENT_TYPE_ID)
    }
}

/// Builds command sets.
#[derive(Debug, Default)]
pub struct CommandBuilder {
    elements: Vec<DataElement<InMemDicomObject>>,
}

impl CommandBuilder {
    /// A command with the given Command Field.
    pub fn new(command_field: u16) -> Self {
        CommandBuilder::default().u16(tags::COMMAND_FIELD, command_field)
    }

    /// Adds a US element.
    pub fn u16(mut self, tag: Tag, value: u16) -> Self {
        self.elements
            .push(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        self
    }

    /// Adds a UI element.
    pub fn uid(mut self, tag: Tag, value: &str) -> Self {
        self.elements
            .push(DataElement::new(tag, VR::UI, PrimitiveValue::from(value)));
        self
    }

    /// Adds an AE element.
    pub fn ae(mut self, tag: Tag, value: &str) -> Self {
        self.elements
            .push(DataElement::new(tag, VR::AE, PrimitiveValue::from(value)));
        self
    }

    /// Adds Error Comment (0000,0902), cut to the 64 characters LO allows.
    pub fn error_comment(mut self, comment: &str) -> Self {
        let cut: String = comment
            .chars()
            .filter(|c| *c != '\\' && !c.is_control())
            .take(64)
            .collect();
        self.elements.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            PrimitiveValue::from(cut),
        ));
        self
    }

    /// Sets whether a data set follows.
    pub fn dataset(self, follows: bool) -> Self {
        self.u16(
            tags::COMMAND_DATA_SET_TYPE,
            if follows { HAS_DATASET } else { NO_DATASET },
        )
    }

    /// Encodes the command set, group length first.
    pub fn encode(self) -> Result<Vec<u8>, CommandError> {
        let obj = InMemDicomObject::from_element_iter(self.elements);
        let mut body = Vec::with_capacity(256);
        obj.write_dataset_with_ts(&mut body, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .map_err(|e| CommandError::Encode(e.to_string()))?;
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// A response command answering `request` with `status`.
pub fn response(request: &Command, command_field: u16, status: u16) -> CommandBuilder {
    let mut b = CommandBuilder::new(command_field)
        .u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, request.message_id())
        .u16(tags::STATUS, status);
    let sop_class = request.affected_sop_class_uid();
    if !sop_class.is_empty() {
        b = b.uid(tags::AFFECTED_SOP_CLASS_UID, &sop_class);
    }
    b
}

/// An N-ACTION-RQ (PS3.7 10.3.4) for `action_type_id` on the SOP instance `class`/`instance`;
/// a data set (the Action Information) follows.
pub fn n_action_rq(
    message_id: u16,
    class: &str,
    instance: &str,
    action_type_id: u16,
) -> CommandBuilder {
    CommandBuilder::new(command_field::N_ACTION_RQ)
        .u16(tags::MESSAGE_ID, message_id)
        .uid(tags::REQUESTED_SOP_CLASS_UID, class)
        .uid(tags::REQUESTED_SOP_INSTANCE_UID, instance)
        .u16(tags::ACTION_TYPE_ID, action_type_id)
        .dataset(true)
}

/// The N-ACTION-RSP answering `request` with `status` (PS3.7 10.3.4): the Affected SOP Class and
/// Instance are the request's Requested ones.
pub fn n_action_rsp(request: &Command, status: u16) -> CommandBuilder {
    let mut b = CommandBuilder::new(command_field::N_ACTION_RSP)
        .u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, request.message_id())
        .u16(tags::STATUS, status)
        .uid(
            tags::AFFECTED_SOP_CLASS_UID,
            &request.requested_sop_class_uid(),
        )
        .uid(
            tags::AFFECTED_SOP_INSTANCE_UID,
            &request.requested_sop_instance_uid(),
        );
    if let Some(action) = request.action_type_id() {
        b = b.u16(tags::ACTION_TYPE_ID, action);
    }
    b
}

/// An N-EVENT-REPORT-RQ (PS3.7 10.3.1) of `event_type_id` about `class`/`instance`; a data set
/// (the Event Information) follows.
pub fn n_event_report_rq(
    message_id: u16,
    class: &str,
    instance: &str,
    event_type_id: u16,
) -> CommandBuilder {
    CommandBuilder::new(command_field::N_EVENT_REPORT_RQ)
        .u16(tags::MESSAGE_ID, message_id)
        .uid(tags::AFFECTED_SOP_CLASS_UID, class)
        .uid(tags::AFFECTED_SOP_INSTANCE_UID, instance)
        .u16(tags::EVENT_TYPE_ID, event_type_id)
        .dataset(true)
}

/// The N-EVENT-REPORT-RSP answering `request` with `status`.
pub fn n_event_report_rsp(request: &Command, status: u16) -> CommandBuilder {
    let mut b = CommandBuilder::new(command_field::N_EVENT_REPORT_RSP)
        .u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, request.message_id())
        .u16(tags::STATUS, status)
        .uid(
            tags::AFFECTED_SOP_CLASS_UID,
            &request.affected_sop_class_uid(),
        )
        .uid(
            tags::AFFECTED_SOP_INSTANCE_UID,
            &request.affected_sop_instance_uid(),
        );
    if let Some(event) = request.event_type_id() {
        b = b.u16(tags::EVENT_TYPE_ID, event);
    }
    b.dataset(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trips_with_group_length() {
        let bytes = CommandBuilder::new(command_field::C_ECHO_RQ)
            .u16(tags::MESSAGE_ID, 7)
            .uid(tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.1.1")
            .dataset(false)
            .encode()
            .unwrap();
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 12);
        let cmd = Command::decode(&bytes).unwrap();
        assert_eq!(cmd.command_field(), Some(command_field::C_ECHO_RQ));
        assert_eq!(cmd.message_id(), 7);
        assert!(!cmd.has_dataset());
        assert_eq!(cmd.affected_sop_class_uid(), "1.2.840.10008.1.1");
    }

    #[test]
    fn error_comment_is_cut_to_lo_length() {
        let bytes = CommandBuilder::new(command_field::C_STORE_RSP)
            .error_comment(&"x".repeat(200))
            .encode()
            .unwrap();
        let cmd = Command::decode(&bytes).unwrap();
        assert_eq!(
            crate::dicom::attributes::text(&cmd.elements, tags::ERROR_COMMENT).len(),
            64
        );
    }
}
