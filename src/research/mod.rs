//! De-identified research sets (issue #15 item 6): a researcher with a research grant exports
//! the studies it opens, de-identified per DICOM PS3.15 Annex E (`deidentify.rs`, the action
//! table as data in `profile_table.rs`), with a CSV of labels from the findings and a manifest
//! that says how and what was left out (`export.rs`). Pseudonyms (new UIDs, research subject
//! IDs, date shifts) are keyed hashes under a per-server secret (`pseudonyms.rs`).
//! `docs/research-export.md` describes the set.

pub mod deidentify;
pub mod export;
mod profile_table;
pub mod pseudonyms;

use crate::access::Principal;
use crate::auth::Role;

pub use export::{
    export_set, select_studies, DirWriter, ExportRequest, ExportSummary, SetWriter, ZipStream,
};
pub use pseudonyms::Pseudonyms;

/// Why a research export cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ResearchError {
    /// The caller is not a researcher (nor system-wide).
    #[error("research exports are for the researcher role")]
    Forbidden,
    /// No research grant with this id is given to the caller's facility.
    #[error("no research grant {0} to your facility")]
    NoSuchGrant(String),
    /// More studies match than one export may hold.
    #[error("more than {0} studies match: narrow the grant, modality or dates ([research] max_studies_per_export)")]
    TooManyStudies(usize),
    /// A filter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The index refused or failed.
    #[error(transparent)]
    Index(#[from] crate::store::index::IndexError),
    /// The per-server secret could not be read or made.
    #[error("the research secret: {0}")]
    Secret(String),
    /// Writing the set failed (the client went away, the disk is full).
    #[error("writing the set: {0}")]
    Write(String),
}

/// Whether `who` may export research sets: a researcher, or a system-wide caller (the CLI,
/// superadmin). Clinicians and admins may not: their access is for care, not research.
pub fn may_export(who: &Principal) -> bool {
    who.is_system_wide()
        || (matches!(who.kind(), crate::access::PrincipalKind::Authenticated)
            && who.roles().contains(&Role::Researcher))
}
