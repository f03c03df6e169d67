//! The receiving side of a delivery (issue #10 item 3): a peer hands over the signed manifest of
//! a study it sent; tramy checks the signature against the sender facility's pinned key, checks
//! each listed instance against what it stored (index SHA-256, then the object itself through
//! the verified read path), and answers with a receipt signed by the destination facility's key.

use futures::StreamExt;

use super::jws::{self, JwsError};
use super::manifest::{
    Manifest, Receipt, ReceiptFailure, ReceiptStored, MANIFEST_TYPE, RECEIPT_TYPE,
};
use crate::access::Principal;
use crate::dicom::uid::SopInstanceUid;
use crate::ingest::Archive;
use crate::store::peers::ReceivedDelivery;
use crate::store::IndexError;

/// Why a manifest was not answered with a receipt.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Not a manifest, or a manifest whose content is not acceptable (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The signature does not verify or the key is not trusted (HTTP 422).
    #[error("manifest not accepted: {0}")]
    Untrusted(JwsError),
    /// The manifest is addressed to a facility the caller does not act for (HTTP 403).
    #[error("the manifest is addressed to facility {0}, which your credential does not act for")]
    NotYours(String),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The destination facility's signing key cannot be read.
    #[error("the receipt cannot be signed: {0}")]
    Key(#[from] crate::facility_keys::KeyError),
}

/// Most objects re-read at once while checking a manifest.
const CHECK_CONCURRENCY: usize = 4;

/// Checks a manifest (compact JWS) from `who` and returns the signed receipt.
pub async fn receipt_for(
    archive: &Archive,
    who: &Principal,
    manifest_jws: &str,
) -> Result<String, ReceiveError> {
    let malformed = |e: JwsError| ReceiveError::Invalid(e.to_string());
    let unverified = jws::parse(manifest_jws, MANIFEST_TYPE).map_err(malformed)?;
    let claimed: Manifest = unverified.claimed().map_err(malformed)?;
    claimed.check().map_err(ReceiveError::Invalid)?;
    if !who.is_system_wide() && who.facility() != Some(claimed.destination.as_str()) {
        return Err(ReceiveError::NotYours(claimed.destination));
    }
    let manifest: Manifest =
        super::trust::verify_pinned(archive.index(), who, &unverified, &claimed.sender)
            .await?
            .map_err(ReceiveError::Untrusted)?;
    let (stored, failed) = check_instances(archive, who, &manifest).await?;
    if !manifest.patient_links.is_empty() {
        let made = archive
            .index()
            .apply_peer_links(who, manifest.patient_links.clone())
            .await?;
        tracing::info!(manifest = %manifest.id, links = made, "patient links from the sender applied");
    }
    let receipt = Receipt {
        version: 1,
        manifest_id: manifest.id.clone(),
        manifest_sha256: jws::digest(manifest_jws),
        receiver: manifest.destination.clone(),
        study_instance_uid: manifest.study_instance_uid.clone(),
        stored,
        failed,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let signing = crate::facility_keys::ensure(archive.data_dir(), &manifest.destination)?;
    let receipt_jws = jws::sign(&signing, RECEIPT_TYPE, &receipt);
    archive
        .index()
        .record_received_delivery(
            who,
            ReceivedDelivery {
                id: manifest.id.clone(),
                sender_facility: manifest.sender.clone(),
                destination: manifest.destination.clone(),
                study_instance_uid: manifest.study_instance_uid.clone(),
                manifest_sha256: receipt.manifest_sha256.clone(),
                stored: receipt.stored.len() as i64,
                failed: receipt.failed.len() as i64,
                receipt_jws: receipt_jws.clone(),
            },
        )
        .await?;
    if !receipt.failed.is_empty() {
        tracing::warn!(manifest = %manifest.id, sender = %manifest.sender, failed = receipt.failed.len(), "delivery received with instances not held as listed");
    }
    Ok(receipt_jws)
}

/// Each listed instance: held intact (same SHA-256 in the index, and the object reads back with
/// it), or why not.
async fn check_instances(
    archive: &Archive,
    who: &Principal,
    manifest: &Manifest,
) -> Result<(Vec<ReceiptStored>, Vec<ReceiptFailure>), ReceiveError> {
    let checks = futures::stream::iter(manifest.instances.clone().into_iter().map(
        |listed| async move {
            let failure = |reason: &str| {
                Err(ReceiptFailure {
                    sop_instance_uid: listed.sop_instance_uid.clone(),
                    reason: reason.into(),
                })
            };
            let Ok(uid) = SopInstanceUid::new(&listed.sop_instance_uid) else {
                return Ok(failure("not a valid SOP Instance UID"));
            };
            let Some(stored) = archive.index().instance_now(who, &uid)? else {
                return Ok(failure("not received"));
            };
            if !stored.sha256.eq_ignore_ascii_case(&listed.sha256) {
                return Ok(failure(
                    "a different data set is stored under this SOP Instance UID",
                ));
            }
            Ok::<_, IndexError>(match archive.verify_instance(&stored).await {
                Ok(_) => Ok(ReceiptStored {
                    sop_instance_uid: stored.sop_instance_uid,
                    sha256: stored.sha256,
                }),
                Err(_) => {
                    failure("the stored object does not match its SHA-256 (damaged or missing)")
                }
            })
        },
    ))
    .buffered(CHECK_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    let (mut stored, mut failed) = (Vec::new(), Vec::new());
    for check in checks {
        match check? {
            Ok(s) => stored.push(s),
            Err(f) => failed.push(f),
        }
    }
    Ok((stored, failed))
}
