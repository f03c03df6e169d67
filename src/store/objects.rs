//! Object storage for DICOM Part 10 files over the [`object_store`] trait, so a local folder, an
//! S3-compatible store (AWS, Garage, MinIO), Google Cloud Storage and Azure Blob Storage are the
//! same to every caller. Which one is chosen by `object_store_url` ([`ObjectStorage::from_config`]).
//!
//! Keys are deterministic:
//! `studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}.{sha}.dcm`
//! (under the URL's prefix), `sha` the first 16 hex digits of the data set's SHA-256, so two data
//! sets under one SOP Instance UID never share a key (instances filed before issue #11 keep their
//! `{SOPInstanceUID}.dcm` keys: the index names each object's key). UIDs are validated (digits
//! and dots) before they get here, so a key never escapes its prefix.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, GetResultPayload, ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload,
    RetryConfig, WriteMultipart,
};

use super::staging::SpooledFile;

use crate::dicom::{SeriesInstanceUid, SopInstanceUid, StudyInstanceUid};

/// Errors from the object store.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The backend failed. Its message, which may reach a client (C-STORE Error Comment, an HTTP
    /// problem), says only the kind of failure: the detail names the store's address and the key,
    /// and is logged where it happened ([`logged`]).
    #[error("object store: {}", summary(.0))]
    Backend(#[from] object_store::Error),
    /// No object is stored under the key.
    #[error("no object is stored under this key")]
    NotFound,
    /// A local object could not be read.
    #[error("cannot read a stored object: {0}")]
    Read(std::io::Error),
    /// The journal of writes in flight could not note a write.
    #[error("cannot journal an object write: {0}")]
    Journal(std::io::Error),
    /// Interrupted writes could not be removed.
    #[error("cannot remove interrupted writes: {0}")]
    Cleanup(std::io::Error),
    /// `object_store_url` cannot be used as written.
    #[error("object_store_url: {0}")]
    Url(String),
    /// A remote store could not be opened or answered a request badly at start-up.
    #[error("cannot use the object store {location}: {reason}. {hint}")]
    Unreachable {
        /// The store, as scheme, bucket and prefix (never credentials).
        location: String,
        /// What failed.
        reason: String,
        /// What the administrator can set.
        hint: &'static str,
    },
    /// The local folder cannot be created.
    #[error("cannot create object folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The kind of a backend failure, without addresses or paths.
fn summary(e: &object_store::Error) -> String {
    match e {
        object_store::Error::NotFound { .. } => "no object is stored under this key".into(),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            "the store refused tramy's credentials".into()
        }
        object_store::Error::Generic { store, .. } => {
            format!("{store} did not complete the request")
        }
        _ => "the store did not complete the request".into(),
    }
}

/// Logs a backend failure with its detail (address, key, the store's answer) and wraps it.
fn logged(operation: &'static str, key: &str, e: object_store::Error) -> ObjectError {
    tracing::warn!(operation, key, error = %e, "object store request failed");
    ObjectError::Backend(e)
}

/// What sees an object's bytes while they are read (a checksum).
pub trait ChunkSink: Send + 'static {
    /// The next bytes of the object, in order.
    fn chunk(&mut self, bytes: &[u8]);
}

/// Reads `file` in 1 MiB pieces, handing each to `inspect` while it is still in cache.
fn read_file_inspecting<F: ChunkSink>(
    mut file: std::fs::File,
    size: usize,
    keep: bool,
    mut inspect: F,
) -> std::io::Result<(Option<Bytes>, u64, F)> {
    use std::io::Read;
    const PIECE: usize = 1 << 20;
    let mut buffer = super::read_buffers::take(if keep { size } else { PIECE.min(size.max(1)) });
    let mut read = 0usize;
    loop {
        if keep && read == buffer.len() {
            // Read as much as the size said: end of file, almost always. Probed with a small
            // buffer; growing the whole one first would zero (and, past the allocator's mmap
            // threshold, map) another piece for every object read (a third of the CPU of
            // forwarding, measured with perf).
            let mut probe = [0u8; 8192];
            let n = file.read(&mut probe)?;
            if n == 0 {
                break;
            }
            // The file grew since its size was taken: keep reading.
            inspect.chunk(&probe[..n]);
            buffer.extend_from_slice(&probe[..n]);
            read += n;
            buffer.resize(read + PIECE, 0);
        }
        let window = if keep {
            &mut buffer[read..]
        } else {
            &mut buffer[..]
        };
        let take = window.len().min(PIECE);
        let n = file.read(&mut window[..take])?;
        if n == 0 {
            break;
        }
        inspect.chunk(&window[..n]);
        read += n;
    }
    if keep {
        return Ok((
            Some(super::read_buffers::freeze(buffer, read)),
            read as u64,
            inspect,
        ));
    }
    super::read_buffers::give_back(buffer);
    Ok((None, read as u64, inspect))
}

/// A listed object: its key and when it was last written.
#[derive(Debug, Clone)]
pub struct ListedObject {
    /// The object key.
    pub key: String,
    /// Last modification time.
    pub last_modified: std::time::SystemTime,
}

/// Where uploads that began while their data set arrived wait for their final key.
const PROVISIONAL_PREFIX: &str = "incoming/";

/// The store of DICOM objects.
#[derive(Clone)]
pub struct ObjectStorage {
    backend: Arc<dyn ObjectStore>,
    /// The folder of a local backend, for clean-up the object_store API cannot see.
    local_root: Option<std::path::PathBuf>,
    /// Where the objects are, for messages: a folder or `scheme://bucket/prefix`.
    location: String,
    /// What to set when a remote store refuses (see [`hint`]).
    hint: &'static str,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectStorage({})", self.backend)
    }
}

/// What to set when a remote store is refused, per scheme.
fn hint(scheme: &ObjectStoreScheme) -> &'static str {
    match scheme {
        ObjectStoreScheme::AmazonS3 => {
            "Check that the bucket exists and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
             (a key that may read and write it), AWS_REGION, and for Garage, MinIO or another \
             S3-compatible service AWS_ENDPOINT_URL (with AWS_ALLOW_HTTP=true for http://)"
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            "Check that the bucket exists and set GOOGLE_SERVICE_ACCOUNT (a service account key \
             file that may read and write it) or GOOGLE_APPLICATION_CREDENTIALS"
        }
        ObjectStoreScheme::MicrosoftAzure => {
            "Check that the container exists and set AZURE_STORAGE_ACCOUNT_NAME with \
             AZURE_STORAGE_ACCOUNT_KEY (or AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID)"
        }
        _ => "Use file:///absolute/path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix",
    }
}

/// Retries of a remote request: a few, within 30 s, so a store that is down fails an ingest
/// (which the sender can retry) instead of holding the association for object_store's default
/// three minutes.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(30),
    }
}

/// How long the start-up check waits for a remote store.
const REACHABLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// A remote store for `url` (not `file://`), its backend built from the scheme's standard
/// environment variables.
fn remote_backend(
    scheme: &ObjectStoreScheme,
    url: &url::Url,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    Ok(match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut builder = AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_retry(retry_config());
            // Garage and MinIO answer path-style requests (endpoint/bucket/key), not
            // bucket.endpoint: unless the administrator chose otherwise.
            let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
            if endpoint.is_some() && std::env::var_os("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_none()
            {
                builder = builder.with_virtual_hosted_style_request(false);
            }
            Arc::new(builder.build()?)
        }
        ObjectStoreScheme::GoogleCloudStorage => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry_config())
                .build()?,
        ),
        ObjectStoreScheme::MicrosoftAzure => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry_config())
                .build()?,
        ),
        _ => {
            return Err(object_store::Error::NotSupported {
                source: "not a remote object store".into(),
            })
        }
    })
}

impl ObjectStorage {
    /// The store `config` names: `object_store_url`, or the folder `data_dir/objects` when it is
    /// absent. Every command that reads or writes objects opens them here. A remote store is only
    /// built here; [`Self::check_reachable`] asks it a first question.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, ObjectError> {
        let fsync = config.ingest.fsync;
        let Some(raw) = config.object_store_url.as_deref() else {
            return Self::local(&config.data_dir.join("objects"), fsync);
        };
        // The parse error never repeats the URL, which may hold a secret (an Azure SAS query).
        let url = url::Url::parse(raw).map_err(|e| {
            ObjectError::Url(format!(
                "not a URL ({e}); use file:///absolute/path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
            ))
        })?;
        let (scheme, prefix) = ObjectStoreScheme::parse(&url).map_err(|_| match url.scheme() {
            "file" => ObjectError::Url(
                "a file:// URL must name an absolute local folder (file:///srv/tramy/objects)"
                    .into(),
            ),
            other => ObjectError::Url(format!(
                "scheme {other}:// is not supported; use file:///absolute/path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
            )),
        })?;
        let location = format!(
            "{}://{}/{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            prefix
        );
        match scheme {
            ObjectStoreScheme::Local => {
                let root = url.to_file_path().map_err(|()| {
                    ObjectError::Url("a file:// URL must name an absolute local folder".into())
                })?;
                Self::local(&root, fsync)
            }
            ObjectStoreScheme::AmazonS3
            | ObjectStoreScheme::GoogleCloudStorage
            | ObjectStoreScheme::MicrosoftAzure => {
                let backend =
                    remote_backend(&scheme, &url).map_err(|e| ObjectError::Unreachable {
                        location: location.clone(),
                        reason: e.to_string(),
                        hint: hint(&scheme),
                    })?;
                let backend: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
                    backend
                } else {
                    Arc::new(PrefixStore::new(backend, prefix))
                };
                Ok(ObjectStorage {
                    backend,
                    local_root: None,
                    location,
                    hint: hint(&scheme),
                })
            }
            _ => Err(ObjectError::Url(format!(
                "scheme {}:// is not supported; use file:///absolute/path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix",
                url.scheme()
            ))),
        }
    }

    /// Where the objects are: a folder, or `scheme://bucket/prefix` (never credentials).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Asks a remote store one cheap question (a listing of the prefix's top level), so a wrong
    /// bucket, endpoint or credential fails start-up with what to set instead of the first
    /// C-STORE. A local folder was checked when it was created.
    pub async fn check_reachable(&self) -> Result<(), ObjectError> {
        if self.local_root.is_some() {
            return Ok(());
        }
        let unreachable = |reason: String| ObjectError::Unreachable {
            location: self.location.clone(),
            reason,
            hint: self.hint,
        };
        match tokio::time::timeout(REACHABLE_WITHIN, self.backend.list_with_delimiter(None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!(
                "no answer within {} s",
                REACHABLE_WITHIN.as_secs()
            ))),
        }
    }

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
            location: root.display().to_string(),
            hint: "",
        })
    }

    /// Any other backend (in-memory for tests).
    pub fn from_backend(backend: Arc<dyn ObjectStore>) -> Self {
        ObjectStorage {
            location: backend.to_string(),
            backend,
            local_root: None,
            hint: "",
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

    /// The key of one data set of an instance: its UIDs and the start of the data set's
    /// SHA-256. Two data sets under one SOP Instance UID (a conflict, an overwrite, two nodes
    /// receiving different versions at once) never share a key, so no write replaces an object
    /// another index row may name, on any backend (S3 stores without conditional writes
    /// included); the same data set written twice is the same object.
    pub fn instance_key(
        study: &StudyInstanceUid,
        series: &SeriesInstanceUid,
        sop: &SopInstanceUid,
        sha256: &str,
    ) -> String {
        let short = sha256.get(..16).unwrap_or(sha256);
        format!("studies/{study}/series/{series}/instances/{sop}.{short}.dcm")
    }

    /// A new provisional key, under `incoming/`, for an upload that begins before the data set
    /// it holds is known (its final key names its UIDs and hash). Unique: 128 random bits.
    pub fn provisional_key() -> String {
        let mut id = [0u8; 16];
        // Without the OS's randomness, a time-based name is still unique on this node (the
        // journal names it, and start-up removes it if it outlives its reception).
        if getrandom::fill(&mut id).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            id = nanos.to_le_bytes();
        }
        format!("{PROVISIONAL_PREFIX}{}.dcm", hex::encode(id))
    }

    /// Whether `key` is a provisional key ([`Self::provisional_key`]): an object there was never
    /// filed, whatever the index says.
    pub fn is_provisional(key: &str) -> bool {
        key.starts_with(PROVISIONAL_PREFIX)
    }

    /// Writes the concatenation of `chunks` at `key`, atomically: readers see the old object or
    /// the whole new one. Chunks are written as they are, without first joining them in memory.
    pub async fn put(&self, key: &str, chunks: Vec<Bytes>) -> Result<(), ObjectError> {
        self.backend
            .put(&Path::from(key), chunks.into_iter().collect::<PutPayload>())
            .await
            .map_err(|e| logged("put", key, e))?;
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
        let mut upload = self.begin_upload(key).await?;
        match copy_spooled(&mut upload, &header, &file).await {
            Ok(()) => upload.finish().await,
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }

    /// Begins a multipart upload to `key`, for bytes that have not all arrived yet: written with
    /// [`ObjectUpload::write`] as they come, then completed and moved to its final key with
    /// [`ObjectUpload::file_at`]. Dropped unfinished, the upload is aborted.
    pub async fn begin_upload(&self, key: &str) -> Result<ObjectUpload, ObjectError> {
        let upload = self
            .backend
            .put_multipart(&Path::from(key))
            .await
            .map_err(|e| logged("multipart put", key, e))?;
        Ok(ObjectUpload {
            objects: self.clone(),
            key: key.to_string(),
            writer: Some(WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART)),
        })
    }

    /// Reads the whole object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        let read = async { self.backend.get(&Path::from(key)).await?.bytes().await };
        read.await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => ObjectError::NotFound,
            e => logged("get", key, e),
        })
    }

    /// Reads the object at `key`, handing each chunk to `inspect` as it arrives, so a checksum
    /// is computed without a second pass over the bytes; with `keep` the bytes are returned too.
    /// Returns them (or `None`), the number of bytes read and `inspect` itself.
    ///
    /// Written here rather than over `GetResult::into_stream` because that reads a local file
    /// in 8 KiB chunks, each through its own blocking task: ten times slower on large objects
    /// than these 1 MiB reads in one blocking task.
    pub async fn read_inspecting<F>(
        &self,
        key: &str,
        keep: bool,
        mut inspect: F,
    ) -> Result<(Option<Bytes>, u64, F), ObjectError>
    where
        F: ChunkSink,
    {
        let result = match self.backend.get(&Path::from(key)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(ObjectError::NotFound),
            Err(e) => return Err(logged("get", key, e)),
        };
        let size = result.meta.size as usize;
        match result.payload {
            GetResultPayload::File(file, _) => {
                tokio::task::spawn_blocking(move || read_file_inspecting(file, size, keep, inspect))
                    .await
                    .map_err(|e| ObjectError::Read(std::io::Error::other(e.to_string())))?
                    .map_err(ObjectError::Read)
            }
            GetResultPayload::Stream(mut chunks) => {
                let mut kept = Vec::with_capacity(if keep { size } else { 0 });
                let mut read = 0u64;
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk.map_err(|e| logged("get", key, e))?;
                    inspect.chunk(&chunk);
                    read += chunk.len() as u64;
                    if keep {
                        kept.extend_from_slice(&chunk);
                    }
                }
                Ok((keep.then(|| Bytes::from(kept)), read, inspect))
            }
        }
    }

    /// Removes the object at `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self.backend.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(logged("delete", key, e)),
        }
    }

    /// Lists every instance object.
    pub async fn list_instances(&self) -> Result<Vec<ListedObject>, ObjectError> {
        let prefix = Path::from("studies");
        let mut stream = self.backend.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| logged("list", "studies", e))?;
            out.push(ListedObject {
                key: meta.location.to_string(),
                last_modified: meta.last_modified.into(),
            });
        }
        Ok(out)
    }
}

/// Part size of uploads: 8 MiB parts, at most [`UPLOAD_PARTS_IN_FLIGHT`] of them in flight, so an
/// upload holds about 24 MiB whatever the object's size (S3 wants parts of 5 MiB or more, and
/// some S3-compatible stores parts of one size).
const UPLOAD_PART: usize = 8 * 1024 * 1024;

/// Parts an upload sends at once before its writer waits.
const UPLOAD_PARTS_IN_FLIGHT: usize = 2;

/// The most memory one upload holds: the part being filled and those in flight.
pub const UPLOAD_MEMORY: usize = UPLOAD_PART * (UPLOAD_PARTS_IN_FLIGHT + 1);

/// A multipart upload in progress at a provisional key ([`ObjectStorage::begin_upload`]).
pub struct ObjectUpload {
    objects: ObjectStorage,
    key: String,
    /// `None` once finished or aborted.
    writer: Option<WriteMultipart>,
}

impl std::fmt::Debug for ObjectUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectUpload({})", self.key)
    }
}

impl ObjectUpload {
    /// The provisional key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Adds `bytes`, first waiting while [`UPLOAD_PARTS_IN_FLIGHT`] parts are in flight: a store
    /// slower than the sender slows the reception instead of filling memory.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ObjectError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(ObjectError::Backend(object_store::Error::Generic {
                store: "upload",
                source: "the upload was already ended".into(),
            }));
        };
        writer
            .wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT)
            .await
            .map_err(|e| logged("multipart put", &self.key, e))?;
        writer.write(bytes);
        Ok(())
    }

    /// Completes the upload at its own key.
    pub async fn finish(mut self) -> Result<(), ObjectError> {
        let Some(writer) = self.writer.take() else {
            return Err(ObjectError::NotFound);
        };
        writer
            .finish()
            .await
            .map_err(|e| logged("multipart put", &self.key, e))?;
        Ok(())
    }

    /// Completes the upload and moves the object to `key` (a rename on a local folder, a
    /// server-side copy and delete on S3, GCS and Azure: no byte travels again). On failure
    /// nothing is left at either key, as far as the store allows.
    pub async fn file_at(self, key: &str) -> Result<(), ObjectError> {
        let (objects, provisional) = (self.objects.clone(), self.key.clone());
        self.finish().await?;
        let backend = &objects.backend;
        if let Err(e) = backend
            .rename(&Path::from(provisional.as_str()), &Path::from(key))
            .await
        {
            let _ = objects.delete(&provisional).await;
            return Err(logged("rename", key, e));
        }
        Ok(())
    }
}

impl ObjectUpload {
    /// Aborts the upload now (dropping it aborts it in the background).
    pub async fn abort(mut self) {
        if let Some(writer) = self.writer.take() {
            if let Err(e) = writer.abort().await {
                tracing::debug!(key = %self.key, error = %e, "an abandoned upload was not aborted");
            }
        }
    }
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        // Unfinished: abort, so the store keeps no parts (an S3 store keeps an unaborted
        // upload's parts, invisible, until a lifecycle rule removes them).
        let Some(writer) = self.writer.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let key = std::mem::take(&mut self.key);
            runtime.spawn(async move {
                if let Err(e) = writer.abort().await {
                    tracing::debug!(key, error = %e, "an abandoned upload was not aborted");
                }
            });
        }
    }
}

/// Writes `header`, then the spooled data set read in part-sized chunks, to `upload`.
async fn copy_spooled(
    upload: &mut ObjectUpload,
    header: &[u8],
    file: &Arc<SpooledFile>,
) -> Result<(), ObjectError> {
    upload.write(header).await?;
    let mut offset = 0u64;
    while offset < file.len() {
        let f = file.clone();
        let chunk = tokio::task::spawn_blocking(move || f.read_at(offset, UPLOAD_PART))
            .await
            .map_err(|e| staging_error(std::io::Error::other(e.to_string())))
            .and_then(|read| read.map_err(staging_error))
            .map_err(|e| logged("multipart put", upload.key(), e))?;
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len() as u64;
        upload.write(&chunk).await?;
    }
    Ok(())
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

    struct Collect(Vec<u8>, usize);
    impl ChunkSink for Collect {
        fn chunk(&mut self, bytes: &[u8]) {
            self.0.extend_from_slice(bytes);
            self.1 += 1;
        }
    }

    #[tokio::test]
    async fn reads_hand_every_byte_to_the_sink_in_order_kept_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStorage::local(dir.path(), false).unwrap();
        let data: Vec<u8> = (0..(5 << 19) + 7).map(|i| (i * 31 % 251) as u8).collect();
        store
            .put("a/b.dcm", vec![Bytes::from(data.clone())])
            .await
            .unwrap();
        for keep in [true, false] {
            let (kept, read, sink) = store
                .read_inspecting("a/b.dcm", keep, Collect(Vec::new(), 0))
                .await
                .unwrap();
            assert_eq!(sink.0, data);
            assert_eq!(sink.1, 3, "1 MiB pieces");
            assert_eq!(read, data.len() as u64);
            assert_eq!(kept.map(|b| b.to_vec()), keep.then(|| data.clone()));
        }
        let missing = store
            .read_inspecting("a/c.dcm", true, Collect(Vec::new(), 0))
            .await;
        assert!(matches!(missing, Err(ObjectError::NotFound)));
    }

    #[tokio::test]
    async fn an_upload_that_cannot_be_moved_to_its_key_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStorage::local(dir.path(), false).unwrap();
        // A file where the final key needs a folder: the move fails.
        store
            .put("studies/1", vec![Bytes::from_static(b"x")])
            .await
            .unwrap();
        let key = ObjectStorage::provisional_key();
        assert!(ObjectStorage::is_provisional(&key));
        let mut upload = store.begin_upload(&key).await.unwrap();
        upload.write(&[7; 1000]).await.unwrap();
        assert!(upload.file_at("studies/1/x.dcm").await.is_err());
        assert!(matches!(store.get(&key).await, Err(ObjectError::NotFound)));
        let left: Vec<String> = walkdir::WalkDir::new(dir.path())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["1"], "only what was there before");
    }

    #[test]
    fn a_file_longer_than_its_size_said_is_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grown");
        let data: Vec<u8> = (0..(3 << 20) + 11).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        for size in [0, 100, data.len() - 1, data.len()] {
            let file = std::fs::File::open(&path).unwrap();
            let (kept, read, sink) =
                read_file_inspecting(file, size, true, Collect(Vec::new(), 0)).unwrap();
            assert_eq!(read, data.len() as u64, "size said {size}");
            assert_eq!(sink.0, data);
            assert_eq!(kept.unwrap().to_vec(), data);
        }
    }

    fn config_with(url: Option<&str>, data_dir: &FsPath) -> crate::config::Config {
        crate::config::Config {
            object_store_url: url.map(str::to_string),
            data_dir: data_dir.to_path_buf(),
            ..Default::default()
        }
    }

    #[test]
    fn the_url_chooses_the_backend_and_a_bad_one_says_what_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let default = ObjectStorage::from_config(&config_with(None, dir.path())).unwrap();
        assert_eq!(default.local_root, Some(dir.path().join("objects")));

        let folder = dir.path().join("elsewhere");
        let url = url::Url::from_directory_path(&folder).unwrap().to_string();
        let local = ObjectStorage::from_config(&config_with(Some(&url), dir.path())).unwrap();
        assert_eq!(local.local_root, Some(folder.clone()));
        assert!(folder.is_dir());

        let s3 = ObjectStorage::from_config(&config_with(Some("s3://bucket/a/b"), dir.path()))
            .expect("built without a request");
        assert_eq!(s3.location(), "s3://bucket/a/b");
        assert!(s3.local_root.is_none());

        for (url, says) in [
            ("not a url", "s3://bucket/prefix"),
            ("ftp://host/x", "scheme ftp:// is not supported"),
            ("file://host/x", "absolute local folder"),
        ] {
            let err = ObjectStorage::from_config(&config_with(Some(url), dir.path()))
                .expect_err(url)
                .to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn instance_keys_follow_the_hierarchy_and_name_the_data_set() {
        let key = |sha: &str| {
            ObjectStorage::instance_key(
                &StudyInstanceUid::new("1.2").unwrap(),
                &SeriesInstanceUid::new("1.2.3").unwrap(),
                &SopInstanceUid::new("1.2.3.4").unwrap(),
                sha,
            )
        };
        let sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            key(sha),
            "studies/1.2/series/1.2.3/instances/1.2.3.4.0123456789abcdef.dcm"
        );
        assert_ne!(
            key(sha),
            key(&sha.replace('0', "f")),
            "another data set, another key"
        );
    }
}
