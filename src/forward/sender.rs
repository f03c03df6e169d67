//! Works the outbox (issue #10 item 2): one task per peer takes the due instances, highest
//! priority first, sends them in small batches so that an urgent instance never waits behind
//! more than one batch, and once all of a study's instances for the peer are sent, delivers the
//! study's signed manifest and checks the receipt.
//!
//! Failures: the network, timeouts and 5xx are retried with a back-off (doubling, capped) and
//! never given up, so a cut link resumes where it stopped; a peer's refusal of an instance is
//! retried a few times, then dead-lettered with its reason (`POST /api/v1/peers/{name}/retry`
//! queues it again). Before any bytes go, the peer is asked which instances it has already
//! (by SHA-256 on a tramy peer), and those are not sent again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::dicomweb_client::{PeerCallError, PeerClient, StowAnswer, Throttle};
use super::jws;
use super::manifest::{
    Manifest, ManifestFinding, ManifestInstance, Receipt, MANIFEST_TYPE, RECEIPT_TYPE,
};
use super::outbox::{DeliveryRecord, OutboxItem, OutboxState, SentInstance};
use super::peer::{Peer, PeerKind};
use super::rules::URGENT;
use crate::access::Principal;
use crate::dicom::uid::SopInstanceUid;
use crate::ingest::Archive;
use crate::store::peers::KeyPin;

/// Objects read at once while a batch is prepared.
const READ_CONCURRENCY: usize = 4;

/// How the sender paces itself.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// How often an idle sender looks for new work.
    pub poll: Duration,
    /// The longest back-off after failures.
    pub max_backoff: Duration,
    /// Refusals of an instance by the peer before it is dead-lettered.
    pub max_refusals: i64,
    /// Most instances in one STOW-RS request.
    pub batch_instances: usize,
    /// STOW-RS requests in flight at once to a peer without a bandwidth limit.
    pub concurrent_requests: usize,
    /// Most bytes in one STOW-RS request (with a bandwidth limit, about two seconds' worth).
    pub batch_bytes: u64,
    /// The AE title tramy calls DIMSE peers with (`[dimse] ae_title`).
    pub calling_ae_title: String,
    /// How long to wait for a DIMSE peer's Storage Commitment report.
    pub commitment_wait: Duration,
}

impl Default for SenderSettings {
    fn default() -> Self {
        SenderSettings {
            poll: Duration::from_millis(200),
            max_backoff: Duration::from_secs(300),
            max_refusals: 3,
            batch_instances: 32,
            concurrent_requests: 2,
            batch_bytes: 32 * 1024 * 1024,
            calling_ae_title: "TRAMY".into(),
            commitment_wait: Duration::from_secs(60),
        }
    }
}

/// The sender for one peer.
pub struct PeerSender {
    pub(super) archive: Archive,
    pub(super) peer: Peer,
    client: PeerClient,
    pub(super) settings: SenderSettings,
    pub(super) who: Principal,
    /// Consecutive failed rounds (manifest delivery), for the back-off.
    manifest_failures: std::sync::atomic::AtomicU32,
    /// Whether the peer's published keys were fetched and pinned in this run.
    keys_pinned: std::sync::atomic::AtomicBool,
    /// Until when this node holds the peer's lease (nodes sharing an index send one at a time).
    lease_until: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long a node holds a peer's lease: longer than any one round (a throttled batch), short
/// enough that another node takes over soon after the holder dies.
const PEER_LEASE: Duration = Duration::from_secs(120);

impl PeerSender {
    /// A sender for `peer`.
    pub fn new(archive: Archive, peer: Peer, settings: SenderSettings) -> PeerSender {
        let throttle = Arc::new(Throttle::new(peer.max_bytes_per_sec));
        PeerSender {
            client: PeerClient::new(peer.clone(), throttle),
            archive,
            peer,
            settings,
            who: Principal::system(),
            manifest_failures: Default::default(),
            keys_pinned: Default::default(),
            lease_until: Default::default(),
        }
    }

    /// Whether this node holds the peer's lease, renewing it once half of it has passed.
    async fn holds_lease(&self) -> Result<bool, crate::store::IndexError> {
        let now = std::time::Instant::now();
        let held = self
            .lease_until
            .lock()
            .map(|until| until.is_some_and(|u| u > now + PEER_LEASE / 2))
            .unwrap_or(false);
        if held {
            return Ok(true);
        }
        let granted = self
            .archive
            .index()
            .hold_peer_lease(&self.who, &self.peer.name, PEER_LEASE)
            .await?;
        if let Ok(mut until) = self.lease_until.lock() {
            *until = granted.then_some(now + PEER_LEASE);
        }
        Ok(granted)
    }

    /// Runs until `shutdown` turns true; an instance being sent is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(peer = %self.peer.name, "forwarding to peer");
        while !*shutdown.borrow() {
            let pause = match self.round().await {
                Ok(true) => Duration::ZERO,
                Ok(false) => self.settings.poll,
                Err(e) => {
                    tracing::warn!(peer = %self.peer.name, error = %e, "outbox round failed");
                    Duration::from_secs(1)
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// One batch; whether there may be more work at once.
    async fn round(&self) -> Result<bool, crate::store::IndexError> {
        if !self.holds_lease().await? {
            return Ok(false);
        }
        let local = chrono::Local::now().time();
        let min_priority = if self.peer.seconds_until_window(local) > 0 {
            URGENT
        } else {
            i64::MIN
        };
        let due = self
            .archive
            .index()
            .due_outbox(
                &self.who,
                &self.peer.name,
                min_priority,
                self.settings.batch_instances * 4,
            )
            .await?;
        if due.is_empty() {
            self.finish_manifests().await?;
            return Ok(false);
        }
        // Up to `concurrent_requests` batches at once, the most urgent first: an urgent
        // instance waits for at most one round.
        let concurrency = match (self.peer.kind, self.peer.max_bytes_per_sec) {
            (PeerKind::Dimse, _) | (_, Some(_)) => 1,
            _ => self.settings.concurrent_requests.max(1),
        };
        let batches = self.batches(due, concurrency);
        let mut studies: Vec<String> = batches
            .iter()
            .map(|b| b[0].study_instance_uid.clone())
            .collect();
        // A large study is confirmed a batch's worth at a time while the rest is sent, so the
        // peer's checks overlap the sending instead of following it.
        let confirm = self
            .archive
            .index()
            .studies_with_unmanifested(&self.who, &self.peer.name, self.settings.batch_instances)
            .await?;
        let this: &PeerSender = self;
        let at_least = Some(self.settings.batch_instances);
        let (sent, confirmed) = futures::future::join(
            futures::future::join_all(batches.into_iter().map(|b| {
                let study = b[0].study_instance_uid.clone();
                async move { this.send_batch(&study, b).await }
            })),
            futures::future::join_all(confirm.iter().map(|study| this.manifest(study, at_least))),
        )
        .await;
        for result in sent.into_iter().chain(confirmed) {
            result?;
        }
        // A study may now be complete.
        studies.dedup();
        for study in studies {
            self.manifest(&study, None).await?;
        }
        Ok(true)
    }

    /// Up to `n` batches from `due`, in priority order: each one study's instances of one
    /// facility and priority, within the batch limits.
    fn batches(&self, mut due: Vec<OutboxItem>, n: usize) -> Vec<Vec<OutboxItem>> {
        let mut out = Vec::new();
        while out.len() < n && !due.is_empty() {
            let batch = self.batch(&due);
            due.retain(|i| !batch.iter().any(|b| b.id == i.id));
            out.push(batch);
        }
        out
    }

    /// The first due instance's study: its due instances in order, within the batch limits.
    fn batch(&self, due: &[OutboxItem]) -> Vec<OutboxItem> {
        let study = due[0].study_instance_uid.clone();
        let facility = due[0].facility.clone();
        let top = due[0].priority;
        let limit = match self.peer.max_bytes_per_sec {
            Some(rate) => (rate * 2).clamp(256 * 1024, self.settings.batch_bytes),
            None => self.settings.batch_bytes,
        };
        let mut bytes = 0u64;
        let mut out = Vec::new();
        for item in due.iter().filter(|i| {
            i.study_instance_uid == study && i.priority == top && i.facility == facility
        }) {
            let size = item.size_bytes.max(0) as u64;
            if !out.is_empty()
                && (bytes + size > limit || out.len() >= self.settings.batch_instances)
            {
                break;
            }
            bytes += size;
            out.push(item.clone());
        }
        out
    }

    async fn send_batch(
        &self,
        study: &str,
        batch: Vec<OutboxItem>,
    ) -> Result<(), crate::store::IndexError> {
        if self.peer.kind == PeerKind::Dimse {
            return self.send_dimse(batch).await;
        }
        // What the peer has already is not sent again.
        let pairs: Vec<(String, String)> = batch
            .iter()
            .map(|i| (i.sop_instance_uid.clone(), i.sha256.clone()))
            .collect();
        let client = self.client.clone();
        let study_owned = study.to_string();
        let held = blocking(move || client.holds(&study_owned, &pairs)).await;
        let held = match held {
            Ok(h) => h,
            Err(e) => return self.failed(&batch, &e).await,
        };
        let confirmed = if self.peer.kind == PeerKind::Tramy {
            OutboxState::Sent
        } else {
            OutboxState::Stored
        };
        let (already, to_send): (Vec<_>, Vec<_>) =
            batch.into_iter().zip(held).partition(|(_, h)| *h);
        if !already.is_empty() {
            tracing::debug!(peer = %self.peer.name, count = already.len(), "peer holds these already; not sent");
            self.archive
                .index()
                .outbox_advanced(
                    &self.who,
                    already.iter().map(|(i, _)| i.id).collect(),
                    confirmed,
                )
                .await?;
        }
        let to_send: Vec<OutboxItem> = to_send.into_iter().map(|(i, _)| i).collect();
        if to_send.is_empty() {
            return Ok(());
        }
        let (files, sendable) = self.read_files(to_send).await?;
        if sendable.is_empty() {
            return Ok(());
        }
        let client = self.client.clone();
        let study_owned = study.to_string();
        let origin = sendable[0].facility.clone();
        match blocking(move || client.stow(&study_owned, &origin, files)).await {
            Ok(answer) => self.settle_stow(sendable, answer, confirmed).await,
            Err(e) => self.failed(&sendable, &e).await,
        }
    }

    /// The stored files of `items`, each read through the verified read path; an instance whose
    /// object is damaged or gone is dead-lettered (what is sent is only ever what was stored).
    async fn read_files(
        &self,
        items: Vec<OutboxItem>,
    ) -> Result<(Vec<Bytes>, Vec<OutboxItem>), crate::store::IndexError> {
        use futures::StreamExt;
        // Reads overlap (each one an index lookup and a hashed object read), in order.
        let reads = futures::stream::iter(items.into_iter().map(|item| async move {
            let stored = match SopInstanceUid::new(&item.sop_instance_uid) {
                Ok(uid) => self.archive.index().instance(&self.who, &uid).await?,
                Err(_) => None,
            };
            let read =
                match stored {
                    None => Err("no longer stored here".to_string()),
                    Some(s) if s.sha256 != item.sha256 => {
                        Err("replaced here by another data set since it was queued".to_string())
                    }
                    Some(s) => self.archive.read_instance(&s).await.map_err(|e| {
                        format!("not sent: the stored object failed verification ({e})")
                    }),
                };
            Ok::<_, crate::store::IndexError>((item, read))
        }))
        .buffered(READ_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        let mut files = Vec::with_capacity(reads.len());
        let mut sendable = Vec::with_capacity(reads.len());
        for read in reads {
            let (item, problem) = match read? {
                (item, Ok(file)) => {
                    files.push(file);
                    sendable.push(item);
                    continue;
                }
                (item, Err(problem)) => (item, problem),
            };
            tracing::warn!(peer = %self.peer.name, sop_instance_uid = %item.sop_instance_uid, %problem, "instance dead-lettered");
            self.archive
                .index()
                .outbox_failed(
                    &self.who,
                    vec![item.id],
                    problem,
                    later(Duration::ZERO),
                    true,
                )
                .await?;
        }
        Ok((files, sendable))
    }

    async fn settle_stow(
        &self,
        sent: Vec<OutboxItem>,
        answer: StowAnswer,
        confirmed: OutboxState,
    ) -> Result<(), crate::store::IndexError> {
        let mut ok = Vec::new();
        for item in &sent {
            if answer.stored.iter().any(|s| s == &item.sop_instance_uid) {
                ok.push(item.id);
            } else {
                let reason = answer
                    .failed
                    .iter()
                    .find(|(s, _)| s == &item.sop_instance_uid)
                    .map(|(_, r)| {
                        format!(
                            "peer {} refused it: Failure Reason {r:04X}H",
                            self.peer.name
                        )
                    })
                    .unwrap_or_else(|| {
                        format!("peer {} did not list it as stored", self.peer.name)
                    });
                self.refused(item, reason).await?;
            }
        }
        self.delivered(ok, confirmed).await
    }

    /// Records the peer's refusal of `item`: tried again after a back-off, dead-lettered after
    /// `max_refusals`.
    pub(super) async fn refused(
        &self,
        item: &OutboxItem,
        reason: String,
    ) -> Result<(), crate::store::IndexError> {
        let dead = item.attempts + 1 >= self.settings.max_refusals;
        tracing::warn!(peer = %self.peer.name, sop_instance_uid = %item.sop_instance_uid, %reason, dead, "instance not stored by peer");
        self.archive
            .index()
            .outbox_failed(
                &self.who,
                vec![item.id],
                reason,
                self.backoff(item.attempts),
                dead,
            )
            .await
    }

    /// Records that the peer took the instances of `ids`.
    pub(super) async fn delivered(
        &self,
        ids: Vec<i64>,
        state: OutboxState,
    ) -> Result<(), crate::store::IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        metrics::counter!("tramy_forward_instances_total", "peer" => self.peer.name.clone())
            .increment(ids.len() as u64);
        self.archive
            .index()
            .outbox_advanced(&self.who, ids, state)
            .await
    }

    pub(super) async fn failed(
        &self,
        batch: &[OutboxItem],
        e: &PeerCallError,
    ) -> Result<(), crate::store::IndexError> {
        let attempts = batch.iter().map(|i| i.attempts).max().unwrap_or(0);
        let dead =
            matches!(e, PeerCallError::Refused(_)) && attempts + 1 >= self.settings.max_refusals;
        tracing::warn!(peer = %self.peer.name, error = %e, instances = batch.len(), dead, "sending failed");
        self.archive
            .index()
            .outbox_failed(
                &self.who,
                batch.iter().map(|i| i.id).collect(),
                e.to_string(),
                self.backoff(attempts),
                dead,
            )
            .await
    }

    /// When to try again after `attempts` failures: 1, 2, 4… seconds, capped.
    pub(super) fn backoff(&self, attempts: i64) -> String {
        let secs = 1u64
            .checked_shl(attempts.clamp(0, 20) as u32)
            .unwrap_or(u64::MAX);
        later(Duration::from_secs(secs).min(self.settings.max_backoff))
    }

    /// Manifests of studies whose sending finished earlier (after a restart, or a failed
    /// manifest delivery), at most one round per back-off.
    async fn finish_manifests(&self) -> Result<(), crate::store::IndexError> {
        let studies = self
            .archive
            .index()
            .studies_awaiting_manifest(&self.who, &self.peer.name)
            .await?;
        for study in studies {
            self.manifest(&study, None).await?;
        }
        Ok(())
    }

    /// If every instance of `study` for this peer is sent: the signed manifest, and the receipt.
    async fn manifest(
        &self,
        study: &str,
        at_least: Option<usize>,
    ) -> Result<(), crate::store::IndexError> {
        let sent = self
            .archive
            .index()
            .study_ready_for_manifest(&self.who, &self.peer.name, study, at_least)
            .await?;
        if sent.is_empty() {
            return Ok(());
        }
        let mut by_facility: std::collections::BTreeMap<String, Vec<SentInstance>> =
            Default::default();
        for s in sent {
            by_facility.entry(s.facility.clone()).or_default().push(s);
        }
        for (facility, instances) in by_facility {
            for chunk in instances.chunks(super::manifest::MAX_MANIFEST_INSTANCES) {
                self.deliver(study, &facility, chunk.to_vec()).await?;
            }
        }
        Ok(())
    }

    async fn deliver(
        &self,
        study: &str,
        facility: &str,
        instances: Vec<SentInstance>,
    ) -> Result<(), crate::store::IndexError> {
        let key = match crate::facility_keys::ensure(self.archive.data_dir(), facility) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(peer = %self.peer.name, %facility, error = %e, "cannot sign the manifest");
                return Ok(());
            }
        };
        let manifest = self.build_manifest(study, facility, &instances).await?;
        let manifest_jws = jws::sign(&key, MANIFEST_TYPE, &manifest);
        let mut record = DeliveryRecord {
            id: manifest.id.clone(),
            peer: self.peer.name.clone(),
            study_instance_uid: study.to_string(),
            facility: facility.to_string(),
            manifest_sha256: jws::digest(&manifest_jws),
            manifest_jws: manifest_jws.clone(),
            state: String::new(),
            receipt_jws: None,
            detail: String::new(),
            outcomes: Vec::new(),
            retry_at: later(Duration::from_secs(5)),
            max_attempts: self.settings.max_refusals,
        };
        if self.peer.kind == PeerKind::Dimse {
            return self.commit_dimse(record, &instances).await;
        }
        if self.peer.kind != PeerKind::Tramy {
            // The STOW-RS answers stood in for a receipt: keep the manifest as what was sent.
            record.state = "stored".into();
            record.outcomes = instances
                .iter()
                .map(|i| (i.id, OutboxState::Stored, String::new()))
                .collect();
            self.audit(&record).await;
            return self
                .archive
                .index()
                .record_delivery(&self.who, record)
                .await;
        }
        self.pin_published_keys().await?;
        let client = self.client.clone();
        let body = manifest_jws.clone();
        match blocking(move || client.deliver_manifest(&body)).await {
            Ok(receipt_jws) => {
                self.manifest_failures.store(0, Ordering::Relaxed);
                self.settle_receipt(&manifest, &mut record, &instances, receipt_jws)
                    .await?;
            }
            Err(PeerCallError::Transient(e)) => {
                // Left as sent; tried again in a later round.
                let failures = self.manifest_failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(peer = %self.peer.name, error = %e, "manifest not delivered; will retry");
                tokio::time::sleep(Duration::from_secs(1 << failures.min(5))).await;
                return Ok(());
            }
            Err(PeerCallError::Refused(e)) => {
                tracing::error!(peer = %self.peer.name, error = %e, "peer refused the manifest");
                record.state = "rejected".into();
                record.detail = e.clone();
                record.outcomes = instances
                    .iter()
                    .map(|i| (i.id, OutboxState::Failed, format!("manifest refused: {e}")))
                    .collect();
            }
        }
        self.audit(&record).await;
        self.archive
            .index()
            .record_delivery(&self.who, record)
            .await
    }

    /// Pins the destination facility's keys as the peer publishes them
    /// (`GET /api/v1/facilities/{code}/keys`, over the configured URL and credential), so a
    /// receipt must be signed by one of them; when they cannot be fetched, the first receipt's
    /// key is pinned instead.
    async fn pin_published_keys(&self) -> Result<(), crate::store::IndexError> {
        if self.keys_pinned.load(Ordering::Relaxed) {
            return Ok(());
        }
        let client = self.client.clone();
        let path = format!("/api/v1/facilities/{}/keys", self.peer.facility);
        let keys = match blocking(move || client.get_api(&path)).await {
            Ok(set) => set["keys"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                tracing::debug!(peer = %self.peer.name, error = %e, "published keys not fetched; the first receipt's key will be pinned");
                return Ok(());
            }
        };
        for key in keys {
            let params = super::jws::JwkParams {
                kty: key["kty"].as_str().unwrap_or_default().into(),
                crv: key["crv"].as_str().unwrap_or_default().into(),
                x: key["x"].as_str().unwrap_or_default().into(),
            };
            let Ok(kid) = params.thumbprint() else {
                continue;
            };
            let jwk = serde_json::to_string(&params).unwrap_or_default();
            let pin = self
                .archive
                .index()
                .pin_remote_key(&self.who, &self.peer.facility, &kid, &jwk)
                .await?;
            if pin == KeyPin::Conflict {
                tracing::error!(peer = %self.peer.name, facility = %self.peer.facility, "the peer publishes a key other than the one pinned for its facility; receipts signed with it are refused");
            }
        }
        self.keys_pinned.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// One audit event per delivered manifest: tramy sent this study to this peer, and how it
    /// was confirmed.
    pub(super) async fn audit(&self, record: &DeliveryRecord) {
        use crate::audit::{AuditAction, AuditOutcome, NewAuditEvent};
        let confirmed = record
            .outcomes
            .iter()
            .filter(|o| matches!(o.1, OutboxState::Verified | OutboxState::Stored))
            .count();
        let outcome = if confirmed == record.outcomes.len() {
            AuditOutcome::Success
        } else {
            AuditOutcome::Failed
        };
        let event = NewAuditEvent {
            actor: self.who.clone(),
            action: AuditAction::Forward,
            outcome,
            study_instance_uid: Some(record.study_instance_uid.clone()),
            patient: None,
            detail: format!(
                "forward to peer {} ({}): {} {confirmed}/{} confirmed",
                self.peer.name,
                self.peer.facility,
                record.state,
                record.outcomes.len()
            ),
        };
        if let Err(e) = self.archive.index().record_audit(event).await {
            tracing::error!(error = %e, "an audit event could not be recorded");
        }
    }

    async fn build_manifest(
        &self,
        study: &str,
        facility: &str,
        instances: &[SentInstance],
    ) -> Result<Manifest, crate::store::IndexError> {
        let findings = self
            .archive
            .index()
            .findings_for_study(&self.who, study)
            .await?
            .unwrap_or_default();
        let listed: std::collections::HashSet<&str> = instances
            .iter()
            .map(|i| i.sop_instance_uid.as_str())
            .collect();
        let patient_links = self
            .archive
            .index()
            .study_patient_links(&self.who, study)
            .await?;
        Ok(Manifest {
            version: 1,
            id: new_id(),
            sender: facility.to_string(),
            destination: self.peer.facility.clone(),
            study_instance_uid: study.to_string(),
            instances: instances
                .iter()
                .map(|i| ManifestInstance {
                    sop_instance_uid: i.sop_instance_uid.clone(),
                    sop_class_uid: i.sop_class_uid.clone(),
                    sha256: i.sha256.clone(),
                    size: i.size_bytes,
                })
                .collect(),
            findings: findings
                .into_iter()
                .filter(|f| listed.contains(f.sop_instance_uid.as_str()))
                .map(|f| ManifestFinding {
                    sop_instance_uid: f.sop_instance_uid,
                    model: f.model,
                    model_version: f.model_version,
                    label: f.label,
                    probability: f.probability,
                    flagged: f.flagged,
                    urgency: f.urgency,
                })
                .collect(),
            patient_links,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }

    /// Checks the receipt (signature by the destination's pinned key, that it answers this
    /// manifest) and records per instance what it confirms. A receipt that does not check is
    /// never accepted: the instances are sent and confirmed again.
    async fn settle_receipt(
        &self,
        manifest: &Manifest,
        record: &mut DeliveryRecord,
        instances: &[SentInstance],
        receipt_jws: String,
    ) -> Result<(), crate::store::IndexError> {
        record.receipt_jws = Some(receipt_jws.clone());
        let receipt = match self
            .verify_receipt(manifest, &record.manifest_sha256, &receipt_jws)
            .await?
        {
            Ok(r) => r,
            Err(problem) => {
                tracing::error!(peer = %self.peer.name, manifest = %manifest.id, %problem, "receipt not accepted");
                record.state = "invalid_receipt".into();
                record.detail = problem.clone();
                record.outcomes = instances
                    .iter()
                    .map(|i| {
                        (
                            i.id,
                            OutboxState::Failed,
                            format!("receipt not accepted: {problem}"),
                        )
                    })
                    .collect();
                return Ok(());
            }
        };
        for i in instances {
            let confirmed = receipt.stored.iter().any(|s| {
                s.sop_instance_uid == i.sop_instance_uid && s.sha256.eq_ignore_ascii_case(&i.sha256)
            });
            let outcome = if confirmed {
                (i.id, OutboxState::Verified, String::new())
            } else {
                let reason = receipt
                    .failed
                    .iter()
                    .find(|f| f.sop_instance_uid == i.sop_instance_uid)
                    .map(|f| format!("peer {}: {}", self.peer.name, f.reason))
                    .unwrap_or_else(|| format!("peer {} did not confirm it", self.peer.name));
                (i.id, OutboxState::Failed, reason)
            };
            record.outcomes.push(outcome);
        }
        let failed = record
            .outcomes
            .iter()
            .filter(|o| o.1 != OutboxState::Verified)
            .count();
        record.state = if failed == 0 {
            "verified".into()
        } else {
            "partial".into()
        };
        if failed > 0 {
            record.detail = format!("{failed} of {} instances not confirmed", instances.len());
            tracing::warn!(peer = %self.peer.name, manifest = %manifest.id, failed, "delivery partly confirmed; the rest is sent again");
        }
        Ok(())
    }

    async fn verify_receipt(
        &self,
        manifest: &Manifest,
        manifest_sha256: &str,
        receipt_jws: &str,
    ) -> Result<Result<Receipt, String>, crate::store::IndexError> {
        let unverified = match jws::parse(receipt_jws, RECEIPT_TYPE) {
            Ok(u) => u,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let receipt: Receipt = match super::trust::verify_pinned(
            self.archive.index(),
            &self.who,
            &unverified,
            &self.peer.facility,
        )
        .await?
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if receipt.manifest_id != manifest.id || receipt.manifest_sha256 != manifest_sha256 {
            return Ok(Err("the receipt answers another manifest".into()));
        }
        if receipt.receiver != self.peer.facility {
            return Ok(Err(format!(
                "the receipt is signed for facility {}, not {}",
                receipt.receiver, self.peer.facility
            )));
        }
        Ok(Ok(receipt))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PeerCallError> + Send + 'static,
) -> Result<T, PeerCallError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(PeerCallError::Transient(format!(
            "sending task failed: {e}"
        )))
    })
}

/// Now plus `d`, as the index stores times.
pub(super) fn later(d: Duration) -> String {
    let at = chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_default();
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A random id for a manifest.
pub(super) fn new_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}
