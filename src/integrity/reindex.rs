//! Indexing objects that have no index rows.
//!
//! Objects are self-describing Part 10 files (tramy's own File Meta group, then the data set as
//! received), so the index can always be rebuilt from them. An object without index rows is
//! never deleted: it may be an acknowledged instance whose rows were lost (an index restored
//! from an older backup, a lost WAL) or whose commit a crash interrupted. Start-up runs
//! [`reconcile`] before the listeners accept work; `tramy reindex` runs [`reindex`] with a
//! progress bar for disaster recovery. Both are idempotent.

use crate::access::Principal;
use std::collections::HashSet;
use std::io::Cursor;

use bytes::Bytes;
use dicom_object::meta::FileMetaTable;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::dicom::ReceivedInstance;
use crate::ingest::{Archive, IngestError, IngestOutcome, Sender};
use crate::store::objects::{ListedObject, ObjectStorage};
use crate::store::write_journal::UnsettledWrite;
use crate::store::{IndexError, ObjectError};

/// What a re-index found.
#[derive(Debug, Default, Serialize)]
pub struct ReindexSummary {
    /// Objects in the store.
    pub objects: usize,
    /// Objects that had index rows already.
    pub already_indexed: usize,
    /// Objects indexed now.
    pub indexed: usize,
    /// Objects whose SOP Instance UID is indexed with another object (a copy or an older
    /// version); left in place, unindexed.
    pub superseded: Vec<String>,
    /// Objects that are not readable instances; left in place, with the reason.
    pub unreadable: Vec<(String, String)>,
    /// Staging files of interrupted writes removed (never acknowledged).
    pub interrupted_writes_removed: usize,
}

/// Why a re-index could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    /// Listing or cleaning the object store failed.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Start-up reconciliation of every object: removes staging files of interrupted writes (never
/// acknowledged), then indexes every object without index rows; settles the journal.
pub async fn reconcile(archive: &Archive) -> Result<ReindexSummary, ReindexError> {
    let mut summary = run(archive, ProgressBar::hidden()).await?;
    summary.interrupted_writes_removed += settle_journal(archive).await?;
    Ok(summary)
}

/// Removes the journal's entries: a full pass has reconciled every object they name, but for
/// uploads a reception left at a provisional key, which it removes. Returns how many.
async fn settle_journal(archive: &Archive) -> Result<usize, ReindexError> {
    let mut removed = 0;
    for write in archive
        .journal()
        .unsettled()
        .map_err(ObjectError::Cleanup)?
    {
        if removed_if_provisional(archive, &write).await? {
            removed += 1;
        }
        write.settled().map_err(ObjectError::Cleanup)?;
    }
    Ok(removed)
}

/// Removes the object of `write` when it is an upload begun while its data set arrived and
/// never filed at its final key (the reception or the filing was cut off): it was never
/// acknowledged. Says whether it was one.
async fn removed_if_provisional(
    archive: &Archive,
    write: &UnsettledWrite,
) -> Result<bool, ReindexError> {
    if !ObjectStorage::is_provisional(&write.key) {
        return Ok(false);
    }
    archive.objects().delete(&write.key).await?;
    Ok(true)
}

/// Start-up reconciliation of the journal: removes staging files of interrupted writes (never
/// acknowledged), then settles the object writes this node's journal says were in flight when it stopped:
/// each object written but not indexed is indexed (the commit may have been interrupted after
/// it was acknowledged), each entry removed. The rest of the object store is not listed: that
/// is `tramy reindex` (after restoring an older index).
pub async fn reconcile_journal(archive: &Archive) -> Result<ReindexSummary, ReindexError> {
    let interrupted = remove_interrupted_writes(archive).await?;
    let unsettled = archive
        .journal()
        .unsettled()
        .map_err(ObjectError::Cleanup)?;
    let mut summary = ReindexSummary {
        objects: unsettled.len(),
        interrupted_writes_removed: interrupted,
        ..ReindexSummary::default()
    };
    for write in unsettled {
        if removed_if_provisional(archive, &write).await? {
            summary.interrupted_writes_removed += 1;
        } else if archive
            .index()
            .object_is_indexed(&Principal::system(), &write.key)
            .await?
        {
            summary.already_indexed += 1;
        } else {
            let object = ListedObject {
                key: write.key.clone(),
                last_modified: write.began,
            };
            match index_object(archive, &object).await {
                // Never written: the write failed or was cancelled before the object existed.
                Err(ObjectFault::Unreadable(reason)) if reason == GONE => {}
                indexed => summary.count(object.key, indexed)?,
            }
        }
        write.settled().map_err(ObjectError::Cleanup)?;
    }
    Ok(summary)
}

/// Why an object listed or journaled cannot be indexed: it is not there.
const GONE: &str = "gone";

/// `tramy reindex`: [`reconcile`] with a progress bar on the terminal.
pub async fn reindex(archive: &Archive) -> Result<ReindexSummary, ReindexError> {
    let provisional_removed = settle_journal(archive).await?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} objects  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let summary = run(archive, bar.clone()).await;
    bar.finish_and_clear();
    summary.map(|mut s| {
        s.interrupted_writes_removed += provisional_removed;
        s
    })
}

async fn run(archive: &Archive, bar: ProgressBar) -> Result<ReindexSummary, ReindexError> {
    let interrupted = remove_interrupted_writes(archive).await?;
    let indexed: HashSet<String> = archive.index().object_keys(&Principal::system()).await?;
    let listed = archive.objects().list_instances().await?;
    let mut summary = ReindexSummary {
        objects: listed.len(),
        interrupted_writes_removed: interrupted,
        ..ReindexSummary::default()
    };
    bar.set_length(listed.len() as u64);
    for object in listed {
        bar.inc(1);
        if indexed.contains(&object.key) {
            summary.already_indexed += 1;
            continue;
        }
        let indexed = index_object(archive, &object).await;
        summary.count(object.key, indexed)?;
    }
    Ok(summary)
}

/// Removes the staging files of local writes a crash interrupted (never acknowledged).
async fn remove_interrupted_writes(archive: &Archive) -> Result<usize, ReindexError> {
    let objects = archive.objects().clone();
    Ok(
        tokio::task::spawn_blocking(move || objects.remove_interrupted_writes())
            .await
            .map_err(|e| IndexError::Task(e.to_string()))?
            .map_err(ObjectError::Cleanup)?,
    )
}

impl ReindexSummary {
    /// Counts what indexing the unindexed object at `key` did; an archive failure stops the pass.
    fn count(
        &mut self,
        key: String,
        indexed: Result<IngestOutcome, ObjectFault>,
    ) -> Result<(), ReindexError> {
        match indexed {
            Ok(IngestOutcome::Stored) => self.indexed += 1,
            Ok(_) => self.superseded.push(key),
            Err(ObjectFault::Unreadable(reason)) => self.unreadable.push((key, reason)),
            Err(ObjectFault::Archive(e)) => return Err(e),
        }
        Ok(())
    }
}

enum ObjectFault {
    /// The object is not a readable instance.
    Unreadable(String),
    /// The archive itself failed.
    Archive(ReindexError),
}

async fn index_object(
    archive: &Archive,
    object: &ListedObject,
) -> Result<IngestOutcome, ObjectFault> {
    let file = match archive.objects().get(&object.key).await {
        Ok(file) => file,
        // Removed since it was listed.
        Err(ObjectError::NotFound) => return Err(ObjectFault::Unreadable(GONE.into())),
        Err(e) => return Err(ObjectFault::Archive(e.into())),
    };
    let size = file.len() as i64;
    let sender = Sender {
        principal: Principal::system(),
        source: source_ae_title(&file).unwrap_or_else(|| "REINDEX".into()),
        address: "reindex".into(),
        origin_facility: None,
    };
    let received =
        ReceivedInstance::from_part10(file).map_err(|e| ObjectFault::Unreadable(e.to_string()))?;
    let received_at = chrono::DateTime::<chrono::Utc>::from(object.last_modified)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match archive
        .index_existing(received, &object.key, size, &sender, received_at)
        .await
    {
        Ok(outcome) => Ok(outcome),
        Err(IngestError::Index(e)) => Err(ObjectFault::Archive(e.into())),
        Err(IngestError::Object(e)) => Err(ObjectFault::Archive(e.into())),
        Err(e) => Err(ObjectFault::Unreadable(e.to_string())),
    }
}

/// The Source Application Entity Title (0002,0016) tramy wrote into the meta group: the calling
/// AE title the instance arrived from.
fn source_ae_title(file: &Bytes) -> Option<String> {
    let meta = FileMetaTable::from_reader(&mut Cursor::new(file.get(128..)?)).ok()?;
    meta.source_application_entity_title
        .map(|ae| ae.trim_end_matches(['\0', ' ']).to_string())
        .filter(|ae| !ae.is_empty())
}
