//! Where data sets wait while they arrive: in memory while small (the common case, kept fast), in
//! a staging file under `data_dir/staging/` once they grow past a threshold or the process-wide
//! in-memory budget is spent, so receiving costs bounded memory whatever the sender does.
//!
//! The SHA-256 of a spooled data set is computed as its bytes are written, so ingest never reads
//! it again just to identify it. Staging files are [`tempfile::NamedTempFile`]s: dropped on every
//! path (stored, refused, aborted, disconnected, timed out), they are removed; a crash can leave
//! them, and [`remove_leftovers`] clears the folder at start-up.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
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
        })
    }

    /// The limits.
    pub fn limits(&self) -> StagingLimits {
        self.limits
    }

    /// Starts receiving one data set, refused past `max` bytes (at most the configured maximum).
    pub fn spool(&self, max: Option<u64>) -> Spool {
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
}

/// A data set in a staging file, with its SHA-256. The file is removed when this is dropped.
pub struct SpooledFile {
    file: NamedTempFile,
    len: u64,
    sha256: [u8; 32],
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

    /// Reads `len` bytes at `offset` (fewer at the end of the file). Blocking.
    pub fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let len = len.min(self.len.saturating_sub(offset) as usize);
        let mut buf = vec![0u8; len];
        self.file.as_file().read_exact_at(&mut buf, offset)?;
        Ok(buf)
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
        let mut batch = std::mem::take(&mut self.pending);
        let (writer, batch, result) = tokio::task::spawn_blocking(move || {
            writer.hasher.update(&batch);
            let result = writer.file.as_file_mut().write_all(&batch);
            batch.clear();
            (writer, batch, result)
        })
        .await
        .map_err(|e| StagingError::Task(e.to_string()))?;
        self.file = Some(writer);
        self.pending = batch;
        Ok(result?)
    }

    fn discard(&mut self) {
        self.memory = BytesMut::new();
        self.pending = Vec::new();
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
/// `abandon_past_max`, the stream is left at once (a download).
pub async fn receive_part10<S, E>(
    mut chunks: S,
    staging: &Staging,
    max: u64,
    abandon_past_max: bool,
) -> Result<crate::dicom::ReceivedInstance, Part10ReceiveError<E>>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use crate::dicom::{Part10Error, ReceivedInstance};
    use futures::StreamExt;
    let mut head = BytesMut::new();
    let mut meta: Option<ReceivedInstance> = None;
    let mut spool = staging.spool(Some(max));
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
        if meta.is_some() {
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
                spool
                    .push(&found.dataset)
                    .await
                    .map_err(Part10ReceiveError::Staging)?;
                head = BytesMut::new();
                meta = Some(found);
            }
            Err(Part10Error::NotPart10) if head.len() >= 132 => {
                return Err(Part10ReceiveError::NotPart10(Part10Error::NotPart10))
            }
            Err(e) if head.len() > MAX_META_BYTES => return Err(Part10ReceiveError::NotPart10(e)),
            _ => {}
        }
    }
    let Some(meta) = meta else {
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
