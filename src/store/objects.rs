//! Object storage for DICOM Part 10 files over the [`object_store`] trait, so a local folder today
//! and an S3-compatible store later are the same to every caller.
//!
//! Keys are deterministic: `studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}.dcm`.
//! UIDs are validated (digits and dots) before they get here, so a key never escapes its prefix.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::dicom::{SeriesInstanceUid, SopInstanceUid, StudyInstanceUid};

/// Errors from the object store.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The backend failed.
    #[error("object store: {0}")]
    Backend(#[from] object_store::Error),
    /// No object is stored under the key.
    #[error("no object is stored under this key")]
    NotFound,
    /// Interrupted writes could not be removed.
    #[error("cannot remove interrupted writes: {0}")]
    Cleanup(std::io::Error),
    /// The local folder cannot be created.
    #[error("cannot create object folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A listed object: its key and when it was last written.
#[derive(Debug, Clone)]
pub struct ListedObject {
    /// The object key.
    pub key: String,
    /// Last modification time.
    pub last_modified: std::time::SystemTime,
}

/// The store of DICOM objects.
#[derive(Clone)]
pub struct ObjectStorage {
    backend: Arc<dyn ObjectStore>,
    /// The folder of a local backend, for clean-up the object_store API cannot see.
    local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectStorage({})", self.backend)
    }
}

impl ObjectStorage {
    /// Objects under a local folder. With `fsync`, each put is flushed to stable storage (file and
    /// directory entry) before it returns.
    pub fn local(root: &FsPath, fsync: bool) -> Result<Self, ObjectError> {
        std::fs::create_dir_all(root).map_err(|source| ObjectError::CreateDir {
            path: root.display().to_string(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(root)?
            .with_fsync(fsync)
            .with_automatic_cleanup(true);
        Ok(ObjectStorage {
            backend: Arc::new(fs),
            local_root: Some(root.to_path_buf()),
        })
    }

    /// Any other backend (S3, in-memory for tests).
    pub fn from_backend(backend: Arc<dyn ObjectStore>) -> Self {
        ObjectStorage {
            backend,
            local_root: None,
        }
    }

    /// Removes the staging files (`{key}#{n}`) of local writes that a crash interrupted. The
    /// object_store listing hides them, so orphan reconciliation alone would never see them.
    /// Returns how many were removed.
    pub fn remove_interrupted_writes(&self) -> std::io::Result<usize> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in walkdir::WalkDir::new(root)
            .into_iter()
            .filter_map(Result::ok)
        {
            let staged = entry.file_type().is_file()
                && entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.rsplit_once('#'))
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if staged {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The key of an instance.
    pub fn instance_key(
        study: &StudyInstanceUid,
        series: &SeriesInstanceUid,
        sop: &SopInstanceUid,
    ) -> String {
        format!("studies/{study}/series/{series}/instances/{sop}.dcm")
    }

    /// Writes the concatenation of `chunks` at `key`, atomically: readers see the old object or
    /// the whole new one. Chunks are written as they are, without first joining them in memory.
    pub async fn put(&self, key: &str, chunks: Vec<Bytes>) -> Result<(), ObjectError> {
        self.backend
            .put(&Path::from(key), chunks.into_iter().collect::<PutPayload>())
            .await?;
        Ok(())
    }

    /// Reads the whole object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        Ok(self.backend.get(&Path::from(key)).await?.bytes().await?)
    }

    /// The object at `key` as a stream of chunks, in order, with its size: for reads that check
    /// the bytes as they arrive (checksum verification) without a second pass.
    pub async fn get_chunks(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, ObjectError>>), ObjectError> {
        match self.backend.get(&Path::from(key)).await {
            Ok(result) => {
                let size = result.meta.size;
                Ok((size, result.into_stream().map(|c| Ok(c?)).boxed()))
            }
            Err(object_store::Error::NotFound { .. }) => Err(ObjectError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the object at `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self.backend.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists every instance object.
    pub async fn list_instances(&self) -> Result<Vec<ListedObject>, ObjectError> {
        let prefix = Path::from("studies");
        let mut stream = self.backend.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            out.push(ListedObject {
                key: meta.location.to_string(),
                last_modified: meta.last_modified.into(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_keys_follow_the_hierarchy() {
        let key = ObjectStorage::instance_key(
            &StudyInstanceUid::new("1.2").unwrap(),
            &SeriesInstanceUid::new("1.2.3").unwrap(),
            &SopInstanceUid::new("1.2.3.4").unwrap(),
        );
        assert_eq!(key, "studies/1.2/series/1.2.3/instances/1.2.3.4.dcm");
    }
}
