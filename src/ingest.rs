//! The one ingest path every protocol calls (DIMSE C-STORE, STOW-RS, `tramy import`):
//! parse and validate → write the object durably → commit the index rows → acknowledge.
//!
//! Invariant: an instance is acknowledged only after its object and its index rows are durable.
//! A crash between the object write and the index commit leaves an object without index rows,
//! never index rows without an object; such an object may already have been acknowledged to a
//! peer that is gone, so start-up indexes it (`integrity::reindex`), never deletes it.
//! Re-sending identical data set bytes is recognised before anything is written.

use std::collections::HashMap;

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::{Config, DuplicatePolicy};
use crate::dicom::json::metadata_json;
use crate::dicom::{InstanceAttributes, Part10Error, ReceivedInstance, SopInstanceUid, UidError};
use crate::store::staging::{SpooledFile, Staging, StagingLimits};
use crate::store::write_journal::WriteJournal;
use crate::store::{
    CommitOutcome, Index, IndexError, IndexLocation, NewInstance, ObjectError, ObjectStorage,
};

/// Who sent an instance: recorded with it, the basis of delivery receipts.
#[derive(Debug, Clone)]
pub struct Sender {
    /// On whose behalf the instance is filed (the index's checkpoint sees it).
    pub principal: crate::access::Principal,
    /// Calling AE title for DIMSE, or the client identity for HTTP.
    pub source: String,
    /// Peer network address.
    pub address: String,
    /// For instances a peer server forwards: the facility they come from, which stands as the
    /// issuer of a Patient ID that has none, so that two facilities' local IDs never merge
    /// (issue #10 item 6). Recorded in the index only; the stored bytes are as received.
    pub origin_facility: Option<String>,
}

/// What ingest did with an instance that it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored and indexed.
    Stored,
    /// The same data set was already stored; nothing was written.
    Duplicate,
    /// Another data set is stored under this SOP Instance UID and was kept (policy keep-first).
    ConflictKept,
    /// The instance replaced another data set under this SOP Instance UID (policy overwrite).
    Replaced,
}

/// What the request carrying an instance announced about it; `None` where it said nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected<'a> {
    /// SOP Class UID (C-STORE Affected SOP Class UID).
    pub sop_class_uid: Option<&'a str>,
    /// SOP Instance UID (C-STORE Affected SOP Instance UID).
    pub sop_instance_uid: Option<&'a str>,
    /// Study Instance UID (the study in a STOW-RS URL).
    pub study_instance_uid: Option<&'a str>,
}

impl Expected<'_> {
    /// Nothing announced.
    pub const NOTHING: Expected<'static> = Expected {
        sop_class_uid: None,
        sop_instance_uid: None,
        study_instance_uid: None,
    };

    fn check(
        &self,
        attribute: &'static str,
        announced: Option<&str>,
        in_dataset: &str,
    ) -> Result<(), IngestError> {
        match announced.map(|v| v.trim_end_matches(['\0', ' '])) {
            Some(v) if v != in_dataset => Err(IngestError::Mismatch {
                attribute,
                in_dataset: in_dataset.to_string(),
                in_request: v.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// A successful ingest.
#[derive(Debug, Clone)]
pub struct IngestReport {
    /// The instance's indexed attributes.
    pub attributes: InstanceAttributes,
    /// What happened.
    pub outcome: IngestOutcome,
    /// Hex SHA-256 of the data set bytes.
    pub sha256: String,
}

/// Why an instance was refused. Nothing of a refused instance is left in the index.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not DICOM, truncated, or not decodable in its transfer syntax.
    #[error(transparent)]
    Unreadable(#[from] Part10Error),
    /// A unique key is missing or malformed.
    #[error("cannot file the instance: {0}")]
    MissingKey(#[from] UidError),
    /// The data set disagrees with the request that carried it (PS3.4 B.2.3, 0xA900).
    #[error("the data set's {attribute} {in_dataset:?} differs from the request's {in_request:?}")]
    Mismatch {
        /// Which attribute.
        attribute: &'static str,
        /// Its value in the data set.
        in_dataset: String,
        /// Its value in the request.
        in_request: String,
    },
    /// Another data set is stored under this SOP Instance UID and the policy is reject.
    #[error(
        "another instance with SOP Instance UID {0} is already stored (conflict policy: reject)"
    )]
    Conflict(String),
    /// Free disk space is below the configured minimum.
    #[error("storage is nearly full: {free_mb} MB free, minimum is {min_mb} MB")]
    DiskFull {
        /// Free megabytes.
        free_mb: u64,
        /// Configured minimum.
        min_mb: u64,
    },
    /// The object store failed.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Metadata could not be serialised.
    #[error("cannot serialise metadata: {0}")]
    Metadata(String),
    /// The node's journal of object writes (`data_dir/journal`) cannot be written.
    #[error("cannot note the object write in the journal: {0}")]
    Journal(std::io::Error),
}

/// Serialises ingest of the same SOP Instance UID, so two concurrent senders of one instance cannot
/// interleave their object write and index commit.
#[derive(Default)]
struct SopLocks {
    held: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SopLocks {
    fn entry(&self, sop: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.entry(sop.to_string()).or_default().clone()
    }

    fn release(&self, sop: &str) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = held.get(sop) {
            // Only the map and the caller hold it: nobody else is waiting.
            if Arc::strong_count(lock) <= 2 {
                held.remove(sop);
            }
        }
    }
}

/// The archive: object storage and index behind the ingest path. Cheap to clone.
#[derive(Clone)]
pub struct Archive {
    /// Object store: reached only through the archive's read and write paths (invariant 13).
    objects: ObjectStorage,
    /// Metadata index: its methods take the caller and pass one checkpoint.
    index: Index,
    /// Where data sets wait while they arrive.
    pub staging: Staging,
    policy: DuplicatePolicy,
    /// Triage models by routing; instances they match get a job with their index rows.
    triage: Arc<Vec<crate::triage::ModelManifest>>,
    priority_sources: Arc<Vec<String>>,
    /// Forwarding rules: an instance they match is queued per destination with its index rows.
    forward_rules: Arc<crate::forward::rules::ForwardRules>,
    data_dir: PathBuf,
    min_free_bytes: u64,
    locks: Arc<SopLocks>,
    /// The object writes in flight on this node, for start-up reconciliation.
    journal: WriteJournal,
}

impl Archive {
    /// The metadata index, whose every method names its caller (`access::Principal`).
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// The object store, for the integrity layer's verified reads and reconciliation.
    pub(crate) fn objects(&self) -> &ObjectStorage {
        &self.objects
    }

    /// Opens the archive in `config.data_dir` (objects under `objects/`, index in `index.sqlite`).
    pub fn open(config: &Config) -> Result<Archive, IngestError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ObjectError::CreateDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let objects = ObjectStorage::from_config(config)?;
        let journal =
            WriteJournal::open(&config.data_dir).map_err(|source| ObjectError::CreateDir {
                path: config.data_dir.join("journal").display().to_string(),
                source,
            })?;
        let location = IndexLocation::parse(config.index_url.as_deref(), &config.data_dir)?;
        let index = Index::open_at(&location, config.ingest.fsync)?.at_home(&config.data_dir);
        // Opening it removes what receptions interrupted by a crash left.
        let staging =
            Staging::open(&config.data_dir, staging_limits(config)).map_err(|source| {
                ObjectError::CreateDir {
                    path: config.data_dir.join("staging").display().to_string(),
                    source,
                }
            })?;
        let staging = if config.ingest.upload_while_receiving {
            staging.uploading_to(objects.clone(), journal.clone())
        } else {
            staging
        };
        Ok(Archive {
            objects,
            index,
            staging,
            triage: Arc::new(Vec::new()),
            priority_sources: Arc::new(config.triage.priority_sources.clone()),
            forward_rules: Arc::default(),
            policy: config.ingest.on_conflict,
            data_dir: config.data_dir.clone(),
            min_free_bytes: config.ingest.min_free_disk_mb * 1024 * 1024,
            locks: Arc::default(),
            journal,
        })
    }

    /// This node's journal of object writes in flight.
    pub(crate) fn journal(&self) -> &WriteJournal {
        &self.journal
    }

    /// Asks a remote object store one cheap question, so a wrong bucket, endpoint or credential
    /// fails start-up with what to set (a local folder was checked when it was opened).
    pub async fn check_object_store(&self) -> Result<(), IngestError> {
        Ok(self.objects.check_reachable().await?)
    }

    /// Where the objects are (a folder or `scheme://bucket/prefix`), for the start-up log.
    pub fn object_store_location(&self) -> &str {
        self.objects.location()
    }

    /// Routes newly stored instances to these models.
    pub fn with_triage(mut self, models: Vec<crate::triage::ModelManifest>) -> Self {
        self.triage = Arc::new(models);
        self
    }

    /// Queues newly stored instances for the destinations these rules give.
    pub fn with_forwarding(mut self, rules: crate::forward::rules::ForwardRules) -> Self {
        self.forward_rules = Arc::new(rules);
        self
    }

    /// The forwarding rules (triage applies those that wait for an AI flag).
    pub fn forward_rules(&self) -> &crate::forward::rules::ForwardRules {
        &self.forward_rules
    }

    /// The forwarding rules, shared.
    pub fn forward_rules_shared(&self) -> Arc<crate::forward::rules::ForwardRules> {
        self.forward_rules.clone()
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Fails when free space in the data folder is below the configured minimum.
    pub fn check_free_space(&self) -> Result<(), IngestError> {
        match fs4::available_space(&self.data_dir) {
            Ok(free) if free < self.min_free_bytes => Err(IngestError::DiskFull {
                free_mb: free / (1024 * 1024),
                min_mb: self.min_free_bytes / (1024 * 1024),
            }),
            // If the platform cannot tell, do not refuse work on a guess.
            _ => Ok(()),
        }
    }

    /// Ingests one instance. `expected` holds what the request that carried it announced
    /// (C-STORE's Affected SOP Class/Instance UID, the study of a STOW-RS URL); the data set must
    /// agree with each of them.
    pub async fn ingest(
        &self,
        received: ReceivedInstance,
        sender: &Sender,
        expected: &Expected<'_>,
    ) -> Result<IngestReport, IngestError> {
        self.check_free_space()?;
        let (source_ae, origin) = (sender.source.clone(), sender.origin_facility.clone());
        // Parsing, hashing and serialising are CPU work, and a malformed data set can make the
        // parser spend long on it (a bogus length it allocates for), so it never runs on the async
        // workers that serve every other association.
        let spooled = received.spooled.clone();
        let prepared =
            tokio::task::spawn_blocking(move || prepare(received, &source_ae, origin.as_deref()))
                .await
                .map_err(|e| IngestError::Index(IndexError::Task(e.to_string())))?;
        let result = match prepared {
            Ok(prepared) => self.check_and_file(prepared, sender, expected).await,
            Err(e) => Err(e),
        };
        // An upload made while the data set arrived and not filed (refused, a duplicate, a kept
        // conflict) is aborted before the answer goes, so nothing of it is left when the sender
        // hears the outcome.
        if let Some(upload) = spooled.and_then(|file| file.take_upload()) {
            upload.abandon().await;
        }
        result
    }

    /// Checks `prepared` against what the request announced, then files it, one writer per SOP
    /// Instance UID at a time on this node.
    async fn check_and_file(
        &self,
        prepared: Prepared,
        sender: &Sender,
        expected: &Expected<'_>,
    ) -> Result<IngestReport, IngestError> {
        let a = &prepared.attributes;
        expected.check(
            "SOP Class UID",
            expected.sop_class_uid,
            a.sop_class_uid.as_str(),
        )?;
        expected.check(
            "SOP Instance UID",
            expected.sop_instance_uid,
            a.sop_instance_uid.as_str(),
        )?;
        expected.check(
            "Study Instance UID",
            expected.study_instance_uid,
            a.study.study_instance_uid.as_str(),
        )?;

        let sop = a.sop_instance_uid.to_string();
        let size = prepared.size();
        let lock = self.locks.entry(&sop);
        let result = {
            let _guard = lock.lock().await;
            self.file(prepared, sender).await
        };
        drop(lock);
        self.locks.release(&sop);
        let outcome = match &result {
            Ok(r) => match r.outcome {
                IngestOutcome::Stored => "stored",
                IngestOutcome::Duplicate => "duplicate",
                IngestOutcome::ConflictKept => "conflict_kept",
                IngestOutcome::Replaced => "replaced",
            },
            Err(_) => "failed",
        };
        metrics::counter!("tramy_ingest_instances_total", "outcome" => outcome).increment(1);
        if matches!(&result, Ok(r) if r.outcome == IngestOutcome::Stored || r.outcome == IngestOutcome::Replaced)
        {
            metrics::counter!("tramy_ingest_bytes_total").increment(size);
        }
        result
    }

    async fn file(
        &self,
        mut prepared: Prepared,
        sender: &Sender,
    ) -> Result<IngestReport, IngestError> {
        let a = &prepared.attributes;
        // Decide before writing, so a duplicate or a kept conflict never touches the stored object.
        if let Some(existing) = self
            .index
            .instance_now(&sender.principal, &a.sop_instance_uid)?
        {
            if existing.sha256 == prepared.sha256 {
                return Ok(prepared.report(IngestOutcome::Duplicate));
            }
            match self.policy {
                DuplicatePolicy::KeepFirst => {
                    tracing::warn!(
                        sop_instance_uid = %a.sop_instance_uid,
                        source = %sender.source,
                        "different data set received under a stored SOP Instance UID; kept the first"
                    );
                    return Ok(prepared.report(IngestOutcome::ConflictKept));
                }
                DuplicatePolicy::Reject => {
                    tracing::warn!(
                        sop_instance_uid = %a.sop_instance_uid,
                        source = %sender.source,
                        "different data set received under a stored SOP Instance UID; rejected"
                    );
                    return Err(IngestError::Conflict(a.sop_instance_uid.to_string()));
                }
                DuplicatePolicy::Overwrite => {
                    tracing::warn!(
                        sop_instance_uid = %a.sop_instance_uid,
                        source = %sender.source,
                        "different data set received under a stored SOP Instance UID; overwriting"
                    );
                }
            }
        }

        let key = ObjectStorage::instance_key(
            &a.study.study_instance_uid,
            &a.series.series_instance_uid,
            &a.sop_instance_uid,
            &prepared.sha256,
        );
        let size = prepared.size() as i64;
        let entry = self.journal.begin(&key).map_err(IngestError::Journal)?;
        if let Err(e) = self.write_object(&key, &mut prepared).await {
            entry.settled();
            return Err(e);
        }
        let filed = self.file_written(key, size, prepared, sender).await;
        entry.settled();
        filed
    }

    /// Writes the object of `prepared` at `key`, whose name says which data set it is
    /// ([`ObjectStorage::instance_key`]): whatever else is written meanwhile under this SOP
    /// Instance UID, here or on another node, goes to another key, and the index decides.
    async fn write_object(&self, key: &str, prepared: &mut Prepared) -> Result<(), IngestError> {
        let header = Bytes::from(std::mem::take(&mut prepared.file_header));
        match std::mem::replace(&mut prepared.dataset, Body::InMemory(Bytes::new())) {
            Body::InMemory(dataset) => self.objects.put(key, vec![header, dataset]).await?,
            Body::Spooled(file) => {
                if file_uploaded_while_receiving(&file, key, &header).await {
                    return Ok(());
                }
                self.objects.put_spooled(key, header, file).await?
            }
        }
        Ok(())
    }

    /// Files the index rows of `prepared`, whose object is written at `key`; the object is
    /// removed again when the index filed none for it.
    async fn file_written(
        &self,
        key: String,
        size: i64,
        prepared: Prepared,
        sender: &Sender,
    ) -> Result<IngestReport, IngestError> {
        let a = &prepared.attributes;

        let new = NewInstance {
            attributes: prepared.attributes.clone(),
            transfer_syntax_uid: prepared.transfer_syntax,
            object_key: key.clone(),
            size_bytes: size,
            sha256: prepared.sha256.clone(),
            source: sender.source.clone(),
            source_address: sender.address.clone(),
            metadata_json: prepared.metadata_json,
            // tramy's own reports are never triaged.
            triage_models: self
                .triage
                .iter()
                .filter(|_| sender.source != crate::triage::sr::AI_SOURCE)
                .filter(|m| {
                    m.routes(&crate::triage::manifest::RoutingKeys {
                        modality: &a.series.modality,
                        sop_class: a.sop_class_uid.as_str(),
                        body_part: &a.series.body_part_examined,
                        photometric: &a.photometric_interpretation,
                        descriptions: &[&a.study.study_description, &a.series.series_description],
                    })
                })
                .map(|m| m.name.clone())
                .collect(),
            triage_priority: if self
                .priority_sources
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&sender.source))
            {
                10
            } else {
                0
            },
            received_at: None,
            facility: sender.principal.facility().map(str::to_owned),
            forward: self
                .forward_rules
                .on_arrival(crate::forward::rules::Arrival {
                    modality: &a.series.modality,
                    facility: sender
                        .principal
                        .facility()
                        .unwrap_or(crate::registry::LOCAL_FACILITY),
                }),
            forward_with_study: sender.source == crate::triage::sr::AI_SOURCE,
        };
        let report = |outcome| IngestReport {
            attributes: prepared.attributes.clone(),
            outcome,
            sha256: prepared.sha256.clone(),
        };
        let committed = self
            .index
            .commit_instance(&sender.principal, new, self.policy)
            .await;
        if let Ok(
            CommitOutcome::Duplicate
            | CommitOutcome::ConflictKept
            | CommitOutcome::ConflictRejected,
        ) = committed
        {
            self.remove_unfiled(sender, &prepared.attributes.sop_instance_uid, &key)
                .await;
        }
        match committed {
            Ok(CommitOutcome::Stored) => Ok(report(IngestOutcome::Stored)),
            Ok(CommitOutcome::Duplicate) => Ok(report(IngestOutcome::Duplicate)),
            Ok(CommitOutcome::ConflictKept) => Ok(report(IngestOutcome::ConflictKept)),
            Ok(CommitOutcome::ConflictRejected) => Err(IngestError::Conflict(
                prepared.attributes.sop_instance_uid.to_string(),
            )),
            Ok(CommitOutcome::Replaced {
                previous_object_key,
            }) => {
                if let Some(old) = previous_object_key {
                    if let Err(e) = self.objects.delete(&old).await {
                        tracing::warn!(error = %e, key = %old, "replaced object not deleted; it stays unindexed (its SOP Instance UID is indexed with the new data set)");
                    }
                }
                Ok(report(IngestOutcome::Replaced))
            }
            Err(e) => {
                // The object has no index row: remove it now rather than wait for reconciliation,
                // unless another instance row refers to it (a previous version at the same key).
                if !self
                    .index
                    .refers_to(
                        &sender.principal,
                        &prepared.attributes.sop_instance_uid,
                        &key,
                    )
                    .await
                    .unwrap_or(true)
                {
                    let _ = self.objects.delete(&key).await;
                }
                Err(e.into())
            }
        }
    }

    /// Removes the object just written at `key` when the index filed another under its SOP
    /// Instance UID meanwhile (another node's, or another association's, write of the same
    /// instance won): unacknowledged as stored and referred to by no row, it would only be an
    /// orphan.
    async fn remove_unfiled(&self, sender: &Sender, sop: &SopInstanceUid, key: &str) {
        if let Ok(false) = self.index.refers_to(&sender.principal, sop, key).await {
            if let Err(e) = self.objects.delete(key).await {
                tracing::warn!(error = %e, "an object the index did not file was not removed");
            }
        }
    }

    /// Files index rows for an object that is already in the object store under `key` (recovery:
    /// see `integrity::reindex`). The same parsing and checks as [`Archive::ingest`]; nothing is
    /// written to the object store, no triage job is queued (this is not an arrival), and a SOP
    /// Instance UID already indexed with other bytes keeps its row.
    pub async fn index_existing(
        &self,
        received: ReceivedInstance,
        key: &str,
        size_bytes: i64,
        sender: &Sender,
        received_at: String,
    ) -> Result<IngestOutcome, IngestError> {
        let source_ae = sender.source.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(received, &source_ae, None))
            .await
            .map_err(|e| IngestError::Index(IndexError::Task(e.to_string())))??;
        let new = NewInstance {
            attributes: prepared.attributes,
            transfer_syntax_uid: prepared.transfer_syntax,
            object_key: key.to_string(),
            size_bytes,
            sha256: prepared.sha256,
            source: sender.source.clone(),
            source_address: sender.address.clone(),
            metadata_json: prepared.metadata_json,
            triage_models: Vec::new(),
            triage_priority: 0,
            received_at: Some(received_at),
            facility: None,
            // Re-indexing is not an arrival: nothing is forwarded again.
            forward: Vec::new(),
            forward_with_study: false,
        };
        Ok(
            match self
                .index
                .commit_instance(&sender.principal, new, DuplicatePolicy::KeepFirst)
                .await?
            {
                CommitOutcome::Stored => IngestOutcome::Stored,
                CommitOutcome::Duplicate => IngestOutcome::Duplicate,
                _ => IngestOutcome::ConflictKept,
            },
        )
    }
}

/// Files at `key` the upload `file` made while it arrived, when it began with `header` (what
/// ingest would write: a data set whose UIDs differ from its C-STORE command's was refused
/// before this). Says whether it did; when not, the upload is aborted and the object is written
/// from the staging file.
async fn file_uploaded_while_receiving(file: &SpooledFile, key: &str, header: &[u8]) -> bool {
    let Some(upload) = file.take_upload() else {
        return false;
    };
    if upload.header() != header {
        upload.abandon().await;
        return false;
    }
    match upload.file_at(key).await {
        Ok(()) => {
            metrics::counter!("tramy_ingest_uploaded_while_receiving_total").increment(1);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "the upload made while receiving was not filed; writing the object again");
            false
        }
    }
}

/// An instance parsed and ready to be filed.
struct Prepared {
    attributes: InstanceAttributes,
    transfer_syntax: String,
    sha256: String,
    metadata_json: String,
    /// Preamble and meta group of the stored file.
    file_header: Vec<u8>,
    /// The data set bytes as received, stored after the header without a copy.
    dataset: Body,
    /// Its share of the receive memory budget, kept until the object is written.
    _memory_hold: Option<Arc<crate::store::staging::MemoryHold>>,
}

/// Where the data set bytes of a prepared instance are.
enum Body {
    InMemory(Bytes),
    Spooled(Arc<SpooledFile>),
}

impl Prepared {
    fn size(&self) -> u64 {
        self.file_header.len() as u64
            + match &self.dataset {
                Body::InMemory(b) => b.len() as u64,
                Body::Spooled(f) => f.len(),
            }
    }

    fn report(&self, outcome: IngestOutcome) -> IngestReport {
        IngestReport {
            attributes: self.attributes.clone(),
            outcome,
            sha256: self.sha256.clone(),
        }
    }
}

fn prepare(
    received: ReceivedInstance,
    source_ae: &str,
    origin_facility: Option<&str>,
) -> Result<Prepared, IngestError> {
    let dataset = received.parse()?;
    let mut attributes = InstanceAttributes::from_dataset(&dataset)?;
    let patient = &mut attributes.patient;
    if let Some(origin) = origin_facility {
        if patient.issuer_of_patient_id.is_empty() && !patient.patient_id.is_empty() {
            patient.issuer_of_patient_id = origin.to_string();
        }
    }
    let metadata_json =
        metadata_json(&dataset).map_err(|e| IngestError::Metadata(e.to_string()))?;
    let file_header = received.file_header(
        attributes.sop_class_uid.as_str(),
        attributes.sop_instance_uid.as_str(),
        Some(source_ae),
    )?;
    Ok(Prepared {
        sha256: hex::encode(received.sha256()),
        transfer_syntax: received.transfer_syntax,
        attributes,
        metadata_json,
        file_header,
        _memory_hold: received.memory_hold,
        dataset: match received.spooled {
            Some(file) => Body::Spooled(file),
            None => Body::InMemory(received.dataset),
        },
    })
}

/// The staging limits `config` sets (`[ingest]`).
pub fn staging_limits(config: &Config) -> StagingLimits {
    const MB: u64 = 1024 * 1024;
    StagingLimits {
        spool_above: usize::try_from(config.ingest.spool_above_kb.saturating_mul(1024))
            .unwrap_or(usize::MAX),
        memory_budget: usize::try_from(config.ingest.receive_memory_mb.saturating_mul(MB))
            .unwrap_or(usize::MAX),
        max_instance: config.ingest.max_instance_mb.saturating_mul(MB),
    }
}
