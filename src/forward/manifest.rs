//! What a sender signs for each study it delivers, and what the receiver signs back (issue #10
//! item 3). Both are canonical JSON in a compact JWS ([`super::jws`]) signed with the
//! facility's Ed25519 key (`facility_keys`).
//!
//! A manifest names the study, every SOP Instance UID sent with its SHA-256 (of the data set as
//! stored, which the receiver computes too on arrival) and the size of the sender's stored object,
//! the AI findings on those instances, the sender and destination facilities and the time. A
//! receipt names the manifest by its id and the SHA-256 of its JWS, and lists what the receiver
//! holds intact and what failed, with the reason.

use serde::{Deserialize, Serialize};

/// `typ` of a manifest's JWS.
pub const MANIFEST_TYPE: &str = "tramy-manifest+json";
/// `typ` of a receipt's JWS.
pub const RECEIPT_TYPE: &str = "tramy-receipt+json";
/// Most instances one manifest lists (a larger study is delivered in several manifests).
pub const MAX_MANIFEST_INSTANCES: usize = 10_000;

/// One instance in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestInstance {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SHA-256 (hex) of the data set.
    pub sha256: String,
    /// Size in bytes of the sender's stored object.
    pub size: i64,
}

/// An AI finding that travels with the study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestFinding {
    /// The instance it is about.
    pub sop_instance_uid: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// Label.
    pub label: String,
    /// Probability, as the sender recorded it.
    pub probability: f64,
    /// At or above the threshold.
    pub flagged: bool,
    /// The label's urgency.
    pub urgency: String,
}

/// A link the sender's facility made between a patient who arrived without an ID (known by
/// the study they arrived with) and an identified patient; it travels with the next forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestLink {
    /// The study the provisional patient arrived with.
    pub provisional_study_instance_uid: String,
    /// The identified patient's PatientID.
    pub patient_id: String,
    /// Its IssuerOfPatientID (empty when none).
    pub issuer_of_patient_id: String,
}

/// What a sender signs for a study delivered to a destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version: 1.
    pub version: u32,
    /// Unique id of this manifest.
    pub id: String,
    /// The sending facility's code.
    pub sender: String,
    /// The destination facility's code.
    pub destination: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Every instance sent.
    pub instances: Vec<ManifestInstance>,
    /// AI findings on them.
    pub findings: Vec<ManifestFinding>,
    /// Patient links that concern the study's patient.
    #[serde(default)]
    pub patient_links: Vec<ManifestLink>,
    /// When it was signed (RFC 3339).
    pub created_at: String,
}

/// An instance the receiver holds intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptStored {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// The SHA-256 the receiver checked its stored object against.
    pub sha256: String,
}

/// An instance the receiver does not hold as the manifest says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptFailure {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Why: `not received`, `different data set`, `stored object damaged`, …
    pub reason: String,
}

/// What a receiver signs for a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Format version: 1.
    pub version: u32,
    /// The manifest's id.
    pub manifest_id: String,
    /// SHA-256 (hex) of the manifest's JWS as received.
    pub manifest_sha256: String,
    /// The receiving facility's code (the manifest's destination).
    pub receiver: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// What it holds intact.
    pub stored: Vec<ReceiptStored>,
    /// What it does not, and why.
    pub failed: Vec<ReceiptFailure>,
    /// When it was signed (RFC 3339).
    pub created_at: String,
}

impl Manifest {
    /// Checks what a receiver must not trust blindly: sizes and UID syntax.
    pub fn check(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!(
                "manifest version {} is not supported (this tramy reads version 1)",
                self.version
            ));
        }
        if self.instances.is_empty() || self.instances.len() > MAX_MANIFEST_INSTANCES {
            return Err(format!(
                "a manifest lists 1 to {MAX_MANIFEST_INSTANCES} instances"
            ));
        }
        use crate::dicom::uid::{SopInstanceUid, StudyInstanceUid};
        if StudyInstanceUid::new(&self.study_instance_uid).is_err()
            || self
                .instances
                .iter()
                .any(|i| SopInstanceUid::new(&i.sop_instance_uid).is_err())
        {
            return Err("a UID in the manifest is not a valid DICOM UID".into());
        }
        if self
            .instances
            .iter()
            .any(|i| i.sha256.len() != 64 || !i.sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err("a SHA-256 in the manifest is not 64 hex digits".into());
        }
        Ok(())
    }
}
