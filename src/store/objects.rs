//! Object storage for DICOM Part 10 files over the [`object_store`] trait, so a local folder today
//! and an S3-compatible store later are the same to every caller.
//!
//! Keys are deterministic: `studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}.dcm`.
//! UIDs are validated (digits and dots) before they get here, so a key never escapes its prefix.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use super::staging::SpooledFile;

use crate::dicom::{SeriesInstanceUid, SopInstanceUid, StudyInstanceUid};

/// Errors from the object store.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The backend failed.
    #[error("object store: {0}")]
    Backend(#[from] object_store::Error),
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

    /// Writes `header` followed by a spooled data set at `key`, reading the staging file in bounded
    /// chunks (a multipart upload: staged and renamed, fsynced when configured, by the local
    /// backend), so an instance of any size costs a few chunks of memory. Atomic like [`Self::put`].
    pub async fn put_spooled(
        &self,
        key: &str,
        header: Bytes,
        file: Arc<SpooledFile>,
    ) -> Result<(), ObjectError> {
        const CHUNK: usize = 8 * 1024 * 1024;
        let upload = self.backend.put_multipart(&Path::from(key)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        writer.write(&header);
        let copied = async {
            let mut offset = 0u64;
            while offset < file.len() {
                writer.wait_for_capacity(2).await?;
                let f = file.clone();
                let chunk = tokio::task::spawn_blocking(move || f.read_at(offset, CHUNK))
                    .await
                    .map_err(|e| staging_error(std::io::Error::other(e.to_string())))?
                    .map_err(staging_error)?;
                if chunk.is_empty() {
                    break;
                }
                offset += chunk.len() as u64;
                writer.write(&chunk);
            }
            Ok::<_, object_store::Error>(())
        }
        .await;
        match copied {
            Ok(()) => {
                writer.finish().await?;
                Ok(())
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e.into())
            }
        }
    }

    /// Reads the whole object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        Ok(self.backend.get(&Path::from(key)).await?.bytes().await?)
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

fn staging_error(source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "staging",
        source: Box::new(source),
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
