//! Where data sets wait while they arrive: in memory while small (the common case, kept fast), in
//! a staging file under `data_dir/staging/` once they grow past a threshold or the process-wide
//! in-memory budget is spent, so receiving costs bounded memory whatever the sender does.
//!
//! The SHA-256 of a spooled data set is computed as its bytes are written, so ingest never reads
//! it again just to identify it. Staging files are [`tempfile::NamedTempFile`]s: dropped on every
//! path (stored, refused, aborted, disconnected, timed out), they are removed; a crash can leave
//! them, and [`remove_leftovers`] clears the folder at start-up.
//!
//! A spilled data set whose stored header is known before it arrives (a C-STORE names its SOP
//! Class and Instance in the command, its transfer syntax in the presentation context) is also
//! uploaded to the object store as it arrives ([`Staging::uploading_to`]): a multipart upload to
//! a provisional key, completed and moved to its final key once ingest has checked it, so a
//! large instance is stored moments after its last byte instead of after a second pass over
//! the staging file. The staging file stays, for the parse that checks it.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::objects::{ObjectError, ObjectStorage, ObjectUpload, UPLOAD_MEMORY};
use super::write_journal::{JournalEntry, WriteJournal};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

/// The folder under the data folder that holds staging files.
pub const STAGING_DIR: &str = "staging";

/// Bytes gathered before one write to a staging file (fewer, larger writes off the async workers).
const WRITE_BATCH: usize = 1024 * 1024;

/// Errors of staging.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// The staging file could not be created or written.
    #[error("cannot write the staging file: {0}")]
    Io(#[from] std::io::Error),
    /// A blocking write task failed.
    #[error("staging task failed: {0}")]
    Task(String),
}

/// Removes every file in `data_dir/staging/`: the receptions a crash interrupted. Run at start-up,
/// before listeners accept work. Returns how many were removed.
pub fn remove_leftovers(data_dir: &Path) -> std::io::Result<usize> {
    let dir = data_dir.join(STAGING_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Makes the allocator hand buffers of 1 MiB and more straight back to the operating system when
/// they are freed. glibc otherwise raises its mmap threshold each time such a buffer is freed, so
/// later ones come from its heaps, which keep freed memory: three 512 MB uploads left some 200 MB
/// of RSS held for good. Call once at start-up, before threads start.
pub fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

/// Limits on what receptions may hold in memory and in total.
#[derive(Debug, Clone, Copy)]
pub struct StagingLimits {
    /// A data set larger than this goes to a staging file.
    pub spool_above: usize,
    /// All receptions together hold at most this much in memory; beyond it, they spill earlier.
    pub memory_budget: usize,
    /// A larger data set is refused (read and discarded).
    pub max_instance: u64,
}

/// The staging area: its folder, its limits and the in-memory budget shared by all receptions.
#[derive(Debug, Clone)]
pub struct Staging {
    dir: PathBuf,
    limits: StagingLimits,
    in_memory: Arc<AtomicUsize>,
    /// Where spilled data sets with a known header are uploaded while they arrive.
    uploads: Option<UploadTarget>,
}

/// The object store (and this node's journal of writes) of uploads made while data sets arrive.
#[derive(Debug, Clone)]
struct UploadTarget {
    objects: ObjectStorage,
    journal: WriteJournal,
}

impl Staging {
    /// Opens `data_dir/staging/`, creating it and removing what an earlier run left behind.
    pub fn open(data_dir: &Path, limits: StagingLimits) -> std::io::Result<Staging> {
        let dir = data_dir.join(STAGING_DIR);
        std::fs::create_dir_all(&dir)?;
        let removed = remove_leftovers(data_dir)?;
        if removed > 0 {
            tracing::info!(
                removed,
                "removed staging files of receptions an earlier run left"
            );
        }
        Ok(Staging {
            dir,
            limits,
            in_memory: Arc::default(),
            uploads: None,
        })
    }

    /// Uploads spilled data sets whose stored header is known ([`Self::spool_object`]) to
    /// `objects` while they arrive, each journaled in `journal` under its provisional key.
    pub fn uploading_to(mut self, objects: ObjectStorage, journal: WriteJournal) -> Staging {
        self.uploads = Some(UploadTarget { objects, journal });
        self
    }

    /// The limits.
    pub fn limits(&self) -> StagingLimits {
        self.limits
    }

    /// Starts receiving one data set, refused past `max` bytes (at most the configured maximum).
    pub fn spool(&self, max: Option<u64>) -> Spool {
        self.spool_object(max, None)
    }

    /// [`Self::spool`] for a data set that will be stored behind `header` (the Part 10 header
    /// ingest will write, when known before the data set arrives): once it spills, it is also
    /// uploaded as it arrives, when [`Self::uploading_to`] named a store.
    pub fn spool_object(&self, max: Option<u64>, header: Option<Vec<u8>>) -> Spool {
        let max = max.map_or(self.limits.max_instance, |m| {
            m.min(self.limits.max_instance)
        });
        Spool {
            staging: self.clone(),
            max,
            memory: BytesMut::new(),
            reserved: 0,
            file: None,
            pending: Vec::new(),
            total: 0,
            header: header.filter(|_| self.uploads.is_some()).map(Bytes::from),
            upload: None,
        }
    }

    /// How many bytes receptions hold in memory now (for tests and metrics).
    pub fn in_memory(&self) -> usize {
        self.in_memory.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes of the budget, or says no without taking any.
    fn try_reserve(&self, n: usize) -> bool {
        self.in_memory
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n)
                    .filter(|&total| total <= self.limits.memory_budget)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.in_memory.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A staging file being written, with the running hash of what was written.
struct Writer {
    file: NamedTempFile,
    hasher: Sha256,
}

/// One data set being received.
pub struct Spool {
    staging: Staging,
    max: u64,
    memory: BytesMut,
    /// Budget bytes held for `memory`.
    reserved: usize,
    /// Once spilled: the staging file (taken while a write is in flight).
    file: Option<Writer>,
    /// Bytes waiting for the next batched write.
    pending: Vec<u8>,
    total: u64,
    /// The stored header, until an upload while receiving begins with it.
    header: Option<Bytes>,
    /// The upload while receiving, once spilled.
    upload: Option<UploadInFlight>,
}

/// A data set in a staging file, with its SHA-256. The file is removed when this is dropped.
pub struct SpooledFile {
    file: NamedTempFile,
    len: u64,
    sha256: [u8; 32],
    /// Its upload while it arrived, until ingest takes it (boxed: most files have none).
    upload: std::sync::Mutex<Option<Box<UploadInFlight>>>,
}

impl std::fmt::Debug for SpooledFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpooledFile({} bytes)", self.len)
    }
}

impl SpooledFile {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// SHA-256 of its bytes, computed as they arrived.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Takes the upload made while it arrived (whole, not yet completed), if there was one and
    /// it did not fail.
    pub fn take_upload(&self) -> Option<UploadInFlight> {
        self.upload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|upload| *upload)
    }

    /// Reads `len` bytes at `offset` (fewer at the end of the file). Blocking.
    pub fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let len = len.min(self.len.saturating_sub(offset) as usize);
        let mut buf = vec![0u8; len];
        self.file.as_file().read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// A data set's object, uploaded while the data set arrived to a provisional key journaled on
/// this node: preceded by the header it was begun with, not yet completed. Filed at its final
/// key by [`UploadInFlight::file_at`]; dropped, it is aborted and leaves nothing.
pub struct UploadInFlight {
    /// `None` once filed.
    upload: Option<ObjectUpload>,
    header: Bytes,
    entry: Option<JournalEntry>,
    /// Its buffers' share of the receive memory budget.
    _memory: MemoryHold,
}

impl std::fmt::Debug for UploadInFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UploadInFlight({:?})", self.upload)
    }
}

impl UploadInFlight {
    /// Journals a provisional key, begins the upload there and writes `header` first.
    async fn begin(
        target: &UploadTarget,
        header: Bytes,
        memory: MemoryHold,
    ) -> Result<UploadInFlight, ObjectError> {
        let key = ObjectStorage::provisional_key();
        let entry = target.journal.begin(&key).map_err(ObjectError::Journal)?;
        let mut upload = UploadInFlight {
            upload: Some(target.objects.begin_upload(&key).await?),
            header: header.clone(),
            entry: Some(entry),
            _memory: memory,
        };
        upload.write(&header).await?;
        metrics::counter!("tramy_receive_uploads_begun_total").increment(1);
        Ok(upload)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ObjectError> {
        match self.upload.as_mut() {
            Some(upload) => upload.write(bytes).await,
            None => Err(ObjectError::NotFound),
        }
    }

    /// The header the object begins with: ingest files the upload only if it is the header it
    /// would write itself.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Completes the upload and moves it to `key`. On failure the journal entry stays, so the
    /// next start-up removes whatever is left at the provisional key.
    pub async fn file_at(mut self, key: &str) -> Result<(), ObjectError> {
        let Some(upload) = self.upload.take() else {
            return Err(ObjectError::NotFound);
        };
        let entry = self.entry.take();
        upload.file_at(key).await?;
        if let Some(entry) = entry {
            entry.settled();
        }
        Ok(())
    }
}

impl UploadInFlight {
    /// Aborts the upload and settles its journal entry once the store let go of its parts.
    pub async fn abandon(mut self) {
        if let Some(upload) = self.upload.take() {
            upload.abort().await;
        }
        if let Some(entry) = self.entry.take() {
            entry.settled();
        }
    }
}

impl Drop for UploadInFlight {
    fn drop(&mut self) {
        // Never completed: aborting the upload (its own drop) leaves no object to reconcile.
        if self.upload.is_some() {
            if let Some(entry) = self.entry.take() {
                entry.settled();
            }
        }
    }
}

/// A share of the in-memory budget, given back when dropped: a small data set keeps its share
/// until ingest is done with it, so finished receptions count as much as running ones.
#[derive(Debug, Default)]
pub struct MemoryHold {
    in_memory: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for MemoryHold {
    fn drop(&mut self) {
        self.in_memory.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What a finished reception holds.
#[derive(Debug)]
pub enum Received {
    /// A small data set, in memory, with its share of the budget.
    InMemory(Bytes, MemoryHold),
    /// A large one, in a staging file.
    Spooled(SpooledFile),
    /// It was larger than allowed; its bytes were read and discarded.
    TooLarge {
        /// How many bytes arrived.
        received: u64,
        /// The limit it exceeded.
        max: u64,
    },
}

impl Spool {
    /// Adds the next bytes of the data set.
    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), StagingError> {
        let was = self.total;
        self.total += chunk.len() as u64;
        if self.total > self.max {
            // Refused: let go of what is held, keep counting so the sender can finish.
            if was <= self.max {
                metrics::counter!("tramy_receive_refused_too_large_total").increment(1);
                self.discard();
            }
            return Ok(());
        }
        if self.file.is_none() {
            let wanted = self.memory.len() + chunk.len();
            if wanted <= self.staging.limits.spool_above && self.staging.try_reserve(chunk.len()) {
                self.reserved += chunk.len();
                self.memory.extend_from_slice(chunk);
                return Ok(());
            }
            self.spill()?;
        }
        self.pending.extend_from_slice(chunk);
        if self.pending.len() >= WRITE_BATCH {
            self.write_pending().await?;
        }
        Ok(())
    }

    /// Ends the reception.
    pub async fn finish(mut self) -> Result<Received, StagingError> {
        if self.total > self.max {
            return Ok(Received::TooLarge {
                received: self.total,
                max: self.max,
            });
        }
        if self.file.is_none() {
            let bytes = std::mem::take(&mut self.memory).freeze();
            let hold = MemoryHold {
                in_memory: self.staging.in_memory.clone(),
                bytes: std::mem::take(&mut self.reserved),
            };
            return Ok(Received::InMemory(bytes, hold));
        }
        self.write_pending().await?;
        let writer = self
            .file
            .take()
            .ok_or_else(|| StagingError::Task("staging file lost".into()))?;
        Ok(Received::Spooled(SpooledFile {
            file: writer.file,
            len: self.total,
            sha256: writer.hasher.finalize().into(),
            upload: std::sync::Mutex::new(self.upload.take().map(Box::new)),
        }))
    }

    /// Moves what is in memory into a new staging file.
    fn spill(&mut self) -> Result<(), StagingError> {
        let file = tempfile::Builder::new()
            .prefix("rx-")
            .tempfile_in(&self.staging.dir)?;
        metrics::counter!("tramy_receive_spooled_total").increment(1);
        self.file = Some(Writer {
            file,
            hasher: Sha256::new(),
        });
        // One batch buffer for the whole reception, sized once.
        self.pending = Vec::with_capacity(WRITE_BATCH.max(self.memory.len()) * 2);
        self.pending.extend_from_slice(&self.memory);
        self.memory = BytesMut::new();
        self.staging.release(std::mem::take(&mut self.reserved));
        Ok(())
    }

    /// Hashes and writes the pending batch off the async workers.
    async fn write_pending(&mut self) -> Result<(), StagingError> {
        let Some(mut writer) = self.file.take() else {
            return Ok(());
        };
        let batch = std::mem::take(&mut self.pending);
        let (writer, mut batch, result) = tokio::task::spawn_blocking(move || {
            writer.hasher.update(&batch);
            let result = writer.file.as_file_mut().write_all(&batch);
            (writer, batch, result)
        })
        .await
        .map_err(|e| StagingError::Task(e.to_string()))?;
        self.file = Some(writer);
        result?;
        self.upload_pending(&batch).await;
        batch.clear();
        self.pending = batch;
        Ok(())
    }

    /// Adds `batch` to the upload while receiving, beginning it with the header first. A failed
    /// upload is dropped (aborted) and the reception goes on: ingest then writes the object from
    /// the staging file, and reports the store's failure if it persists.
    async fn upload_pending(&mut self, batch: &[u8]) {
        if let (Some(header), Some(target)) = (self.header.take(), &self.staging.uploads) {
            // An upload's buffers count against the receive budget: past it, the data set is
            // uploaded once whole instead, so concurrent large receptions cannot add up.
            if !self.staging.try_reserve(UPLOAD_MEMORY) {
                return;
            }
            let hold = MemoryHold {
                in_memory: self.staging.in_memory.clone(),
                bytes: UPLOAD_MEMORY,
            };
            match UploadInFlight::begin(target, header, hold).await {
                Ok(upload) => self.upload = Some(upload),
                Err(e) => {
                    tracing::warn!(error = %e, "upload while receiving not begun; the instance is written once whole")
                }
            }
        }
        let Some(upload) = self.upload.as_mut() else {
            return;
        };
        if let Err(e) = upload.write(batch).await {
            tracing::warn!(error = %e, "upload while receiving failed; the instance is written once whole");
            self.upload = None;
        }
    }

    fn discard(&mut self) {
        self.memory = BytesMut::new();
        self.pending = Vec::new();
        self.header = None;
        self.upload = None;
        self.staging.release(std::mem::take(&mut self.reserved));
        // Dropping the writer removes its file.
        self.file = None;
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.staging.release(std::mem::take(&mut self.reserved));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staging(dir: &Path, spool_above: usize, budget: usize, max: u64) -> Staging {
        Staging::open(
            dir,
            StagingLimits {
                spool_above,
                memory_budget: budget,
                max_instance: max,
            },
        )
        .unwrap()
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(STAGING_DIR)).unwrap().count()
    }

    #[tokio::test]
    async fn small_data_sets_stay_in_memory_and_large_ones_spill_with_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let s = staging(dir.path(), 100, 1000, 10_000);
        let mut small = s.spool(None);
        small.push(b"abc").await.unwrap();
        let received = small.finish().await.unwrap();
        assert!(matches!(&received, Received::InMemory(b, _) if &b[..] == b"abc"));
        assert_eq!(s.in_memory(), 3, "held until ingest is done with it");
        drop(received);
        assert_eq!(s.in_memory(), 0);

        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut large = s.spool(None);
        for chunk in data.chunks(70) {
            large.push(chunk).await.unwrap();
        }
        let Received::Spooled(file) = large.finish().await.unwrap() else {
            panic!("not spooled")
        };
        assert_eq!(file.read_at(0, 5000).unwrap(), data);
        assert_eq!(file.sha256(), <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(files(dir.path()), 1);
        drop(file);
        assert_eq!(files(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_spent_budget_spills_early_and_over_limit_data_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let s = staging(dir.path(), 100, 60, 500);
        let mut first = s.spool(None);
        first.push(&[1; 50]).await.unwrap();
        let mut second = s.spool(None);
        second.push(&[2; 50]).await.unwrap();
        assert_eq!(files(dir.path()), 1, "the second spilled: budget spent");
        assert!(matches!(
            first.finish().await.unwrap(),
            Received::InMemory(..)
        ));
        assert!(matches!(
            second.finish().await.unwrap(),
            Received::Spooled(_)
        ));

        let mut big = s.spool(None);
        for _ in 0..10 {
            big.push(&[3; 80]).await.unwrap();
        }
        assert_eq!(files(dir.path()), 0, "over the limit: staging file removed");
        assert!(matches!(
            big.finish().await.unwrap(),
            Received::TooLarge {
                received: 800,
                max: 500
            }
        ));
        assert_eq!(s.in_memory(), 0);
    }

    /// Files under `dir`, recursively, as paths relative to it.
    fn tree(dir: &Path) -> Vec<String> {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
            .collect()
    }

    fn uploading(dir: &Path, budget: usize) -> (Staging, ObjectStorage, WriteJournal) {
        let objects = ObjectStorage::local(&dir.join("objects"), false).unwrap();
        let journal = WriteJournal::open(dir).unwrap();
        let s = staging(dir, 100, budget, 1 << 30).uploading_to(objects.clone(), journal.clone());
        (s, objects, journal)
    }

    /// Budget for the receptions of a test and one upload's buffers.
    const ONE_UPLOAD: usize = UPLOAD_MEMORY + 1000;

    #[tokio::test]
    async fn a_spilled_data_set_is_uploaded_while_it_arrives_and_filed_at_its_final_key() {
        let dir = tempfile::tempdir().unwrap();
        let (s, objects, journal) = uploading(dir.path(), ONE_UPLOAD);
        let data: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 251) as u8).collect();
        let mut spool = s.spool_object(None, Some(b"HEADER".to_vec()));
        let mut chunks = data.chunks(64 * 1024);
        for chunk in chunks.by_ref().take(20) {
            spool.push(chunk).await.unwrap();
        }
        assert!(
            tree(&dir.path().join("objects"))
                .iter()
                .any(|f| f.starts_with("incoming/")),
            "the upload began before the data set ended"
        );
        assert_eq!(
            journal.unsettled().unwrap().len(),
            1,
            "its key is journaled"
        );
        for chunk in chunks {
            spool.push(chunk).await.unwrap();
        }
        let Received::Spooled(file) = spool.finish().await.unwrap() else {
            panic!("not spooled")
        };
        let upload = file.take_upload().expect("uploaded while arriving");
        assert_eq!(upload.header(), b"HEADER");
        assert!(
            s.in_memory() >= UPLOAD_MEMORY,
            "its buffers count against the budget"
        );
        upload.file_at("studies/1/x.dcm").await.unwrap();
        assert_eq!(s.in_memory(), 0);
        let stored = objects.get("studies/1/x.dcm").await.unwrap();
        assert_eq!(&stored[..6], b"HEADER");
        assert_eq!(&stored[6..], &data[..]);
        assert_eq!(tree(&dir.path().join("objects")), ["studies/1/x.dcm"]);
        assert!(journal.unsettled().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_upload_never_filed_is_aborted_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _objects, journal) = uploading(dir.path(), 3 * ONE_UPLOAD);
        // Cut off mid-reception, finished but not filed (refused by ingest), and over the limit.
        let mut cut = s.spool_object(None, Some(b"H".to_vec()));
        cut.push(&[1; 3000]).await.unwrap();
        let mut refused = s.spool_object(None, Some(b"H".to_vec()));
        refused.push(&[2; 3000]).await.unwrap();
        let refused = refused.finish().await.unwrap();
        let mut big = s.spool_object(Some(5000), Some(b"H".to_vec()));
        big.push(&[3; 3000]).await.unwrap();
        big.push(&[3; 3000]).await.unwrap();
        assert!(matches!(
            big.finish().await.unwrap(),
            Received::TooLarge { .. }
        ));
        drop(cut);
        drop(refused);
        let objects_dir = dir.path().join("objects");
        for _ in 0..100 {
            if tree(&objects_dir).is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(tree(&objects_dir), Vec::<String>::new());
        assert!(journal.unsettled().unwrap().is_empty());
        assert_eq!(s.in_memory(), 0, "every upload's budget given back");
    }

    #[tokio::test]
    async fn without_a_header_a_store_or_the_memory_for_it_nothing_is_uploaded() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _objects, journal) = uploading(dir.path(), ONE_UPLOAD);
        let plain = staging(dir.path(), 100, ONE_UPLOAD, 1 << 30);
        let (spent, _, _) = uploading(dir.path(), UPLOAD_MEMORY - 1);
        for mut spool in [
            s.spool(None),
            plain.spool_object(None, Some(b"H".to_vec())),
            spent.spool_object(None, Some(b"H".to_vec())),
        ] {
            spool.push(&[1; 3000]).await.unwrap();
            let Received::Spooled(file) = spool.finish().await.unwrap() else {
                panic!("not spooled")
            };
            assert!(file.take_upload().is_none());
        }
        assert!(journal.unsettled().unwrap().is_empty());
        assert!(tree(&dir.path().join("objects")).is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_reception_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = staging(dir.path(), 10, 1000, 10_000);
        let mut spool = s.spool(None);
        spool.push(&[0; 5]).await.unwrap();
        let mut other = s.spool(None);
        other.push(&[0; 50]).await.unwrap();
        assert_eq!(s.in_memory(), 5);
        drop(spool);
        drop(other);
        assert_eq!(s.in_memory(), 0);
        assert_eq!(files(dir.path()), 0);
    }
}

/// Bytes read while looking for the end of a File Meta group; a longer group is not accepted
/// (real ones take a few hundred bytes).
pub const MAX_META_BYTES: usize = 1024 * 1024;

/// Why a Part 10 stream did not become an instance.
#[derive(Debug, thiserror::Error)]
pub enum Part10ReceiveError<E: std::fmt::Display> {
    /// Reading the stream failed.
    #[error("the part cannot be read: {0}")]
    Read(E),
    /// Not a Part 10 file, or its File Meta group is damaged.
    #[error("{0}")]
    NotPart10(crate::dicom::Part10Error),
    /// The staging area failed (full disk, …).
    #[error("the part cannot be staged: {0}")]
    Staging(StagingError),
    /// Larger than `max`: `received` bytes (so far, when the stream was abandoned).
    #[error("an instance of {} MB exceeds the {} MB limit of this archive", .received.div_ceil(1024 * 1024), .max / (1024 * 1024))]
    TooLarge {
        /// Bytes received.
        received: u64,
        /// The limit.
        max: u64,
    },
}

/// Receives one Part 10 file from `chunks` through the staging area: its File Meta group is
/// parsed from the first bytes, then the data set goes to a spool (memory while small, a
/// staging file past the threshold), so a part costs bounded memory whatever its size. Past
/// `max` the rest is read and discarded (a STOW-RS body goes on to its next part), or, with
/// `abandon_past_max`, the stream is left at once (a download). With `ingested_from` (the
/// source ingest will name) a large data set is uploaded as it arrives.
pub async fn receive_part10<S, E>(
    mut chunks: S,
    staging: &Staging,
    max: u64,
    abandon_past_max: bool,
    ingested_from: Option<&str>,
) -> Result<crate::dicom::ReceivedInstance, Part10ReceiveError<E>>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use crate::dicom::{Part10Error, ReceivedInstance};
    use futures::StreamExt;
    let mut head = BytesMut::new();
    // Once the meta group is read: what it says, and the spool the data set goes to.
    let mut receiving: Option<(ReceivedInstance, Spool)> = None;
    let mut total = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(Part10ReceiveError::Read)?;
        total += chunk.len() as u64;
        if abandon_past_max && total > max.saturating_add(MAX_META_BYTES as u64) {
            return Err(Part10ReceiveError::TooLarge {
                received: total,
                max,
            });
        }
        if let Some((_, spool)) = receiving.as_mut() {
            spool
                .push(&chunk)
                .await
                .map_err(Part10ReceiveError::Staging)?;
            continue;
        }
        head.extend_from_slice(&chunk);
        match ReceivedInstance::from_part10(Bytes::copy_from_slice(&head)) {
            // Only once bytes past the meta group arrived: a group without a length element
            // could otherwise end, for the parser, where this chunk happens to end.
            Ok(found) if !found.dataset.is_empty() => {
                let header = ingested_from.and_then(|source| stored_header(&found, source));
                let mut spool = staging.spool_object(Some(max), header);
                spool
                    .push(&found.dataset)
                    .await
                    .map_err(Part10ReceiveError::Staging)?;
                head = BytesMut::new();
                receiving = Some((found, spool));
            }
            Err(Part10Error::NotPart10) if head.len() >= 132 => {
                return Err(Part10ReceiveError::NotPart10(Part10Error::NotPart10))
            }
            Err(e) if head.len() > MAX_META_BYTES => return Err(Part10ReceiveError::NotPart10(e)),
            _ => {}
        }
    }
    let Some((meta, spool)) = receiving else {
        // The whole part is in `head`: short, or its meta group is damaged.
        return ReceivedInstance::from_part10(head.freeze()).map_err(Part10ReceiveError::NotPart10);
    };
    match spool.finish().await.map_err(Part10ReceiveError::Staging)? {
        Received::InMemory(dataset, hold) => Ok(ReceivedInstance { dataset, ..meta }.holding(hold)),
        Received::Spooled(file) => Ok(ReceivedInstance::from_spooled(
            &meta.transfer_syntax,
            &meta.media_storage_sop_class_uid,
            file,
        )),
        Received::TooLarge { received, max } => Err(Part10ReceiveError::TooLarge { received, max }),
    }
}

/// The header ingest will store the data set of `found` behind, from what its own meta group
/// says (ingest writes it from the data set's UIDs, which almost always agree).
fn stored_header(found: &crate::dicom::ReceivedInstance, source: &str) -> Option<Vec<u8>> {
    crate::dicom::part10::StoredFileHeader {
        transfer_syntax_uid: &found.transfer_syntax,
        sop_class_uid: &found.media_storage_sop_class_uid,
        sop_instance_uid: &found.media_storage_sop_instance_uid,
        source,
    }
    .encode()
    .ok()
}
