//! The metadata index in SQLite (WAL mode): patient / study / series / instance rows holding every
//! attribute C-FIND and QIDO-RS match on or return, plus each instance's DICOM JSON metadata.
//!
//! Writes go through one writer thread that commits whatever is queued in one transaction (group
//! commit): many concurrent associations cost one fsync per batch instead of one each. Each
//! request runs inside its own savepoint so one bad row never fails its neighbours. A request is
//! answered only after the COMMIT returned, so an acknowledged instance is in the index.
//!
//! Reads use a small pool of read-only connections; WAL lets them run beside the writer.
//!
//! Both are private to `store/`: the rest of tramy calls [`Index`]'s domain methods (here and in
//! `query.rs`, `findings.rs`, `damage.rs`), each naming its caller and passing `Index::admit`.
//! The schema is built and upgraded by `migrations.rs`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::db::{params, Connection, DbError, Engine, OptionalExtension};
use tokio::sync::oneshot;

use crate::access::{Action, Principal};
use crate::config::DuplicatePolicy;
use crate::dicom::{InstanceAttributes, SopInstanceUid};

/// Errors from the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The database (SQLite or PostgreSQL) failed.
    #[error("index database: {0}")]
    Database(#[from] DbError),
    /// The writer thread is gone (the server is shutting down).
    #[error("the index writer has stopped")]
    WriterGone,
    /// A blocking task panicked or was cancelled.
    #[error("index task failed: {0}")]
    Task(String),
    /// The index schema cannot be brought to this version of tramy (a failed migration, or a
    /// data folder written by a newer tramy).
    #[error("index schema migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// The index was written by a newer tramy; this one would misread it, and never downgrades.
    #[error(
        "the index was written by a newer tramy (schema version {found}; this tramy knows up to \
         {known}): run that tramy, or an index from before the upgrade"
    )]
    NewerSchema {
        /// The index's schema version.
        found: usize,
        /// The latest this tramy knows.
        known: usize,
    },
    /// The caller's roles do not allow the action (issue #9): answered as 403 / "Refused: Not
    /// Authorized", never with what exists.
    #[error("not allowed: {subject} may not {action:?}")]
    Forbidden {
        /// Who asked (`token:<id>`, `ae:<title>`, …); never a credential.
        subject: String,
        /// What was refused.
        action: Action,
    },
    /// The index cannot be opened.
    #[error("cannot open index {location}: {source}")]
    Open {
        /// The file, or the PostgreSQL server (without its password).
        location: String,
        /// What the engine said.
        source: DbError,
    },
    /// `TRAMY_INDEX_URL` names no engine tramy knows.
    #[error(
        "index URL {0:?} is not one tramy knows: use sqlite:///path/to/index.sqlite (the default, \
         in the data folder) or postgres://user@host:port/database"
    )]
    Url(String),
}

impl From<rusqlite::Error> for IndexError {
    fn from(e: rusqlite::Error) -> Self {
        IndexError::Database(DbError::Sqlite(e))
    }
}

/// Where the index lives: chosen by `index_url` (`TRAMY_INDEX_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexLocation {
    /// An SQLite file (default: `index.sqlite` in the data folder).
    Sqlite(PathBuf),
    /// A PostgreSQL database, as a libpq-style URL.
    Postgres(String),
}

impl IndexLocation {
    /// The location `url` names; `None` is the SQLite file in `data_dir`.
    pub fn parse(url: Option<&str>, data_dir: &Path) -> Result<IndexLocation, IndexError> {
        let Some(url) = url.filter(|u| !u.is_empty()) else {
            return Ok(IndexLocation::Sqlite(data_dir.join("index.sqlite")));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(IndexLocation::Postgres(url.to_owned()));
        }
        match url.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => Ok(IndexLocation::Sqlite(PathBuf::from(path))),
            _ => Err(IndexError::Url(redact_password(url))),
        }
    }

    /// What to name in messages: the file, or the server and database without a password.
    pub fn describe(&self) -> String {
        match self {
            IndexLocation::Sqlite(path) => path.display().to_string(),
            IndexLocation::Postgres(url) => redact_password(url),
        }
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

/// An instance to file, with everything the index keeps about it.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// Indexed attributes.
    pub attributes: InstanceAttributes,
    /// Transfer Syntax UID it is stored in (as received).
    pub transfer_syntax_uid: String,
    /// Object key in the object store.
    pub object_key: String,
    /// Size of the stored Part 10 object in bytes.
    pub size_bytes: i64,
    /// Hex SHA-256 of the data set bytes as received.
    pub sha256: String,
    /// Calling AE title (DIMSE) or client identity (HTTP) of the sender.
    pub source: String,
    /// Network address of the sender.
    pub source_address: String,
    /// DICOM JSON metadata without bulk data.
    pub metadata_json: String,
    /// Triage models whose routing matches this instance: a job each is queued with the rows.
    pub triage_models: Vec<String>,
    /// Priority of those jobs (higher first).
    pub triage_priority: i64,
    /// When it was received (RFC 3339); `None` means now. Re-indexing an existing object keeps
    /// the time the object was written.
    pub received_at: Option<String>,
    /// The facility it belongs to: the sender's. `None` (tramy's own reports, re-indexing): the
    /// facility that holds the study already, else `LOCAL`.
    pub facility: Option<String>,
    /// Destinations it is queued for in the same commit (forwarding rules, issue #10).
    pub forward: Vec<crate::forward::rules::OutboxEntry>,
    /// Queue it, too, for every destination its study is queued for (tramy's findings SR
    /// travels with the study).
    pub forward_with_study: bool,
}

/// What the index did with a [`NewInstance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// A new instance was filed.
    Stored,
    /// The same bytes were already filed; nothing changed.
    Duplicate,
    /// Other bytes are filed under this SOP Instance UID and were kept (policy keep-first).
    ConflictKept,
    /// Other bytes are filed under this SOP Instance UID; the new instance was refused (policy reject).
    ConflictRejected,
    /// The previous instance under this SOP Instance UID was replaced (policy overwrite).
    Replaced {
        /// Key of the replaced object, when it differs from the new one and should be deleted.
        previous_object_key: Option<String>,
    },
}

/// An instance as filed, enough to retrieve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// Transfer Syntax UID as stored.
    pub transfer_syntax_uid: String,
    /// Object key.
    pub object_key: String,
    /// Object size in bytes.
    pub size_bytes: i64,
    /// Hex SHA-256 of the data set.
    pub sha256: String,
}

/// Upper-cases a person name for case-insensitive matching, Unicode-aware so Vietnamese names
/// match whatever their case.
pub fn normalise_person_name(name: &str) -> String {
    name.to_uppercase()
}

/// The patient identity key: PatientID with its issuer, or, for a patient without an ID, a key of
/// its own per study so unidentified patients are never merged.
fn patient_key(a: &InstanceAttributes) -> String {
    if a.patient.patient_id.is_empty() {
        format!("\u{1}unidentified\u{1}{}", a.study.study_instance_uid)
    } else {
        format!(
            "{}\u{1}{}",
            a.patient.patient_id, a.patient.issuer_of_patient_id
        )
    }
}

/// One write in a group commit: applied inside the batch transaction (in its own savepoint),
/// answered once the transaction has committed.
pub(super) trait WriteOp: Send {
    fn apply(&mut self, conn: &Connection) -> super::db::Result<()>;
    fn finish(self: Box<Self>, committed: Result<(), IndexError>);
    /// Whether `apply` may run again after its savepoint was rolled back (another node's
    /// writer committed the same row first, or the engine broke a deadlock).
    fn can_retry(&self) -> bool {
        false
    }
    /// Whether it appends to the audit chain, whose head it locks on PostgreSQL: such writes go
    /// first in their batch, so every node's writer takes that lock before any row's and two
    /// batches never wait on each other in a cycle.
    fn takes_chain_head(&self) -> bool {
        false
    }
}

pub(super) type WriteRequest = Box<dyn WriteOp>;

struct InstanceWrite {
    instance: NewInstance,
    policy: DuplicatePolicy,
    outcome: Option<CommitOutcome>,
    reply: oneshot::Sender<Result<CommitOutcome, IndexError>>,
}

impl WriteOp for InstanceWrite {
    fn apply(&mut self, conn: &Connection) -> super::db::Result<()> {
        self.outcome = Some(apply_instance(conn, &self.instance, self.policy)?);
        Ok(())
    }
    fn can_retry(&self) -> bool {
        true
    }
    fn finish(self: Box<Self>, committed: Result<(), IndexError>) {
        let this = *self;
        let result = committed.and_then(|()| this.outcome.ok_or(IndexError::WriterGone));
        let _ = this.reply.send(result);
    }
}

struct ClosureWrite<T, F> {
    f: Option<F>,
    value: Option<T>,
    reply: oneshot::Sender<Result<T, IndexError>>,
}

impl<T, F> WriteOp for ClosureWrite<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> super::db::Result<T> + Send,
{
    fn apply(&mut self, conn: &Connection) -> super::db::Result<()> {
        if let Some(f) = self.f.take() {
            self.value = Some(f(conn)?);
        }
        Ok(())
    }
    fn finish(self: Box<Self>, committed: Result<(), IndexError>) {
        let this = *self;
        let result = committed.and_then(|()| this.value.ok_or(IndexError::WriterGone));
        let _ = this.reply.send(result);
    }
}

/// The index handle, the archive's data API; cheap to clone.
#[derive(Clone)]
pub struct Index {
    writer: mpsc::SyncSender<WriteRequest>,
    readers: Arc<ReaderPool>,
    /// Audit events on their way to the writer in batches (`audit.rs`).
    pub(super) audit: Arc<super::audit::AuditQueue>,
    /// This process among the nodes sharing the index: what its claims and leases name.
    node: Arc<str>,
    /// What every run of this node shares ([`node_home`]); empty until [`Index::at_home`].
    node_home: Arc<str>,
}

struct ReaderPool {
    location: IndexLocation,
    /// Idle connections, and how many are open in all (PostgreSQL's are counted).
    idle: Mutex<(Vec<Connection>, usize)>,
    /// Signalled when a connection is given back.
    returned: std::sync::Condvar,
}

/// Most reader connections one node opens to PostgreSQL, where each is a server process: more
/// concurrent reads wait for one. (SQLite's are a file handle each, opened as needed.)
const MAX_POSTGRES_READERS: usize = 32;

impl ReaderPool {
    fn new(location: IndexLocation) -> ReaderPool {
        ReaderPool {
            location,
            idle: Mutex::new((Vec::new(), 0)),
            returned: std::sync::Condvar::new(),
        }
    }

    fn take(&self) -> Result<Connection, IndexError> {
        let poisoned = |e: std::sync::PoisonError<_>| IndexError::Task(format!("{e}"));
        let mut idle = self.idle.lock().map_err(poisoned)?;
        loop {
            if let Some(conn) = idle.0.pop() {
                return Ok(conn);
            }
            let bounded = matches!(self.location, IndexLocation::Postgres(_));
            if !bounded || idle.1 < MAX_POSTGRES_READERS {
                break;
            }
            idle = self.returned.wait(idle).map_err(poisoned)?;
        }
        idle.1 += 1;
        drop(idle);
        let opened = self.open();
        if opened.is_err() {
            self.forget_one();
        }
        opened
    }

    fn open(&self) -> Result<Connection, IndexError> {
        match &self.location {
            IndexLocation::Sqlite(path) => {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(std::time::Duration::from_secs(30))?;
                Ok(Connection::sqlite(conn))
            }
            IndexLocation::Postgres(url) => {
                let conn = connect_postgres(url)?;
                conn.execute_batch("SET default_transaction_read_only = on")?;
                Ok(conn)
            }
        }
    }

    /// One open connection fewer (closed, or failed to open).
    fn forget_one(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.1 = idle.1.saturating_sub(1);
        }
        self.returned.notify_one();
    }

    /// Keeps `conn` for the next read, unless its server connection was lost (PostgreSQL
    /// restarted) or enough are idle already.
    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.0.len() < 16 && !conn.is_closed() {
                idle.0.push(conn);
                drop(idle);
                self.returned.notify_one();
                return;
            }
        }
        drop(conn);
        self.forget_one();
    }
}

impl Index {
    /// Opens (creating if needed) the index at `path`. With `fsync`, every commit reaches stable
    /// storage (`synchronous=FULL`); without, commits survive a process crash but not power loss.
    pub fn open(path: &Path, fsync: bool) -> Result<Index, IndexError> {
        Index::open_at(&IndexLocation::Sqlite(path.to_owned()), fsync)
    }

    /// Opens the index at `location`, creating or upgrading its schema. On PostgreSQL, `fsync`
    /// is the server's business (its `synchronous_commit`); tramy's commits wait for it.
    pub fn open_at(location: &IndexLocation, fsync: bool) -> Result<Index, IndexError> {
        off_runtime(|| Index::open_blocking(location, fsync))
    }

    fn open_blocking(location: &IndexLocation, fsync: bool) -> Result<Index, IndexError> {
        let mut conn = match location {
            IndexLocation::Sqlite(path) => open_sqlite_writer(path, fsync)?,
            IndexLocation::Postgres(url) => connect_postgres(url)?,
        };
        let found = super::migrations::version(&conn)?;
        if found > super::migrations::SCHEMA_VERSION {
            return Err(IndexError::NewerSchema {
                found,
                known: super::migrations::SCHEMA_VERSION,
            });
        }
        super::migrations::to_latest(&mut conn)?;
        let backfilled = super::names::backfill(&conn)?;
        if backfilled > 0 {
            tracing::info!(
                patients = backfilled,
                "filed the name words of patients indexed before migration 10"
            );
        }

        let (tx, rx) = mpsc::sync_channel::<WriteRequest>(4096);
        std::thread::Builder::new()
            .name("index-writer".into())
            .spawn({
                let location = location.clone();
                move || writer_loop(conn, rx, location)
            })
            .map_err(|e| IndexError::Task(e.to_string()))?;
        let audit = super::audit::spawn_batcher(tx.clone())?;
        Ok(Index {
            audit,
            node: node_name(&format!("{}::", host_name())).into(),
            node_home: Arc::from(""),
            writer: tx,
            readers: Arc::new(ReaderPool::new(location.clone())),
        })
    }

    /// This process's name among the nodes sharing the index (`host:home:pid-random`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The index as the node whose data folder is `data_dir`: its claims and leases carry the
    /// folder's [`node_home`], so its next run takes them over at once.
    pub fn at_home(mut self, data_dir: &Path) -> Index {
        let home = node_home(data_dir);
        self.node = node_name(&home).into();
        self.node_home = home.into();
        self
    }

    /// What every run of this node shares (empty when not [`Index::at_home`]).
    pub(super) fn node_home(&self) -> &str {
        &self.node_home
    }

    /// Which engine the index runs on.
    pub fn engine(&self) -> Engine {
        match self.readers.location {
            IndexLocation::Sqlite(_) => Engine::Sqlite,
            IndexLocation::Postgres(_) => Engine::Postgres,
        }
    }

    /// Files an instance under `policy`; returns once the transaction holding it has committed.
    pub async fn commit_instance(
        &self,
        who: &Principal,
        instance: NewInstance,
        policy: DuplicatePolicy,
    ) -> Result<CommitOutcome, IndexError> {
        self.admit(who, Action::Store)?;
        let (reply, answer) = oneshot::channel();
        let request: WriteRequest = Box::new(InstanceWrite {
            instance,
            policy,
            outcome: None,
            reply,
        });
        self.submit(request).await?;
        answer.await.map_err(|_| IndexError::WriterGone)?
    }

    /// The one checkpoint: every public method of the index passes here with its caller and
    /// action before it touches data, and is refused when the caller's roles do not allow the
    /// action. What an admitted caller may see is narrowed by each query from
    /// [`Principal::visibility`] (`query.rs`, `findings.rs`).
    pub(super) fn admit(&self, who: &Principal, action: Action) -> Result<(), IndexError> {
        if who.permits(action) {
            tracing::trace!(caller = who.subject(), ?action, "index access");
            Ok(())
        } else {
            Err(IndexError::Forbidden {
                subject: who.subject().to_string(),
                action,
            })
        }
    }

    /// Runs `f` in the writer's next group commit; returns its value once committed. For the
    /// index's other writes (triage jobs, findings, damage marks), behind their domain methods.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> super::db::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let request: WriteRequest = Box::new(ClosureWrite {
            f: Some(f),
            value: None,
            reply,
        });
        self.submit(request).await?;
        answer.await.map_err(|_| IndexError::WriterGone)?
    }

    /// Queues `request` for the writer's next group commit (the audit trail's appends, in
    /// `audit.rs`, are answered without waiting for it).
    pub(super) async fn submit(&self, request: WriteRequest) -> Result<(), IndexError> {
        let writer = self.writer.clone();
        // The channel is bounded: only when the writer is saturated does sending block, and then
        // it waits in the blocking pool rather than on an async worker.
        match writer.try_send(request) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(request)) => {
                tokio::task::spawn_blocking(move || writer.send(request).map_err(|_| ()))
                    .await
                    .map_err(|e| IndexError::Task(e.to_string()))?
                    .map_err(|_| IndexError::WriterGone)?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(IndexError::WriterGone),
        }
        Ok(())
    }

    /// Runs `f` on a read-only connection in the blocking pool.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, IndexError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = f(&conn);
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|e| IndexError::Task(e.to_string()))?
    }

    /// Runs `f` on a read-only connection on the calling thread. For point lookups that take
    /// microseconds (WAL readers never wait for the writer), where a hand-off to the blocking pool
    /// would cost more than the query.
    pub(super) fn read_now<T: Send>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, IndexError> + Send,
    ) -> Result<T, IndexError> {
        let read = || {
            let conn = self.readers.take()?;
            let result = f(&conn);
            self.readers.give_back(conn);
            result
        };
        match self.engine() {
            Engine::Sqlite => read(),
            Engine::Postgres => off_runtime(read),
        }
    }

    /// [`Index::instance`] on the calling thread (a primary-key lookup).
    pub fn instance_now(
        &self,
        who: &Principal,
        sop: &SopInstanceUid,
    ) -> Result<Option<StoredInstance>, IndexError> {
        // Ingest's duplicate and conflict check: it must see every filed instance, whoever filed
        // it, so it is admitted as part of storing, never narrowed to what `who` may read.
        self.admit(who, Action::Store)?;
        self.read_now(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "{STORED_INSTANCE_SELECT} WHERE i.sop_instance_uid = ?1"
                ))?
                .query_row([sop.as_str()], stored_instance_from_row)
                .optional()?)
        })
    }

    /// The filed instance with this SOP Instance UID, if any.
    pub async fn instance(
        &self,
        who: &Principal,
        sop: &SopInstanceUid,
    ) -> Result<Option<StoredInstance>, IndexError> {
        self.admit(who, Action::Query)?;
        let sop = sop.as_str().to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("{STORED_INSTANCE_SELECT} WHERE i.sop_instance_uid = ?1"),
                    [sop],
                    stored_instance_from_row,
                )
                .optional()?)
        })
        .await
    }

    /// Whether the row of `sop` points at `object_key`.
    pub async fn refers_to(
        &self,
        who: &Principal,
        sop: &SopInstanceUid,
        object_key: &str,
    ) -> Result<bool, IndexError> {
        self.admit(who, Action::Store)?;
        let (sop, key) = (sop.as_str().to_owned(), object_key.to_owned());
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM instances WHERE sop_instance_uid = ?1 AND object_key = ?2",
                    [sop, key],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
        .await
    }

    /// Whether an instance row refers to the object at `object_key`.
    pub async fn object_is_indexed(
        &self,
        who: &Principal,
        object_key: &str,
    ) -> Result<bool, IndexError> {
        self.admit(who, Action::Integrity)?;
        let key = object_key.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM instances WHERE object_key = ?1")?
                .exists([key])?)
        })
        .await
    }

    /// Every object key the index refers to.
    pub async fn object_keys(
        &self,
        who: &Principal,
    ) -> Result<std::collections::HashSet<String>, IndexError> {
        self.admit(who, Action::Integrity)?;
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT object_key FROM instances")?;
            let keys = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            Ok(keys)
        })
        .await
    }

    /// Number of filed instances.
    pub async fn instance_count(&self, who: &Principal) -> Result<i64, IndexError> {
        self.admit(who, Action::Query)?;
        self.read(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM instances", [], |r| r.get(0))?))
            .await
    }

    /// Number of instances received at or after `since` (RFC 3339 prefix; empty: all).
    pub async fn instance_count_since(
        &self,
        who: &Principal,
        since: &str,
    ) -> Result<i64, IndexError> {
        self.admit(who, Action::Integrity)?;
        let since = since.to_owned();
        self.read(move |conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM instances WHERE received_at >= ?1",
                [since],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Up to `limit` instances received at or after `since`, in filing order after row `after`,
    /// each with its row number (the cursor for the next page).
    pub async fn instances_after(
        &self,
        who: &Principal,
        after: i64,
        since: &str,
        limit: usize,
    ) -> Result<Vec<(i64, StoredInstance)>, IndexError> {
        self.admit(who, Action::Integrity)?;
        let since = since.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT i.id, {} WHERE i.id > ?1 AND i.received_at >= ?2 ORDER BY i.id LIMIT ?3",
                STORED_INSTANCE_SELECT.trim_start_matches("SELECT ")
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params![after, since, limit as i64], |r| {
                    let id: i64 = r.get(0)?;
                    Ok((id, stored_instance_at(r, 1)?))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }
}

/// SELECT list matching [`stored_instance_from_row`].
pub(super) const STORED_INSTANCE_SELECT: &str = "SELECT st.study_instance_uid, se.series_instance_uid, \
     i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.object_key, i.size_bytes, i.sha256 \
     FROM instances i JOIN series se ON i.series_fk = se.id JOIN studies st ON se.study_fk = st.id";

/// Reads a row selected with [`STORED_INSTANCE_SELECT`].
pub(super) fn stored_instance_from_row(
    r: &super::db::Row<'_>,
) -> super::db::Result<StoredInstance> {
    stored_instance_at(r, 0)
}

/// [`stored_instance_from_row`] for a row whose selected columns start at column `first`.
fn stored_instance_at(r: &super::db::Row<'_>, first: usize) -> super::db::Result<StoredInstance> {
    Ok(StoredInstance {
        study_instance_uid: r.get(first)?,
        series_instance_uid: r.get(first + 1)?,
        sop_instance_uid: r.get(first + 2)?,
        sop_class_uid: r.get(first + 3)?,
        transfer_syntax_uid: r.get(first + 4)?,
        object_key: r.get(first + 5)?,
        size_bytes: r.get(first + 6)?,
        sha256: r.get(first + 7)?,
    })
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<WriteRequest>, location: IndexLocation) {
    const MAX_BATCH: usize = 512;
    while let Ok(first) = rx.recv() {
        if conn.is_closed() {
            conn = reconnect_writer(conn, &location);
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        match commit_batch(&mut conn, &mut batch) {
            Ok(outcomes) => {
                for (req, outcome) in batch.into_iter().zip(outcomes) {
                    req.finish(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "index commit failed; {} write(s) lost", batch.len());
                for req in batch {
                    req.finish(Err(IndexError::Task(format!("index commit failed: {e}"))));
                }
            }
        }
    }
}

/// A new connection for the writer when PostgreSQL ended the old one (a restart, a failover to
/// its replica); the old one when that fails, so this batch fails with the reason and the next
/// tries again.
fn reconnect_writer(old: Connection, location: &IndexLocation) -> Connection {
    let IndexLocation::Postgres(url) = location else {
        return old;
    };
    match connect_postgres(url) {
        Ok(conn) => {
            tracing::warn!("the index writer's connection was lost; reconnected");
            conn
        }
        Err(e) => {
            tracing::error!(error = %e, "the index writer cannot reconnect");
            old
        }
    }
}

/// Opens the SQLite file the writer uses, in WAL mode.
fn open_sqlite_writer(path: &Path, fsync: bool) -> Result<Connection, IndexError> {
    let conn = rusqlite::Connection::open(path).map_err(|source| IndexError::Open {
        location: path.display().to_string(),
        source: source.into(),
    })?;
    // First, so that opening beside a running server (the registry commands, `tramy
    // verify`) waits for its write lock instead of failing with SQLITE_BUSY.
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(Connection::sqlite(conn))
}

/// This machine's name, for node names.
fn host_name() -> String {
    let mut host = [0u8; 256];
    // SAFETY: gethostname writes at most `host.len()` bytes into the buffer it is given.
    let ok = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0;
    let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
    if ok {
        String::from_utf8_lossy(&host[..end]).into_owned()
    } else {
        "node".into()
    }
}

/// The part of a node's name its every run shares: the machine and the data folder
/// (`host:1a2b3c4d:`). A process finding claims or leases under it that are not its own knows
/// they are a previous run's, which died: it takes them over at once instead of waiting for
/// them to run out.
pub fn node_home(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let hash = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!("{}:{}:", host_name(), hex::encode(&hash[..4]))
}

/// A name for this process that no other node shares: its home (or the machine alone), the
/// process id and a random suffix.
fn node_name(home: &str) -> String {
    let mut random = [0u8; 3];
    let _ = getrandom::fill(&mut random);
    format!("{home}{}-{}", std::process::id(), hex::encode(random))
}

/// Runs `f`, which may block on the PostgreSQL client's own runtime, where tokio allows that: on
/// this thread when it drives no async tasks, else after telling tokio this worker blocks
/// (`block_in_place`), or on a thread of its own under a single-threaded runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
        Err(_) => f(),
    }
}

/// Connects to the PostgreSQL database at `url`.
fn connect_postgres(url: &str) -> Result<Connection, IndexError> {
    let client =
        postgres::Client::connect(url, postgres::NoTls).map_err(|source| IndexError::Open {
            location: redact_password(url),
            source: source.into(),
        })?;
    Ok(Connection::postgres(client))
}

/// How many times a write that lost a race with another node's writer is tried again.
const RETRIES: usize = 3;

fn commit_batch(
    conn: &mut Connection,
    batch: &mut [WriteRequest],
) -> Result<Vec<Result<(), IndexError>>, DbError> {
    conn.execute_batch(match conn.engine() {
        // Take the write lock now: a read that upgrades later could fail with SQLITE_BUSY.
        Engine::Sqlite => "BEGIN IMMEDIATE",
        Engine::Postgres => "BEGIN",
    })?;
    if conn.engine() == Engine::Postgres {
        batch.sort_by_key(|req| !req.takes_chain_head());
    }
    let applied = apply_batch(conn, batch);
    let ended = match &applied {
        Ok(_) => conn.execute_batch("COMMIT"),
        Err(_) => conn.execute_batch("ROLLBACK"),
    };
    match (applied, ended) {
        (Ok(outcomes), Ok(())) => Ok(outcomes),
        (Err(e), _) | (Ok(_), Err(e)) => {
            // Leave the connection outside any transaction for the next batch.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Applies each write in its own savepoint, so one failing write never fails its neighbours.
fn apply_batch(
    conn: &Connection,
    batch: &mut [WriteRequest],
) -> Result<Vec<Result<(), IndexError>>, DbError> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for req in batch.iter_mut() {
        let mut tries = 0;
        loop {
            conn.execute_batch("SAVEPOINT write_op")?;
            match req.apply(conn) {
                Ok(()) => {
                    conn.execute_batch("RELEASE write_op")?;
                    outcomes.push(Ok(()));
                    break;
                }
                Err(e) => {
                    conn.execute_batch("ROLLBACK TO write_op; RELEASE write_op")?;
                    let lost_race = e.is_unique_violation() || e.is_transient();
                    if lost_race
                        && req.can_retry()
                        && conn.engine() == Engine::Postgres
                        && tries < RETRIES
                    {
                        tries += 1;
                        continue;
                    }
                    outcomes.push(Err(IndexError::Database(e)));
                    break;
                }
            }
        }
    }
    Ok(outcomes)
}

fn apply_instance(
    tx: &Connection,
    inst: &NewInstance,
    policy: DuplicatePolicy,
) -> super::db::Result<CommitOutcome> {
    let a = &inst.attributes;
    let existing: Option<(i64, String, String, String)> = tx
        .query_row(
            "SELECT id, sha256, object_key, facility FROM instances WHERE sop_instance_uid = ?1",
            [a.sop_instance_uid.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((id, sha, key, owner)) = existing else {
        let facility = insert_instance(tx, inst)?;
        queue_triage(tx, inst)?;
        super::outbox::queue_instance(tx, inst, &facility)?;
        return Ok(CommitOutcome::Stored);
    };
    if sha == inst.sha256 {
        return Ok(CommitOutcome::Duplicate);
    }
    // One facility never replaces another's instance, whatever the policy.
    let foreign = inst.facility.as_deref().is_some_and(|f| f != owner);
    match policy {
        DuplicatePolicy::Overwrite if foreign => Ok(CommitOutcome::ConflictRejected),
        DuplicatePolicy::KeepFirst => Ok(CommitOutcome::ConflictKept),
        DuplicatePolicy::Reject => Ok(CommitOutcome::ConflictRejected),
        DuplicatePolicy::Overwrite => {
            remove_instance(tx, id)?;
            let facility = insert_instance(tx, inst)?;
            super::outbox::queue_instance(tx, inst, &facility)?;
            // The new data set is triaged afresh; what was found on the old one no longer holds.
            exec(
                tx,
                "DELETE FROM findings WHERE sop_instance_uid = ?1",
                [a.sop_instance_uid.as_str()],
            )?;
            exec(
                tx,
                "DELETE FROM triage_jobs WHERE sop_instance_uid = ?1",
                [a.sop_instance_uid.as_str()],
            )?;
            queue_triage(tx, inst)?;
            Ok(CommitOutcome::Replaced {
                previous_object_key: (key != inst.object_key).then_some(key),
            })
        }
    }
}

/// Queues a triage job per routed model, in the same transaction as the instance rows, so a job
/// exists exactly when its instance does.
fn queue_triage(tx: &Connection, inst: &NewInstance) -> super::db::Result<()> {
    let now = super::times::now();
    for model in &inst.triage_models {
        exec(
            tx,
            "INSERT INTO triage_jobs (sop_instance_uid, model, priority, not_before, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT DO NOTHING",
            params![
                inst.attributes.sop_instance_uid.as_str(),
                model,
                inst.triage_priority,
                now
            ],
        )?;
    }
    Ok(())
}

/// `execute` through the statement cache: the writer runs the same few statements for every
/// instance, and parsing them each time showed in profiles.
fn exec(conn: &Connection, sql: &str, params: impl super::db::Params) -> super::db::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn upsert_patient(tx: &Connection, a: &InstanceAttributes) -> super::db::Result<i64> {
    let key = patient_key(a);
    if let Some(id) = tx
        .query_row(
            "SELECT id FROM patients WHERE patient_key = ?1",
            [&key],
            |r| r.get(0),
        )
        .optional()?
    {
        return Ok(id);
    }
    let p = &a.patient;
    let id = insert_returning_id(
        tx,
        "INSERT INTO patients (patient_key, patient_id, issuer_of_patient_id, patient_name, \
         patient_name_norm, birth_date, sex, name_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         RETURNING id",
        params![
            key,
            p.patient_id,
            p.issuer_of_patient_id,
            p.patient_name,
            normalise_person_name(&p.patient_name),
            p.birth_date,
            p.sex,
            crate::dicom::person_name::name_key(&p.patient_name)
        ],
    )?;
    super::names::file_patient(tx, id, p)?;
    Ok(id)
}

/// Runs an `INSERT … RETURNING id` through the statement cache; returns the new row's id.
fn insert_returning_id(
    tx: &Connection,
    sql: &str,
    params: impl super::db::Params,
) -> super::db::Result<i64> {
    tx.prepare_cached(sql)?.query_row(params, |r| r.get(0))
}

/// Files the rows of a new instance; returns the facility it belongs to.
fn insert_instance(tx: &Connection, inst: &NewInstance) -> super::db::Result<String> {
    let a = &inst.attributes;
    let now = super::times::now();

    let study: Option<(i64, i64)> = tx
        .query_row(
            "SELECT id, patient_fk FROM studies WHERE study_instance_uid = ?1",
            [a.study.study_instance_uid.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (study_id, patient_id) = match study {
        Some(ids) => ids,
        None => {
            let patient_id = upsert_patient(tx, a)?;
            let s = &a.study;
            let study_id = insert_returning_id(
                tx,
                "INSERT INTO studies (study_instance_uid, patient_fk, study_date, study_time, \
                 accession_number, study_id, referring_physician_name, referring_physician_name_norm, \
                 study_description, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 RETURNING id",
                params![
                    s.study_instance_uid.as_str(),
                    patient_id,
                    s.study_date,
                    s.study_time,
                    s.accession_number,
                    s.study_id,
                    s.referring_physician_name,
                    normalise_person_name(&s.referring_physician_name),
                    s.study_description,
                    now
                ],
            )?;
            exec(
                tx,
                "UPDATE patients SET num_studies = num_studies + 1 WHERE id = ?1",
                [patient_id],
            )?;
            (study_id, patient_id)
        }
    };

    let series_id: Option<i64> = tx
        .query_row(
            "SELECT id FROM series WHERE series_instance_uid = ?1",
            [a.series.series_instance_uid.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let series_id = match series_id {
        Some(id) => id,
        None => {
            let s = &a.series;
            let id = insert_returning_id(
                tx,
                "INSERT INTO series (series_instance_uid, study_fk, modality, series_number, \
                 series_description, body_part_examined, series_date, series_time) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                params![
                    s.series_instance_uid.as_str(),
                    study_id,
                    s.modality,
                    s.series_number,
                    s.series_description,
                    s.body_part_examined,
                    s.series_date,
                    s.series_time
                ],
            )?;
            exec(
                tx,
                "UPDATE studies SET num_series = num_series + 1 WHERE id = ?1",
                [study_id],
            )?;
            exec(
                tx,
                "UPDATE patients SET num_series = num_series + 1 WHERE id = ?1",
                [patient_id],
            )?;
            refresh_modalities(tx, study_id)?;
            id
        }
    };

    let facility = owning_facility(tx, inst, study_id)?;
    exec(
        tx,
        "INSERT INTO study_facilities (study_fk, facility) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![study_id, facility],
    )?;
    exec(
        tx,
        "INSERT INTO instances (sop_instance_uid, series_fk, sop_class_uid, instance_number, rows, \
         columns, number_of_frames, transfer_syntax_uid, object_key, size_bytes, sha256, received_at, \
         source, source_address, metadata_json, facility) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            a.sop_instance_uid.as_str(),
            series_id,
            a.sop_class_uid.as_str(),
            a.instance_number,
            a.rows,
            a.columns,
            a.number_of_frames,
            inst.transfer_syntax_uid,
            inst.object_key,
            inst.size_bytes,
            inst.sha256,
            inst.received_at.as_deref().unwrap_or(&now),
            inst.source,
            inst.source_address,
            inst.metadata_json,
            facility
        ],
    )?;
    exec(
        tx,
        "UPDATE series SET num_instances = num_instances + 1 WHERE id = ?1",
        [series_id],
    )?;
    exec(
        tx,
        "UPDATE studies SET num_instances = num_instances + 1 WHERE id = ?1",
        [study_id],
    )?;
    exec(
        tx,
        "UPDATE patients SET num_instances = num_instances + 1 WHERE id = ?1",
        [patient_id],
    )?;
    Ok(facility)
}

/// The facility a new instance belongs to: its sender's; for tramy's own filings (reports,
/// re-indexing), the facility that already holds the study, else `LOCAL`.
fn owning_facility(
    tx: &Connection,
    inst: &NewInstance,
    study_id: i64,
) -> super::db::Result<String> {
    if let Some(facility) = &inst.facility {
        return Ok(facility.clone());
    }
    Ok(tx
        .query_row(
            "SELECT facility FROM study_facilities WHERE study_fk = ?1 ORDER BY facility LIMIT 1",
            [study_id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_else(|| crate::registry::LOCAL_FACILITY.to_string()))
}

fn refresh_modalities(tx: &Connection, study_id: i64) -> super::db::Result<()> {
    // string_agg with ORDER BY: PostgreSQL's, and SQLite's since 3.44.
    let sql = "UPDATE studies SET modalities_in_study = COALESCE((SELECT string_agg(m, '\\' ORDER BY m) FROM \
         (SELECT DISTINCT modality AS m FROM series WHERE study_fk = ?1 AND modality <> '') AS d), '') \
         WHERE id = ?1";
    exec(tx, sql, [study_id])?;
    Ok(())
}

/// Removes an instance row and keeps the counters of its series, study and patient right.
fn remove_instance(tx: &Connection, instance_id: i64) -> super::db::Result<()> {
    let (series_id, study_id, patient_id): (i64, i64, i64) = tx.query_row(
        "SELECT se.id, st.id, st.patient_fk FROM instances i JOIN series se ON i.series_fk = se.id \
         JOIN studies st ON se.study_fk = st.id WHERE i.id = ?1",
        [instance_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    tx.execute("DELETE FROM instances WHERE id = ?1", [instance_id])?;
    exec(
        tx,
        "UPDATE series SET num_instances = num_instances - 1 WHERE id = ?1",
        [series_id],
    )?;
    exec(
        tx,
        "UPDATE studies SET num_instances = num_instances - 1 WHERE id = ?1",
        [study_id],
    )?;
    exec(
        tx,
        "UPDATE patients SET num_instances = num_instances - 1 WHERE id = ?1",
        [patient_id],
    )?;
    Ok(())
}
