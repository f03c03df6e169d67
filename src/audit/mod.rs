//! The audit trail (issue #9 item 9): every access to and change of the archive is an event,
//! appended to a hash chain in the index so that an edited or deleted event is detected
//! (`tramy audit verify`), queryable (`GET /api/v1/audit`) and exportable as FHIR AuditEvent
//! resources (IHE BALP). Events are recorded where each protocol meets the archive (the HTTP
//! middleware, the DIMSE service loop), so no handler can forget one.
//!
//! This module holds the domain: what an event says. Storage and the chain are in
//! `store/audit.rs`.

pub mod chain;
pub mod fhir;

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
    /// A study delivered to or received from a peer server, or fetched from one (issue #10).
    Forward,
    /// A triage model's job on an instance ended: scored, or left unscored with the reason
    /// (outside the model's intended use, or refused by its anatomy gate) (issue #13).
    Triage,
    /// A clinician's verdict on an AI finding recorded or read, or the feedback export read
    /// (issue #15); the comment is never in the detail.
    Feedback,
    /// A de-identified research set exported, with its counts (issue #15).
    ResearchExport,
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
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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

impl AuditAction {
    /// Its name in the trail and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Query => "query",
            AuditAction::Retrieve => "retrieve",
            AuditAction::ReadMetadata => "read_metadata",
            AuditAction::ReadFindings => "read_findings",
            AuditAction::Store => "store",
            AuditAction::Grant => "grant",
            AuditAction::Consent => "consent",
            AuditAction::Link => "link",
            AuditAction::Token => "token",
            AuditAction::Administer => "administer",
            AuditAction::ReadAudit => "read_audit",
            AuditAction::LoginFailure => "login_failure",
            AuditAction::Forward => "forward",
            AuditAction::Triage => "triage",
            AuditAction::Feedback => "feedback",
            AuditAction::ResearchExport => "research_export",
        }
    }

    /// Every action, for parsing.
    pub const ALL: [AuditAction; 16] = [
        AuditAction::Query,
        AuditAction::Retrieve,
        AuditAction::ReadMetadata,
        AuditAction::ReadFindings,
        AuditAction::Store,
        AuditAction::Grant,
        AuditAction::Consent,
        AuditAction::Link,
        AuditAction::Token,
        AuditAction::Administer,
        AuditAction::ReadAudit,
        AuditAction::LoginFailure,
        AuditAction::Forward,
        AuditAction::Triage,
        AuditAction::Feedback,
        AuditAction::ResearchExport,
    ];

    /// Parses [`AuditAction::as_str`]'s name.
    pub fn parse(name: &str) -> Option<AuditAction> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl AuditOutcome {
    /// Its name in the trail and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Denied => "denied",
            AuditOutcome::NotFound => "not_found",
            AuditOutcome::Failed => "failed",
        }
    }

    /// Parses [`AuditOutcome::as_str`]'s name.
    pub fn parse(name: &str) -> Option<AuditOutcome> {
        [
            AuditOutcome::Success,
            AuditOutcome::Denied,
            AuditOutcome::NotFound,
            AuditOutcome::Failed,
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
    }
}

/// An event as the trail holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Its place in the chain (1, 2, …).
    pub id: i64,
    /// When it was recorded: RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Who: the principal's subject (`token:<id>`, `ae:<AE title>`, an OIDC `sub`, `system`).
    pub actor: String,
    /// The acting facility's code; absent for a system-wide actor.
    pub facility: Option<String>,
    /// The actor's roles.
    pub roles: Vec<String>,
    /// The client's network address.
    pub address: Option<String>,
    /// What was done.
    #[schema(value_type = String, example = "retrieve")]
    pub action: AuditAction,
    /// How it ended.
    #[schema(value_type = String, example = "success")]
    pub outcome: AuditOutcome,
    /// The study concerned.
    pub study_instance_uid: Option<String>,
    /// The patient concerned.
    pub patient: Option<PatientRef>,
    /// The facilities that held the study when the event was recorded. For a facility's reader,
    /// an event about a study its facility did not hold names neither these nor the patient
    /// (its own staff asked for something it may not see: existence is not disclosed).
    pub study_facilities: Vec<String>,
    /// What exactly: the route or DIMSE service and its status (never patient data).
    pub detail: String,
    /// The previous event's hash (hex SHA-256; 64 zeros for the first); empty (and left out of
    /// the JSON) for a reader who is not system-wide.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prev_hash: String,
    /// This event's hash (hex SHA-256, see [`chain`]); empty as `prev_hash` is.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// Which events to read (all conditions hold together); newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// About this study.
    pub study: Option<String>,
    /// About this patient: events naming them, or any study that is theirs (or linked to them).
    pub patient: Option<PatientRef>,
    /// Acted by this facility (its code).
    pub facility: Option<String>,
    /// Acted by this subject.
    pub actor: Option<String>,
    /// Recorded at or after this time, as [`normalise_time_bound`] writes it.
    pub since: Option<String>,
    /// Recorded before this time, as [`normalise_time_bound`] writes it.
    pub until: Option<String>,
    /// At most this many (default [`AuditFilter::DEFAULT_LIMIT`], at most
    /// [`AuditFilter::MAX_LIMIT`]).
    pub limit: Option<usize>,
    /// Only events older than this id (the cursor for the next page).
    pub before_id: Option<i64>,
}

impl AuditEvent {
    /// The event as a reader acting for `facility` may see it: without the chain's hashes (they
    /// verify nothing without the whole chain, and would let a guessed patient ID be checked)
    /// and, when the study belongs to other facilities only, without its patient and owners.
    pub fn as_seen_by(mut self, facility: &str) -> AuditEvent {
        self.prev_hash.clear();
        self.hash.clear();
        if !self.study_facilities.is_empty() && !self.study_facilities.iter().any(|f| f == facility)
        {
            self.patient = None;
            self.study_facilities.clear();
        }
        self
    }
}

impl AuditFilter {
    /// Events per answer unless asked otherwise.
    pub const DEFAULT_LIMIT: usize = 100;
    /// Events per answer at most: an answer's memory stays bounded.
    pub const MAX_LIMIT: usize = 1000;

    /// The limit to apply.
    pub fn effective_limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT)
    }
}

/// Normalises a `since`/`until` bound to the stored time format, whose text order is time
/// order: an RFC 3339 time becomes UTC with milliseconds; a date `YYYY-MM-DD` its midnight UTC,
/// or with `end_of_day` the next midnight (so `until=2026-11-30` includes that day). `None`: not
/// a time.
pub fn normalise_time_bound(text: &str, end_of_day: bool) -> Option<String> {
    use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(
            t.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        );
    }
    let mut day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    if end_of_day {
        day = day.succ_opt()?;
    }
    Some(
        day.and_hms_opt(0, 0, 0)?
            .and_utc()
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

/// What `tramy audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events whose hash and link held, from the first on, before any break.
    pub verified: u64,
    /// The first place where the chain does not hold, if any.
    pub first_break: Option<ChainBreak>,
}

/// Where and how the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// The event's fields do not hash to its stored hash: it was edited.
    Edited {
        /// The event.
        id: i64,
    },
    /// The event does not point at the hash of the event before it (it, or that one, was replaced).
    BrokenLink {
        /// The event.
        id: i64,
    },
    /// Events with these ids are missing (deleted) before event `next` (`None`: at the end).
    Missing {
        /// The first missing id.
        from: i64,
        /// The last missing id.
        to: i64,
        /// The event after the gap, if any.
        next: Option<i64>,
    },
    /// The event was written in a chain version this tramy does not know.
    UnknownVersion {
        /// The event.
        id: i64,
        /// Its version.
        version: i64,
    },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Edited { id } => write!(
                f,
                "event {id} was changed: its contents do not match its hash"
            ),
            ChainBreak::BrokenLink { id } => write!(
                f,
                "event {id} does not follow from the event before it (one of them was replaced)"
            ),
            ChainBreak::Missing { from, to, next } => {
                let which = if from == to {
                    format!("event {from} is missing")
                } else {
                    format!("events {from} to {to} are missing")
                };
                match next {
                    Some(next) => write!(f, "{which} (deleted before event {next})"),
                    None => write!(f, "{which} (deleted at the end of the trail)"),
                }
            }
            ChainBreak::UnknownVersion { id, version } => write!(
                f,
                "event {id} has chain version {version}, which this tramy does not know"
            ),
        }
    }
}
