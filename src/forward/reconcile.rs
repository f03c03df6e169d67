//! Reconciliation with a peer (issue #10 item 4, `tramy reconcile`): for what the outbox says
//! the peer accepted or confirmed, ask the peer what it holds now (a tramy peer by SOP Instance
//! UID and SHA-256, `POST /api/v1/deliveries/check`; any other DICOMweb peer by the SOP
//! Instance UIDs it lists in each study over QIDO-RS, PS3.18 10.6), and put what it lacks back in the queue so that the running
//! server's sender sends it again. A peer restored from an older backup, or one that lost
//! objects, gets back what it had confirmed.

use std::sync::Arc;

use serde::Serialize;

use super::dicomweb_client::{PeerCallError, PeerClient, Throttle};
use super::peer::{Peer, PeerKind};
use crate::access::Principal;
use crate::store::{Index, IndexError};

/// Outbox rows read at once.
const PAGE: usize = 1000;
/// Instances of one study asked about at once (a tramy peer's presence check; another peer
/// lists the whole study once per chunk).
const CHUNK: usize = 1000;
/// The reason recorded on a re-queued row.
pub const REQUEUE_REASON: &str = "reconcile: the peer does not hold it";

/// An outbox row the peer accepted or confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRecord {
    /// The outbox row.
    pub id: i64,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SHA-256 (hex) of the data set as stored here.
    pub sha256: String,
    /// `sent`, `stored` or `verified`.
    pub state: String,
}

/// What to reconcile.
#[derive(Debug, Clone, Default)]
pub struct ReconcileOptions {
    /// Only what was sent at or after this time (the index's RFC 3339 text).
    pub since: Option<String>,
    /// Report only; change nothing.
    pub dry_run: bool,
    /// Most missing SOP Instance UIDs listed in the report.
    pub list: usize,
}

/// What reconciliation found (never patient data: counts and UIDs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// The peer.
    pub peer: String,
    /// Instances the outbox says the peer accepted or confirmed.
    pub checked: usize,
    /// Their studies.
    pub studies: usize,
    /// Of them, held by the peer as sent.
    pub held: usize,
    /// Of them, not held (or held with other bytes).
    pub missing: usize,
    /// Of the missing, how many the outbox had as verified by a signed receipt.
    pub missing_verified: usize,
    /// Queued again (0 with `dry_run`).
    pub requeued: usize,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The first missing SOP Instance UIDs.
    pub missing_uids: Vec<String>,
}

impl ReconcileReport {
    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "peer {}: {} instance(s) in {} study(ies) sent or confirmed; {} held, {} missing ({} of them had a verified receipt); {}\n",
            self.peer,
            self.checked,
            self.studies,
            self.held,
            self.missing,
            self.missing_verified,
            if self.dry_run {
                "dry run: nothing re-queued".to_string()
            } else {
                format!("{} re-queued", self.requeued)
            }
        );
        for uid in &self.missing_uids {
            out.push_str(&format!("  missing {uid}\n"));
        }
        if self.missing > self.missing_uids.len() {
            out.push_str(&format!(
                "  … and {} more\n",
                self.missing - self.missing_uids.len()
            ));
        }
        out
    }
}

/// Why reconciliation stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The peer cannot be asked what it holds.
    #[error(
        "peer {0} is a DIMSE peer: reconciliation asks a DICOMweb peer (QIDO-RS) or a tramy peer"
    )]
    NotDicomweb(String),
    /// The peer did not answer.
    #[error("asking peer {peer}: {error}")]
    Peer {
        /// The peer.
        peer: String,
        /// What failed.
        error: PeerCallError,
    },
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Compares what the outbox says `peer` has with what it holds, and re-queues what it lacks.
pub async fn reconcile(
    index: &Index,
    who: &Principal,
    peer: Peer,
    options: &ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError> {
    if peer.kind == PeerKind::Dimse {
        return Err(ReconcileError::NotDicomweb(peer.name));
    }
    let (name, kind) = (peer.name.clone(), peer.kind);
    // Asking is not sending: no bandwidth limit applies.
    let client = PeerClient::new(peer, Arc::new(Throttle::new(None)));
    let mut report = ReconcileReport {
        peer: name.clone(),
        dry_run: options.dry_run,
        ..Default::default()
    };
    let mut studies = std::collections::HashSet::new();
    let mut after = 0;
    loop {
        let page = index
            .sent_to_peer(who, &name, options.since.clone(), after, PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let missing = missing_of(&client, kind, &name, page.clone()).await?;
        report.checked += page.len();
        report.missing += missing.len();
        report.held += page.len() - missing.len();
        studies.extend(page.into_iter().map(|r| r.study_instance_uid));
        report.missing_verified += missing.iter().filter(|r| r.state == "verified").count();
        let room = options.list.saturating_sub(report.missing_uids.len());
        report.missing_uids.extend(
            missing
                .iter()
                .take(room)
                .map(|r| r.sop_instance_uid.clone()),
        );
        if !options.dry_run && !missing.is_empty() {
            let ids = missing.iter().map(|r| r.id).collect();
            report.requeued += index
                .requeue_unconfirmed(who, ids, REQUEUE_REASON.into())
                .await?;
        }
    }
    report.studies = studies.len();
    Ok(report)
}

/// Whether the peer holds each of `asked` (SOP Instance UID, SHA-256) of `study`: a tramy peer
/// by UID and SHA-256; another by the UIDs it lists in the study.
fn held_by(
    client: &PeerClient,
    kind: PeerKind,
    study: &str,
    asked: &[(String, String)],
) -> Result<Vec<bool>, PeerCallError> {
    if kind == PeerKind::Tramy {
        return client.holds(study, asked);
    }
    let listed: std::collections::HashSet<String> =
        client.instances_in_study(study)?.into_iter().collect();
    Ok(asked.iter().map(|(uid, _)| listed.contains(uid)).collect())
}

/// The records of `page` the peer does not hold, asked study by study in chunks.
async fn missing_of(
    client: &PeerClient,
    kind: PeerKind,
    name: &str,
    mut page: Vec<SentRecord>,
) -> Result<Vec<SentRecord>, ReconcileError> {
    page.sort_by(|a, b| a.study_instance_uid.cmp(&b.study_instance_uid));
    let mut missing = Vec::new();
    let mut rest = page.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take(CHUNK)
            .take_while(|r| r.study_instance_uid == first.study_instance_uid)
            .count();
        let (batch, tail) = rest.split_at(same);
        rest = tail;
        let asked: Vec<(String, String)> = batch
            .iter()
            .map(|r| (r.sop_instance_uid.clone(), r.sha256.clone()))
            .collect();
        let (client, study) = (client.clone(), first.study_instance_uid.clone());
        // ureq blocks: ask on a blocking thread.
        let held = tokio::task::spawn_blocking(move || held_by(&client, kind, &study, &asked))
            .await
            .map_err(|e| ReconcileError::Peer {
                peer: name.to_string(),
                error: PeerCallError::Transient(format!("the request task failed: {e}")),
            })?
            .map_err(|error| ReconcileError::Peer {
                peer: name.to_string(),
                error,
            })?;
        missing.extend(
            batch
                .iter()
                .zip(held)
                .filter(|(_, held)| !held)
                .map(|(r, _)| r.clone()),
        );
    }
    Ok(missing)
}
