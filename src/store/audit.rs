//! The audit trail's rows (migration 004): appending events to the hash chain in the writer's
//! group commit, reading them back filtered and scoped, and walking the chain for
//! `tramy audit verify`. What an event says is in `crate::audit`; the serialization the hashes
//! cover is `crate::audit::chain`.
//!
//! The chain is computed on the one writer thread, so its order is the order of the writer's
//! queue: each append reads the newest event's hash and the id counter inside the batch
//! transaction (both a single B-tree step), so a rolled-back savepoint or batch never leaves a
//! cached value behind.

use std::ops::ControlFlow;

use super::db::Value;
use super::db::{params, Connection, Engine, OptionalExtension};
use tokio::sync::oneshot;

use super::index::{Index, IndexError, WriteOp, WriteRequest};
use crate::access::{Action, Principal};
use crate::audit::chain::{self, ChainedFields, CHAIN_VERSION, GENESIS};
use crate::audit::{
    AuditAction, AuditEvent, AuditFilter, AuditOutcome, ChainBreak, ChainReport, NewAuditEvent,
    PatientRef,
};

use super::times::now;

/// An event waiting for the batcher, with the time it was recorded.
pub(super) struct QueuedEvent {
    event: NewAuditEvent,
    time: String,
    /// Told once the batch holding it is committed ([`Index::record_audit_committed`]); such an
    /// event ends its batch at once.
    reply: Option<oneshot::Sender<Result<(), IndexError>>>,
}

/// Events that reach the writer together: one transaction, one fsync, for every request of the
/// last [`BATCH_WINDOW`] (a request-by-request commit each cost a QIDO-RS query a third of its
/// time on two cores).
struct AuditBatch {
    events: Vec<QueuedEvent>,
}

impl WriteOp for AuditBatch {
    fn apply(&mut self, conn: &Connection) -> super::db::Result<()> {
        for queued in &self.events {
            append(conn, &queued.event, &queued.time)?;
        }
        Ok(())
    }

    fn can_retry(&self) -> bool {
        true
    }

    fn takes_chain_head(&self) -> bool {
        true
    }

    fn finish(self: Box<Self>, committed: Result<(), IndexError>) {
        if let Err(e) = &committed {
            // No patient data: how many, and the reason.
            tracing::error!(events = self.events.len(), error = %e, "audit events could not be recorded");
        }
        for queued in self.events {
            if let Some(reply) = queued.reply {
                let _ = reply.send(match &committed {
                    Ok(()) => Ok(()),
                    Err(e) => Err(IndexError::Task(e.to_string())),
                });
            }
        }
    }
}

/// How long the batcher gathers events before handing them to the writer.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);
/// Most events in one batch.
const MAX_BATCH: usize = 1024;
/// Events waiting for the batcher before [`Index::record_audit`] waits for room.
const QUEUE: usize = 8192;

/// Audit events waiting for the batcher. A plain queue under a lock rather than a channel: a
/// request's event wakes the batcher only when it is the first of a batch (or is waited for), so
/// recording costs a request a push, not a thread wake-up.
pub(super) struct AuditQueue {
    events: std::sync::Mutex<Vec<QueuedEvent>>,
    /// Signalled by the first event of a batch and by an event someone waits for.
    arrived: std::sync::Condvar,
    /// Signalled when the batcher takes events, for recorders waiting for room.
    room: std::sync::Condvar,
}

impl AuditQueue {
    /// Adds `queued` if there is room; gives it back otherwise.
    #[allow(clippy::result_large_err)] // the event itself comes back, to wait for room with it
    fn try_push(&self, queued: QueuedEvent) -> Result<(), QueuedEvent> {
        let Ok(mut events) = self.events.lock() else {
            return Err(queued);
        };
        if events.len() >= QUEUE {
            return Err(queued);
        }
        let wake = events.is_empty() || queued.reply.is_some();
        events.push(queued);
        if wake {
            self.arrived.notify_one();
        }
        Ok(())
    }

    /// Adds `queued`, waiting (blocking) for room.
    fn push_waiting(&self, mut queued: QueuedEvent) -> Result<(), IndexError> {
        loop {
            match self.try_push(queued) {
                Ok(()) => return Ok(()),
                Err(back) => queued = back,
            }
            let events = self.events.lock().map_err(|_| IndexError::WriterGone)?;
            let _unused = self
                .room
                .wait_timeout(events, std::time::Duration::from_millis(50))
                .map_err(|_| IndexError::WriterGone)?;
        }
    }
}

/// Starts the thread that gathers audit events into batches for `writer`.
pub(super) fn spawn_batcher(
    writer: std::sync::mpsc::SyncSender<WriteRequest>,
) -> Result<std::sync::Arc<AuditQueue>, IndexError> {
    let queue = std::sync::Arc::new(AuditQueue {
        events: std::sync::Mutex::new(Vec::new()),
        arrived: std::sync::Condvar::new(),
        room: std::sync::Condvar::new(),
    });
    let own = queue.clone();
    std::thread::Builder::new()
        .name("audit-batcher".into())
        .spawn(move || batch_loop(&own, &writer))
        .map_err(|e| IndexError::Task(e.to_string()))?;
    Ok(queue)
}

/// Hands the queue's events to the writer, a batch at most every [`BATCH_WINDOW`] (at once when
/// one is waited for); ends, after a last batch, when no index handle is left.
fn batch_loop(
    queue: &std::sync::Arc<AuditQueue>,
    writer: &std::sync::mpsc::SyncSender<WriteRequest>,
) {
    loop {
        let Some(events) = next_batch(queue) else {
            return;
        };
        if !events.is_empty() && writer.send(Box::new(AuditBatch { events })).is_err() {
            return;
        }
    }
}

/// Waits for a first event, then for the rest of the window (or one that is waited for), and
/// takes up to [`MAX_BATCH`]; `None` when every index handle is gone and nothing is left.
fn next_batch(queue: &std::sync::Arc<AuditQueue>) -> Option<Vec<QueuedEvent>> {
    let idle_check = std::time::Duration::from_secs(1);
    let mut events = queue.events.lock().ok()?;
    while events.is_empty() {
        if std::sync::Arc::strong_count(queue) == 1 {
            return None;
        }
        events = queue.arrived.wait_timeout(events, idle_check).ok()?.0;
    }
    let deadline = std::time::Instant::now() + BATCH_WINDOW;
    loop {
        let waited_for = events.iter().any(|e| e.reply.is_some());
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if waited_for || left.is_zero() || events.len() >= MAX_BATCH {
            break;
        }
        events = queue.arrived.wait_timeout(events, left).ok()?.0;
    }
    let take = events.len().min(MAX_BATCH);
    let batch: Vec<QueuedEvent> = events.drain(..take).collect();
    queue.room.notify_all();
    Some(batch)
}

/// The patient and the owning facilities of the event's study, as the index knows them now.
struct StudyContext {
    patient: Option<PatientRef>,
    facilities: Vec<String>,
}

fn study_context(conn: &Connection, study: &str) -> super::db::Result<Option<StudyContext>> {
    let found: Option<(i64, String, String)> = conn
        .prepare_cached(
            "SELECT s.id, p.patient_id, p.issuer_of_patient_id FROM studies s \
             JOIN patients p ON p.id = s.patient_fk WHERE s.study_instance_uid = ?1",
        )?
        .query_row([study], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((study_fk, id, issuer)) = found else {
        return Ok(None);
    };
    let mut facilities = conn
        .prepare_cached("SELECT facility FROM study_facilities WHERE study_fk = ?1")?
        .query_map([study_fk], |r| r.get::<_, String>(0))?
        .collect::<super::db::Result<Vec<_>>>()?;
    // Byte order, as the chain's serialization and verify's group_concat read them.
    facilities.sort();
    facilities.dedup();
    Ok(Some(StudyContext {
        // A patient without an ID is named by the study alone (never merged, invariant 5).
        patient: (!id.is_empty()).then_some(PatientRef { id, issuer }),
        facilities,
    }))
}

/// The id of the next event. The counter survives deleted rows, so a removed newest event
/// leaves a gap that verify names instead of its number being given again: SQLite's
/// AUTOINCREMENT counter, or PostgreSQL's `audit_head` row, whose lock also makes the writers
/// of several nodes append one at a time (held until the batch commits).
fn next_event_id(conn: &Connection) -> super::db::Result<i64> {
    match conn.engine() {
        Engine::Sqlite => conn
            .prepare_cached(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'), 0) + 1",
            )?
            .query_row([], |r| r.get(0)),
        Engine::Postgres => conn
            .prepare_cached("UPDATE audit_head SET id = id + 1 RETURNING id")?
            .query_row([], |r| r.get(0)),
    }
}

/// How many event ids were ever given (see [`next_event_id`]).
fn issued_event_ids(conn: &Connection) -> super::db::Result<i64> {
    conn.query_row(
        match conn.engine() {
            Engine::Sqlite => {
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'), 0)"
            }
            Engine::Postgres => "SELECT id FROM audit_head",
        },
        [],
        |r| r.get(0),
    )
}

/// Appends `event` to the chain, inside the writer's transaction.
fn append(conn: &Connection, event: &NewAuditEvent, time: &str) -> super::db::Result<()> {
    let id = next_event_id(conn)?;
    let prev_hash: String = conn
        .prepare_cached("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| GENESIS.to_string());
    let context = match &event.study_instance_uid {
        Some(study) => study_context(conn, study)?,
        None => None,
    };
    let (patient, facilities) = match context {
        Some(StudyContext {
            patient: Some(p),
            facilities,
        }) => (Some(p), facilities),
        Some(StudyContext { facilities, .. }) => (event.patient.clone(), facilities),
        None => (event.patient.clone(), Vec::new()),
    };
    let actor = &event.actor;
    let roles = actor
        .roles()
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let owners = facilities.join(",");
    let fields = ChainedFields {
        id,
        time,
        actor: actor.subject(),
        facility: actor.facility(),
        roles: &roles,
        address: actor.address(),
        action: event.action.as_str(),
        outcome: event.outcome.as_str(),
        study_instance_uid: event.study_instance_uid.as_deref(),
        patient_id: patient.as_ref().map(|p| p.id.as_str()),
        patient_issuer: patient.as_ref().map(|p| p.issuer.as_str()),
        study_facilities: &owners,
        detail: &event.detail,
    };
    let hash = chain::event_hash(CHAIN_VERSION, &prev_hash, &fields).ok_or_else(|| {
        super::db::DbError::Invalid("audit event fields cannot be serialised".into())
    })?;
    conn.prepare_cached(
        "INSERT INTO audit_events (id, chain_version, time, actor, facility, roles, address, \
         action, outcome, study_instance_uid, patient_id, patient_issuer, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        id,
        CHAIN_VERSION,
        time,
        fields.actor,
        fields.facility,
        roles,
        fields.address,
        fields.action,
        fields.outcome,
        fields.study_instance_uid,
        fields.patient_id,
        fields.patient_issuer,
        fields.detail,
        prev_hash,
        hash
    ])?;
    let mut insert_owner = conn.prepare_cached(
        "INSERT INTO audit_event_facilities (facility, event_id) VALUES (?1, ?2)",
    )?;
    for facility in &facilities {
        insert_owner.execute(params![facility, id])?;
    }
    Ok(())
}

/// The columns of an event as stored, in [`row_fields`]' order.
const EVENT_COLUMNS: &str = "e.id, e.chain_version, e.time, e.actor, e.facility, e.roles, \
     e.address, e.action, e.outcome, e.study_instance_uid, e.patient_id, e.patient_issuer, \
     COALESCE((SELECT string_agg(f.facility, ',' ORDER BY f.facility) \
               FROM audit_event_facilities f WHERE f.event_id = e.id), ''), \
     e.detail, e.prev_hash, e.hash";

/// An event's stored columns, owned.
struct StoredRow {
    id: i64,
    version: i64,
    time: String,
    actor: String,
    facility: Option<String>,
    roles: String,
    address: Option<String>,
    action: String,
    outcome: String,
    study: Option<String>,
    patient_id: Option<String>,
    patient_issuer: Option<String>,
    owners: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

fn row_fields(r: &super::db::Row<'_>) -> super::db::Result<StoredRow> {
    Ok(StoredRow {
        id: r.get(0)?,
        version: r.get(1)?,
        time: r.get(2)?,
        actor: r.get(3)?,
        facility: r.get(4)?,
        roles: r.get(5)?,
        address: r.get(6)?,
        action: r.get(7)?,
        outcome: r.get(8)?,
        study: r.get(9)?,
        patient_id: r.get(10)?,
        patient_issuer: r.get(11)?,
        owners: r.get(12)?,
        detail: r.get(13)?,
        prev_hash: r.get(14)?,
        hash: r.get(15)?,
    })
}

impl StoredRow {
    fn chained(&self) -> ChainedFields<'_> {
        ChainedFields {
            id: self.id,
            time: &self.time,
            actor: &self.actor,
            facility: self.facility.as_deref(),
            roles: &self.roles,
            address: self.address.as_deref(),
            action: &self.action,
            outcome: &self.outcome,
            study_instance_uid: self.study.as_deref(),
            patient_id: self.patient_id.as_deref(),
            patient_issuer: self.patient_issuer.as_deref(),
            study_facilities: &self.owners,
            detail: &self.detail,
        }
    }

    fn into_event(self) -> super::db::Result<AuditEvent> {
        let unknown = |col: usize, what: &str| super::db::DbError::Conversion {
            column: col,
            source: format!("unknown audit {what}").into(),
        };
        let split = |text: &str| -> Vec<String> {
            text.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        Ok(AuditEvent {
            id: self.id,
            action: AuditAction::parse(&self.action).ok_or_else(|| unknown(7, "action"))?,
            outcome: AuditOutcome::parse(&self.outcome).ok_or_else(|| unknown(8, "outcome"))?,
            roles: split(&self.roles),
            study_facilities: split(&self.owners),
            patient: self.patient_id.map(|id| PatientRef {
                id,
                issuer: self.patient_issuer.unwrap_or_default(),
            }),
            time: self.time,
            actor: self.actor,
            facility: self.facility,
            address: self.address,
            study_instance_uid: self.study,
            detail: self.detail,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// The WHERE conditions and their parameters for `filter` as read by `who`; `None` when `who`
/// may read no event.
fn conditions(who: &Principal, filter: &AuditFilter) -> Option<(Vec<String>, Vec<Value>)> {
    let mut sql = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let bind = |values: &mut Vec<Value>, v: String| {
        values.push(Value::Text(v));
        values.len()
    };
    let mut scoped = None;
    if !who.is_system_wide() {
        // A facility's administrator: what its facility did, and what was done to its studies.
        let facility = who.facility().filter(|_| who.permits(Action::ReadAudit))?;
        let n = bind(&mut values, facility.to_string());
        sql.push(format!(
            "(e.facility = ?{n} OR e.id IN \
             (SELECT event_id FROM audit_event_facilities WHERE facility = ?{n}))"
        ));
        scoped = Some(n);
    }
    if let Some(study) = &filter.study {
        let n = bind(&mut values, study.clone());
        sql.push(format!("e.study_instance_uid = ?{n}"));
    }
    if let Some(p) = &filter.patient {
        sql.push(patient_condition(&mut values, p, scoped));
    }
    for (value, column, op) in [
        (&filter.facility, "e.facility", "="),
        (&filter.actor, "e.actor", "="),
        (&filter.since, "e.time", ">="),
        (&filter.until, "e.time", "<"),
    ] {
        if let Some(v) = value {
            let n = bind(&mut values, v.clone());
            sql.push(format!("{column} {op} ?{n}"));
        }
    }
    if let Some(before) = filter.before_id {
        values.push(Value::Integer(before));
        sql.push(format!("e.id < ?{}", values.len()));
    }
    Some((sql, values))
}

/// The condition of a patient filter (binding its values into `values`); `scoped`: the
/// parameter number of the reading facility's code, when the reader is not system-wide.
fn patient_condition(values: &mut Vec<Value>, p: &PatientRef, scoped: Option<usize>) -> String {
    let mut bind = |v: String| {
        values.push(Value::Text(v));
        values.len()
    };
    let (i, s) = (bind(p.id.clone()), bind(p.issuer.clone()));
    // The patients row key, as `index::patient_key` writes it for an identified patient.
    let key = bind(format!("{}\u{1}{}", p.id, p.issuer));
    // Events that named the patient, and events about any study of theirs, including studies
    // of a provisional patient linked to them (item 8), whenever the link was made. A
    // facility's reader matches only where it may see the patient (`AuditEvent::as_seen_by`)
    // and only through studies its facility holds, so the filter discloses no other
    // facility's study.
    let (visible, held) = scoped.map_or((String::new(), String::new()), |n| {
        (
            format!(
                " AND (NOT EXISTS (SELECT 1 FROM audit_event_facilities o \
                 WHERE o.event_id = e.id) OR e.id IN \
                 (SELECT event_id FROM audit_event_facilities WHERE facility = ?{n}))"
            ),
            format!(" AND st.id IN (SELECT study_fk FROM study_facilities WHERE facility = ?{n})"),
        )
    });
    format!(
        "((e.patient_id = ?{i} AND e.patient_issuer = ?{s}{visible}) OR e.study_instance_uid IN \
         (SELECT st.study_instance_uid FROM studies st JOIN patients pa ON pa.id = st.patient_fk \
          WHERE (pa.patient_key = ?{key} OR pa.id IN \
            (SELECT l.provisional_fk FROM patient_links l JOIN patients q ON q.id = l.patient_fk \
             WHERE q.patient_key = ?{key} AND l.unlinked_at IS NULL)){held}))"
    )
}

impl Index {
    /// Appends `event` to the audit trail without waiting for its commit: the events of the next
    /// 0.1 s reach the writer as one batch (one commit), so a request pays only the enqueue; a
    /// crash loses at most that last fraction of a second of events. When
    /// the writer's queue is full this waits for room (an event is never dropped). A failure to
    /// commit it is logged (never with patient data). The event's time is when it was queued.
    /// Recording is not an access: it passes no checkpoint (a refused request is itself an event).
    pub async fn record_audit(&self, event: NewAuditEvent) -> Result<(), IndexError> {
        self.queue_audit(QueuedEvent {
            event,
            time: now(),
            reply: None,
        })
        .await
    }

    /// Hands `queued` to the batcher, waiting for room when its queue is full.
    async fn queue_audit(&self, queued: QueuedEvent) -> Result<(), IndexError> {
        match self.audit.try_push(queued) {
            Ok(()) => Ok(()),
            Err(queued) => {
                let audit = self.audit.clone();
                tokio::task::spawn_blocking(move || audit.push_waiting(queued))
                    .await
                    .map_err(|e| IndexError::Task(e.to_string()))?
            }
        }
    }

    /// [`Index::record_audit`], returning once the event is committed: for administrative
    /// changes whose record must exist before they are answered.
    pub async fn record_audit_committed(&self, event: NewAuditEvent) -> Result<(), IndexError> {
        // Through the batcher like every event, so events are chained in the order recorded.
        let (reply, answer) = oneshot::channel();
        self.queue_audit(QueuedEvent {
            event,
            time: now(),
            reply: Some(reply),
        })
        .await?;
        answer.await.map_err(|_| IndexError::WriterGone)?
    }

    /// The events `filter` selects that `who` may read, newest first, at most
    /// [`AuditFilter::effective_limit`]. A system-wide caller reads every event; a facility's
    /// administrator those its facility acted in and those about studies its facility holds;
    /// anyone else none.
    pub async fn audit_events(
        &self,
        who: &Principal,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, IndexError> {
        self.admit(who, Action::ReadAudit)?;
        let Some((conditions, mut values)) = conditions(who, filter) else {
            return Ok(Vec::new());
        };
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events e");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        values.push(Value::Integer(filter.effective_limit() as i64));
        sql.push_str(&format!(" ORDER BY e.id DESC LIMIT ?{}", values.len()));
        let reader = (!who.is_system_wide()).then(|| who.facility().unwrap_or_default().to_owned());
        self.read(move |c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map(super::db::params_from_iter(values), row_fields)?
                .map(|row| {
                    let event = row.and_then(StoredRow::into_event)?;
                    Ok(match &reader {
                        Some(facility) => event.as_seen_by(facility),
                        None => event,
                    })
                })
                .collect::<super::db::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Walks the whole chain from the first event: each event must follow the one before it
    /// (contiguous ids, `prev_hash` equal to its hash) and hash to its stored hash; no event may
    /// be missing after the newest (the id counter). Reads beside a running server.
    pub async fn verify_audit_chain(&self, who: &Principal) -> Result<ChainReport, IndexError> {
        self.admit(who, Action::ReadAudit)?;
        self.read(|c| Ok(walk_chain(c)?)).await
    }
}

fn walk_chain(c: &Connection) -> super::db::Result<ChainReport> {
    let mut stmt = c.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events e ORDER BY e.id"
    ))?;
    let (mut verified, mut expected, mut prev) = (0u64, 1i64, GENESIS.to_string());
    // Streamed: a trail of millions of events is read, never held.
    let first_break = stmt.for_each([], |row| {
        let row = row_fields(row)?;
        let found = chain_break(&row, expected, &prev);
        if found.is_none() {
            verified += 1;
            expected += 1;
            prev = row.hash;
        }
        Ok(found.map_or(ControlFlow::Continue(()), ControlFlow::Break))
    })?;
    if first_break.is_some() {
        return Ok(ChainReport {
            verified,
            first_break,
        });
    }
    let issued = issued_event_ids(c)?;
    let first_break = (issued >= expected).then_some(ChainBreak::Missing {
        from: expected,
        to: issued,
        next: None,
    });
    Ok(ChainReport {
        verified,
        first_break,
    })
}

/// What is wrong with `row`, the event expected to have id `expected` and follow `prev`.
fn chain_break(row: &StoredRow, expected: i64, prev: &str) -> Option<ChainBreak> {
    if row.id != expected {
        return Some(ChainBreak::Missing {
            from: expected,
            to: row.id - 1,
            next: Some(row.id),
        });
    }
    let Some(hash) = chain::event_hash(row.version, &row.prev_hash, &row.chained()) else {
        return Some(ChainBreak::UnknownVersion {
            id: row.id,
            version: row.version,
        });
    };
    if hash != row.hash {
        return Some(ChainBreak::Edited { id: row.id });
    }
    (row.prev_hash != prev).then_some(ChainBreak::BrokenLink { id: row.id })
}
