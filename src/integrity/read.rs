//! Verified reads of stored objects.
//!
//! tramy stores each instance as its own File Meta group followed by the data set bytes as
//! received, and records the SHA-256 of those data set bytes at ingest (invariant 3). A read
//! hashes the data set while the chunks arrive from the object store (no second pass over the
//! bytes), then checks the digest and the Media Storage SOP Instance UID (0002,0003) of the meta
//! group against the index row. Nothing that fails is served.

use std::io::Cursor;

use bytes::Bytes;
use dicom_object::meta::FileMetaTable;
use sha2::{Digest, Sha256};

use crate::access::Principal;
use crate::ingest::Archive;
use crate::store::damage::Problem;
use crate::store::objects::ChunkSink;
use crate::store::{ObjectError, StoredInstance};

/// Why a stored instance cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The index has the instance but the object store has no object for it.
    #[error("the stored object of instance {sop_instance_uid} is missing; it cannot be served (run `tramy verify` and restore it from a backup)")]
    Missing {
        /// SOP Instance UID.
        sop_instance_uid: String,
    },
    /// The object is not what was acknowledged.
    #[error("the stored object of instance {sop_instance_uid} is damaged ({reason}); it cannot be served (run `tramy verify` and restore it from a backup)")]
    Damaged {
        /// SOP Instance UID.
        sop_instance_uid: String,
        /// What the check found.
        reason: String,
    },
    /// The object store failed (I/O); nothing is known about the object itself.
    #[error(transparent)]
    Backend(#[from] ObjectError),
}

impl ReadError {
    /// The problem to record in the index, if the object itself is at fault.
    pub fn problem(&self) -> Option<(Problem, String)> {
        match self {
            ReadError::Missing { .. } => Some((Problem::Missing, "no object in the store".into())),
            ReadError::Damaged { reason, .. } => Some((Problem::Damaged, reason.clone())),
            ReadError::Backend(_) => None,
        }
    }
}

/// The preamble, `DICM` and the first meta element, (0002,0000) File Meta Information Group
/// Length, which every meta group tramy writes starts with (PS3.10 7.1).
const FIXED_HEAD: usize = 144;
/// Meta groups are a few hundred bytes; a larger declared length means damage, not a big header.
const MAX_META_GROUP: usize = 64 * 1024;

/// Where the data set starts, read from the fixed head of a Part 10 file tramy wrote.
fn dataset_offset(head: &[u8]) -> Result<usize, String> {
    if &head[128..132] != b"DICM" {
        return Err("no DICM prefix after the preamble".into());
    }
    if head[132..136] != [0x02, 0x00, 0x00, 0x00] || &head[136..138] != b"UL" {
        return Err("the File Meta group does not start with its group length".into());
    }
    let length = u32::from_le_bytes([head[140], head[141], head[142], head[143]]) as usize;
    if length > MAX_META_GROUP {
        return Err(format!("the File Meta group declares {length} bytes"));
    }
    Ok(FIXED_HEAD + length)
}

/// SHA-256 of the data set of a Part 10 file fed in chunks, keeping the header bytes (preamble
/// and meta group) for the identity check.
#[derive(Default)]
pub struct DataSetDigest {
    hasher: Sha256,
    head: Vec<u8>,
    dataset_start: Option<usize>,
    damage: Option<String>,
}

impl DataSetDigest {
    /// Feeds the next chunk of the file.
    pub fn update(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && self.damage.is_none() {
            let wanted = self.dataset_start.unwrap_or(FIXED_HEAD);
            if self.head.len() < wanted {
                let take = (wanted - self.head.len()).min(chunk.len());
                self.head.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if self.dataset_start.is_none() && self.head.len() == FIXED_HEAD {
                    match dataset_offset(&self.head) {
                        Ok(start) => self.dataset_start = Some(start),
                        Err(e) => self.damage = Some(e),
                    }
                }
            } else {
                self.hasher.update(chunk);
                chunk = &[];
            }
        }
    }

    /// Checks the digest against `expected_sha256` (hex) and the meta group's SOP Instance UID
    /// against `sop_instance_uid`; the reason when either differs.
    pub fn check(self, expected_sha256: &str, sop_instance_uid: &str) -> Result<(), String> {
        if let Some(damage) = self.damage {
            return Err(damage);
        }
        match self.dataset_start {
            Some(start) if self.head.len() == start => {}
            _ => return Err("truncated inside its File Meta group".into()),
        }
        let held = FileMetaTable::from_reader(&mut Cursor::new(&self.head[128..]))
            .map(|meta| {
                meta.media_storage_sop_instance_uid
                    .trim_end_matches(['\0', ' '])
                    .to_string()
            })
            .map_err(|e| format!("the File Meta group does not parse: {e}"))?;
        if held != sop_instance_uid {
            return Err(format!("it holds instance {held}"));
        }
        let actual = hex::encode(self.hasher.finalize());
        if !actual.eq_ignore_ascii_case(expected_sha256) {
            return Err("SHA-256 of the data set differs from the one recorded at ingest".into());
        }
        Ok(())
    }
}

impl ChunkSink for DataSetDigest {
    fn chunk(&mut self, bytes: &[u8]) {
        self.update(bytes)
    }
}

/// Reads `instance`'s object through a [`DataSetDigest`]; with `keep`, returns its bytes.
/// Returns the number of bytes read as well.
pub async fn read_checked(
    archive: &Archive,
    instance: &StoredInstance,
    keep: bool,
) -> Result<(Option<Bytes>, u64), ReadError> {
    let sop_instance_uid = instance.sop_instance_uid.clone();
    let (file, read, digest) = match archive
        .objects()
        .read_inspecting(&instance.object_key, keep, DataSetDigest::default())
        .await
    {
        Ok(done) => done,
        Err(ObjectError::NotFound) => return Err(ReadError::Missing { sop_instance_uid }),
        Err(e) => return Err(e.into()),
    };
    digest
        .check(&instance.sha256, &instance.sop_instance_uid)
        .map_err(|reason| ReadError::Damaged {
            sop_instance_uid,
            reason,
        })?;
    Ok((file, read))
}

impl Archive {
    /// The stored Part 10 file of `instance`, verified (see the module documentation). A missing
    /// or damaged object is counted in `tramy_integrity_failures_total`, logged and marked in
    /// the index before the error is returned.
    pub async fn read_instance(&self, instance: &StoredInstance) -> Result<Bytes, ReadError> {
        match read_checked(self, instance, true).await {
            // Reads that keep their bytes always return them.
            Ok((file, _)) => Ok(file.unwrap_or_default()),
            Err(e) => {
                self.record_read_failure(instance, &e).await;
                Err(e)
            }
        }
    }

    /// Checks that `instance`'s stored object is intact (SHA-256 and identity), reading it in
    /// chunks without keeping it; a failure is counted, logged and marked as by
    /// [`Archive::read_instance`].
    pub async fn verify_instance(&self, instance: &StoredInstance) -> Result<(), ReadError> {
        match read_checked(self, instance, false).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.record_read_failure(instance, &e).await;
                Err(e)
            }
        }
    }

    /// Counts, logs and marks a failed read.
    pub async fn record_read_failure(&self, instance: &StoredInstance, error: &ReadError) {
        let Some((problem, reason)) = error.problem() else {
            tracing::error!(sop_instance_uid = %instance.sop_instance_uid, error = %error, "object store read failed");
            return;
        };
        metrics::counter!("tramy_integrity_failures_total", "problem" => problem.as_str())
            .increment(1);
        tracing::error!(
            sop_instance_uid = %instance.sop_instance_uid,
            problem = problem.as_str(),
            %reason,
            "stored object failed verification; not served"
        );
        // The mark is the archive's own bookkeeping, whoever's read found the fault.
        if let Err(e) = self
            .index()
            .mark_damaged(
                &Principal::system(),
                &instance.sop_instance_uid,
                problem,
                &reason,
            )
            .await
        {
            tracing::error!(error = %e, "could not mark the instance damaged in the index");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::ReceivedInstance;

    fn part10(dataset: &'static [u8]) -> (Vec<u8>, String) {
        let inst = ReceivedInstance::from_dataset("1.2.840.10008.1.2", Bytes::from_static(dataset));
        let file = inst.to_part10("1.2", "1.2.3", None).unwrap();
        (file, hex::encode(inst.sha256()))
    }

    fn digest_in_chunks(file: &[u8], size: usize) -> DataSetDigest {
        let mut d = DataSetDigest::default();
        for chunk in file.chunks(size) {
            d.update(chunk);
        }
        d
    }

    #[test]
    fn intact_object_passes_whatever_the_chunking() {
        let (file, sha) = part10(b"\x08\x00\x16\x00\x04\x00\x00\x001.2\0");
        for size in [1, 7, 143, 144, 145, 4096] {
            assert_eq!(
                digest_in_chunks(&file, size).check(&sha, "1.2.3"),
                Ok(()),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_flipped_data_set_byte_is_a_checksum_mismatch() {
        let (mut file, sha) = part10(b"\x08\x00\x16\x00\x04\x00\x00\x001.2\0");
        let last = file.len() - 2;
        file[last] ^= 1;
        let err = digest_in_chunks(&file, 100)
            .check(&sha, "1.2.3")
            .unwrap_err();
        assert!(err.contains("SHA-256"), "{err}");
    }

    #[test]
    fn another_instances_object_is_refused_by_identity() {
        let (file, sha) = part10(b"\x08\x00\x16\x00\x04\x00\x00\x001.2\0");
        let err = digest_in_chunks(&file, 100)
            .check(&sha, "1.2.4")
            .unwrap_err();
        assert!(err.contains("holds instance 1.2.3"), "{err}");
    }

    #[test]
    fn a_truncated_object_is_damaged() {
        let (file, sha) = part10(b"\x08\x00\x16\x00\x04\x00\x00\x001.2\0");
        for cut in [0, 100, 150, file.len() - 1] {
            assert!(
                digest_in_chunks(&file[..cut], 64)
                    .check(&sha, "1.2.3")
                    .is_err(),
                "cut at {cut}"
            );
        }
    }
}
