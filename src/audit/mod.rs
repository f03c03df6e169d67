//! The audit trail (issue #9 item 9): every access to and change of the archive is an event,
//! appended to a hash chain in the index so that an edited or deleted event is detected
//! (`tramy audit verify`), queryable (`GET /api/v1/audit`) and exportable as FHIR AuditEvent
//! resources (IHE BALP). Events are recorded where each protocol meets the archive (the HTTP
//! middleware, the DIMSE service loop), so no handler can forget one.
//!
//! This module holds the domain: what an event says. Storage and the chain are in
//! `store/audit.rs`.

use crate::access::Principal;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A search: QIDO-RS, C-FIND, the worklist.
    Query,
    /// Images or whole instances sent: WADO-RS/URI, frames, rendered, C-GET, C-MOVE.
    Retrieve,
    /// Metadata read (WADO-RS metadata).
    ReadMetadata,
    /// Findings or heatmaps read.
    ReadFindings,
    /// Instances stored: STOW-RS, C-STORE.
    Store,
    /// A grant or share link made, listed or revoked.
    Grant,
    /// A consent recorded, listed or revoked.
    Consent,
    /// A patient link made or undone.
    Link,
    /// An API token made, listed or revoked.
    Token,
    /// Facilities or AE titles changed or listed.
    Administer,
    /// The audit trail read.
    ReadAudit,
    /// A credential refused (unknown, expired, revoked, malformed) or an unregistered AE.
    LoginFailure,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Done.
    Success,
    /// Refused: no or a bad credential, or a role that does not allow it.
    Denied,
    /// Nothing the caller may see matched (404 / no match).
    NotFound,
    /// Failed for another reason (bad request, server error).
    Failed,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// Who: subject, acting facility, roles, client address.
    pub actor: Principal,
    /// What.
    pub action: AuditAction,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The study concerned, when one is (its patient is looked up when the event is stored).
    pub study_instance_uid: Option<String>,
    /// The patient concerned when no study names it: PatientID and IssuerOfPatientID.
    pub patient: Option<PatientRef>,
    /// What exactly, without patient data: the route or DIMSE service and its status
    /// (`GET /dicomweb/studies/{study}/metadata 200`, `C-FIND STUDY 0000`).
    pub detail: String,
}

/// A patient as the API names one: PatientID and IssuerOfPatientID (empty when none).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PatientRef {
    /// Patient ID (0010,0020).
    pub id: String,
    /// Issuer of Patient ID (0010,0021); empty when none.
    pub issuer: String,
}

impl PatientRef {
    /// Parses the API's patient reference: `ID` or `ISSUER|ID` (FHIR's token syntax).
    pub fn parse(text: &str) -> Option<PatientRef> {
        let text = text.trim();
        let (issuer, id) = match text.split_once('|') {
            Some((issuer, id)) => (issuer.trim(), id.trim()),
            None => ("", text),
        };
        (!id.is_empty() && id.len() <= 64 && !id.contains(['\\', '\u{0}'])).then(|| PatientRef {
            id: id.to_string(),
            issuer: issuer.to_string(),
        })
    }
}
