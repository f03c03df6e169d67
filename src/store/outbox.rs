//! The outbox's rows (issue #10 item 2): instances queued per destination in the commit that
//! files them (so no acknowledged instance misses its forwarding), taken by the sender in
//! priority order, and the manifests and receipts of each study's delivery.

use super::db::{params, Connection, OptionalExtension};

use super::findings::FlagForwarding;
use super::index::{Index, IndexError, NewInstance};
use super::times::now;
use crate::access::{Action, Principal};
use crate::forward::outbox::{
    DeliveryRecord, DestinationDelivery, ManifestRecord, OutboxItem, OutboxState, SentInstance,
    StateCounts, TimelineStep,
};
use crate::forward::rules::{flag_priority, Arrival, OutboxEntry};

/// Queues `inst` for each of its destinations; tramy's own filings (the findings SR) follow
/// their study to every destination it is queued for. Runs in the instance's transaction.
pub(super) fn queue_instance(
    tx: &Connection,
    inst: &NewInstance,
    facility: &str,
) -> super::db::Result<()> {
    let a = &inst.attributes;
    let now = now();
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (peer, sop_instance_uid, study_instance_uid, facility, size_bytes, sha256, \
         priority, not_before, queued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) \
         ON CONFLICT (peer, sop_instance_uid) DO UPDATE SET sha256 = excluded.sha256, \
         size_bytes = excluded.size_bytes, state = 'queued', attempts = 0, not_before = excluded.not_before, \
         priority = CASE WHEN excluded.priority > outbox.priority THEN excluded.priority ELSE outbox.priority END, delivery_id = NULL",
    )?;
    let mut entries: Vec<OutboxEntry> = inst.forward.clone();
    if inst.forward_with_study {
        let mut study_peers = tx.prepare_cached(
            "SELECT peer, max(priority) FROM outbox WHERE study_instance_uid = ?1 GROUP BY peer",
        )?;
        let peers = study_peers
            .query_map([a.study.study_instance_uid.as_str()], |r| {
                Ok(OutboxEntry {
                    peer: r.get(0)?,
                    priority: r.get(1)?,
                })
            })?
            .collect::<super::db::Result<Vec<_>>>()?;
        entries.extend(
            peers
                .into_iter()
                .filter(|p| !entries.iter().any(|e| e.peer == p.peer))
                .collect::<Vec<_>>(),
        );
    }
    for e in entries {
        insert.execute(params![
            e.peer,
            a.sop_instance_uid.as_str(),
            a.study.study_instance_uid.as_str(),
            facility,
            inst.size_bytes,
            inst.sha256,
            e.priority,
            now
        ])?;
    }
    Ok(())
}

/// Applies an AI flag on `sop` to the outbox (see [`FlagForwarding`]). Runs in the writer.
pub(super) fn queue_flagged(
    tx: &Connection,
    sop: &str,
    flag: &FlagForwarding,
) -> super::db::Result<()> {
    let row: Option<(String, String, String)> = tx
        .query_row(
            "SELECT st.study_instance_uid, i.facility, se.modality FROM instances i \
             JOIN series se ON i.series_fk = se.id JOIN studies st ON se.study_fk = st.id \
             WHERE i.sop_instance_uid = ?1",
            [sop],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((study, facility, modality)) = row else {
        return Ok(());
    };
    let arrival = Arrival {
        modality: &modality,
        facility: &facility,
    };
    let now = now();
    for e in flag.rules.on_flag(arrival, flag.urgency) {
        // The instance, and the findings reports tramy filed in its study.
        tx.prepare_cached(
            "INSERT INTO outbox (peer, sop_instance_uid, study_instance_uid, facility, size_bytes, sha256, \
             priority, not_before, queued_at) \
             SELECT ?1, i.sop_instance_uid, ?3, i.facility, i.size_bytes, i.sha256, ?5, ?6, ?6 \
             FROM instances i JOIN series se ON i.series_fk = se.id JOIN studies st ON se.study_fk = st.id \
             WHERE st.study_instance_uid = ?3 AND (i.sop_instance_uid = ?2 OR i.source = ?4) \
             ON CONFLICT (peer, sop_instance_uid) DO UPDATE SET priority = CASE WHEN excluded.priority > outbox.priority THEN excluded.priority ELSE outbox.priority END",
        )?
        .execute(params![e.peer, sop, study, flag.report_source, e.priority, now])?;
    }
    if let Some(lift) = flag_priority(flag.urgency) {
        tx.prepare_cached(
            "UPDATE outbox SET priority = ?2 \
             WHERE study_instance_uid = ?1 AND state IN ('queued', 'failed') AND priority < ?2",
        )?
        .execute(params![study, lift])?;
    }
    Ok(())
}

fn item(r: &super::db::Row<'_>) -> super::db::Result<OutboxItem> {
    Ok(OutboxItem {
        id: r.get(0)?,
        peer: r.get(1)?,
        study_instance_uid: r.get(2)?,
        sop_instance_uid: r.get(3)?,
        sha256: r.get(4)?,
        size_bytes: r.get(5)?,
        priority: r.get(6)?,
        attempts: r.get(7)?,
        facility: r.get(8)?,
    })
}

impl Index {
    /// Whether this node may send to `peer` for `lease` from now: it takes or renews the peer's
    /// lease when no other node holds one in force (a previous run of this node holds none in
    /// force: it died). One node at a time sends a peer's outbox,
    /// so nodes sharing an index never send an instance twice; when the holder dies, its lease
    /// runs out and another node takes over. On SQLite (one node) always true, writing nothing.
    pub async fn hold_peer_lease(
        &self,
        who: &Principal,
        peer: &str,
        lease: std::time::Duration,
    ) -> Result<bool, IndexError> {
        self.admit(who, Action::Integrity)?;
        if self.engine() == super::db::Engine::Sqlite {
            return Ok(true);
        }
        let (peer, node, home) = (
            peer.to_owned(),
            self.node().to_owned(),
            self.node_home().to_owned(),
        );
        let now = chrono::Utc::now();
        let until = super::times::text(now + chrono::Duration::from_std(lease).unwrap_or_default());
        let now = super::times::text(now);
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO peer_leases (peer, node, lease_until) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (peer) DO UPDATE SET node = excluded.node, lease_until = excluded.lease_until \
                 WHERE peer_leases.node = excluded.node OR peer_leases.lease_until < ?4 \
                 OR (?6 > 0 AND substr(peer_leases.node, 1, ?6) = ?5) \
                 RETURNING node",
            )?
            .exists(params![peer, node, until, now, home, home.chars().count()])
        })
        .await
    }

    /// Up to `limit` instances due for `peer`, highest priority first, then oldest; only those
    /// at or above `min_priority` (outside the peer's time windows, only urgent ones).
    pub async fn due_outbox(
        &self,
        who: &Principal,
        peer: &str,
        min_priority: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, IndexError> {
        self.admit(who, Action::Integrity)?;
        let peer = peer.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, peer, study_instance_uid, sop_instance_uid, sha256, size_bytes, priority, attempts, \
                 facility FROM outbox WHERE peer = ?1 AND state IN ('queued', 'failed') AND not_before <= ?2 \
                 AND priority >= ?3 ORDER BY priority DESC, id LIMIT ?4",
            )?
            .query_map(params![peer, now(), min_priority, limit as i64], item)?
            .collect::<super::db::Result<Vec<_>>>()?)
        })
        .await
    }

    /// When the next instance for `peer` at or above `min_priority` falls due (RFC 3339);
    /// `None` when nothing waits.
    pub async fn next_outbox_due(
        &self,
        who: &Principal,
        peer: &str,
        min_priority: i64,
    ) -> Result<Option<String>, IndexError> {
        self.admit(who, Action::Integrity)?;
        let peer = peer.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT min(not_before) FROM outbox WHERE peer = ?1 AND state IN ('queued', 'failed') AND priority >= ?2",
                params![peer, min_priority],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Records that the instances of `ids` reached `state` (sent, or stored per the peer).
    pub async fn outbox_advanced(
        &self,
        who: &Principal,
        ids: Vec<i64>,
        state: OutboxState,
    ) -> Result<(), IndexError> {
        self.admit(who, Action::Integrity)?;
        self.write(move |c| {
            // Each column is set once: PostgreSQL refuses two assignments to one column.
            let times = match state {
                OutboxState::Stored => "sent_at = coalesce(sent_at, ?3), stored_at = ?3",
                OutboxState::Verified => "sent_at = coalesce(sent_at, ?3), verified_at = ?3",
                _ => "sent_at = ?3",
            };
            let sql =
                format!("UPDATE outbox SET state = ?2, last_error = '', {times} WHERE id = ?1");
            let now = now();
            for id in ids {
                c.prepare_cached(&sql)?
                    .execute(params![id, state.as_str(), now])?;
            }
            Ok(())
        })
        .await
    }

    /// Records a failed attempt: tried again after `not_before` (RFC 3339), or, when `dead`,
    /// given up until retried by hand.
    pub async fn outbox_failed(
        &self,
        who: &Principal,
        ids: Vec<i64>,
        error: String,
        not_before: String,
        dead: bool,
    ) -> Result<(), IndexError> {
        self.admit(who, Action::Integrity)?;
        self.write(move |c| {
            let state = if dead { "dead" } else { "failed" };
            for id in ids {
                c.prepare_cached(
                    "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_error = ?3, not_before = ?4 WHERE id = ?1",
                )?
                .execute(params![id, state, error, not_before])?;
            }
            Ok(())
        })
        .await
    }

    /// Queues again what was given up for `peer` (all of it, or one study's); returns how many.
    pub async fn retry_dead_outbox(
        &self,
        who: &Principal,
        peer: &str,
        study: Option<String>,
    ) -> Result<usize, IndexError> {
        self.admit(who, Action::Administer)?;
        let peer = peer.to_string();
        self.write(move |c| {
            c.execute(
                "UPDATE outbox SET state = 'queued', attempts = 0, not_before = ?3 WHERE peer = ?1 \
                 AND state IN ('dead', 'failed') AND (CAST(?2 AS TEXT) IS NULL OR study_instance_uid = ?2)",
                params![peer, study, now()],
            )
        })
        .await
    }

    /// A study's instances for `peer` that are sent and not yet covered by a manifest, once
    /// none of the study's instances for `peer` waits to be sent or, with `at_least`, once there
    /// are that many (a large study is confirmed while the rest is still sent); else nothing.
    pub async fn study_ready_for_manifest(
        &self,
        who: &Principal,
        peer: &str,
        study: &str,
        at_least: Option<usize>,
    ) -> Result<Vec<SentInstance>, IndexError> {
        self.admit(who, Action::Integrity)?;
        let (peer, study) = (peer.to_string(), study.to_string());
        self.read(move |c| {
            let waiting: i64 = c.query_row(
                "SELECT count(*) FROM outbox WHERE peer = ?1 AND study_instance_uid = ?2 AND state IN ('queued', 'failed')",
                params![peer, study],
                |r| r.get(0),
            )?;
            let unmanifested = || -> super::db::Result<i64> {
                c.query_row(
                    "SELECT count(*) FROM outbox WHERE peer = ?1 AND study_instance_uid = ?2 \
                     AND state IN ('sent', 'stored') AND delivery_id IS NULL",
                    params![peer, study],
                    |r| r.get(0),
                )
            };
            let enough = match at_least {
                Some(n) => unmanifested()? >= n as i64,
                None => false,
            };
            if waiting > 0 && !enough {
                return Ok(Vec::new());
            }
            Ok(c.prepare_cached(
                "SELECT o.id, o.sop_instance_uid, coalesce(i.sop_class_uid, ''), o.sha256, o.size_bytes, o.facility \
                 FROM outbox o LEFT JOIN instances i ON i.sop_instance_uid = o.sop_instance_uid \
                 WHERE o.peer = ?1 AND o.study_instance_uid = ?2 AND o.state IN ('sent', 'stored') \
                 AND o.delivery_id IS NULL ORDER BY o.id",
            )?
            .query_map(params![peer, study], |r| {
                Ok(SentInstance {
                    id: r.get(0)?,
                    sop_instance_uid: r.get(1)?,
                    sop_class_uid: r.get(2)?,
                    sha256: r.get(3)?,
                    size_bytes: r.get(4)?,
                    facility: r.get(5)?,
                })
            })?
            .collect::<super::db::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Studies with at least `at_least` instances for `peer` sent and not covered by a manifest.
    pub async fn studies_with_unmanifested(
        &self,
        who: &Principal,
        peer: &str,
        at_least: usize,
    ) -> Result<Vec<String>, IndexError> {
        self.admit(who, Action::Integrity)?;
        let peer = peer.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT study_instance_uid FROM outbox WHERE peer = ?1 AND state IN ('sent', 'stored') \
                 AND delivery_id IS NULL GROUP BY study_instance_uid HAVING count(*) >= ?2 LIMIT 16",
            )?
            .query_map(params![peer, at_least as i64], |r| r.get(0))?
            .collect::<super::db::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Studies with instances for `peer` sent but not covered by a manifest (after a restart
    /// between sending and the manifest).
    pub async fn studies_awaiting_manifest(
        &self,
        who: &Principal,
        peer: &str,
    ) -> Result<Vec<String>, IndexError> {
        self.admit(who, Action::Integrity)?;
        let peer = peer.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT DISTINCT study_instance_uid FROM outbox WHERE peer = ?1 AND state IN ('sent', 'stored') \
                 AND delivery_id IS NULL LIMIT 1000",
            )?
            .query_map([peer], |r| r.get(0))?
            .collect::<super::db::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Records a manifest, the peer's answer, and the state each covered instance ends in.
    pub async fn record_delivery(
        &self,
        who: &Principal,
        d: DeliveryRecord,
    ) -> Result<(), IndexError> {
        self.admit(who, Action::Integrity)?;
        self.write(move |c| {
            let now = now();
            c.execute(
                "INSERT INTO deliveries (id, peer, study_instance_uid, facility, manifest_jws, manifest_sha256, \
                 instances, state, receipt_jws, detail, created_at, answered_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
                params![
                    d.id,
                    d.peer,
                    d.study_instance_uid,
                    d.facility,
                    d.manifest_jws,
                    d.manifest_sha256,
                    d.outcomes.len() as i64,
                    d.state,
                    d.receipt_jws,
                    d.detail,
                    now
                ],
            )?;
            for (id, state, reason) in &d.outcomes {
                let delivery = matches!(state, OutboxState::Verified | OutboxState::Stored).then_some(&d.id);
                c.prepare_cached(
                    "UPDATE outbox SET \
                     state = CASE WHEN ?2 = 'failed' AND attempts + 1 >= ?7 THEN 'dead' ELSE ?2 END, \
                     last_error = ?3, delivery_id = ?4, \
                     stored_at = CASE WHEN ?2 IN ('stored', 'verified') THEN coalesce(stored_at, ?5) ELSE stored_at END, \
                     verified_at = CASE WHEN ?2 = 'verified' THEN ?5 ELSE verified_at END, \
                     not_before = CASE WHEN ?2 = 'failed' THEN ?6 ELSE not_before END, \
                     attempts = CASE WHEN ?2 IN ('failed', 'dead') THEN attempts + 1 ELSE attempts END \
                     WHERE id = ?1",
                )?
                .execute(params![id, state.as_str(), reason, delivery, now, d.retry_at, d.max_attempts])?;
            }
            Ok(())
        })
        .await
    }

    /// A study's delivery to each destination, if the caller may see the study.
    pub async fn study_deliveries(
        &self,
        who: &Principal,
        study: &str,
    ) -> Result<Option<Vec<DestinationDelivery>>, IndexError> {
        self.admit(who, Action::Query)?;
        let visibility = who.visibility(Action::Query);
        let study = study.to_string();
        self.read(move |c| {
            if !super::visibility::study_visible(c, &visibility, &study)? {
                return Ok(None);
            }
            Ok(Some(destinations(c, &study)?))
        })
        .await
    }
}

fn destinations(c: &Connection, study: &str) -> super::db::Result<Vec<DestinationDelivery>> {
    let mut out: Vec<DestinationDelivery> = Vec::new();
    let mut counts = c.prepare_cached(
        "SELECT peer, state, count(*), min(queued_at), max(queued_at), min(sent_at), max(sent_at), \
         min(stored_at), max(stored_at), min(verified_at), max(verified_at), \
         max(CASE WHEN last_error <> '' THEN last_error END) \
         FROM outbox WHERE study_instance_uid = ?1 GROUP BY peer, state ORDER BY peer",
    )?;
    let mut times: Vec<(String, [Option<String>; 8])> = Vec::new();
    counts.for_each([study], |r| {
        let peer: String = r.get(0)?;
        let state = OutboxState::parse(&r.get::<_, String>(1)?).unwrap_or(OutboxState::Queued);
        if out.last().is_none_or(|d| d.peer != peer) {
            out.push(DestinationDelivery {
                peer: peer.clone(),
                state: OutboxState::Queued,
                instances: StateCounts::default(),
                timeline: Vec::new(),
                last_error: None,
                manifests: Vec::new(),
            });
            times.push((peer.clone(), Default::default()));
        }
        let d = out.last_mut().expect("pushed above");
        d.instances.add(state, r.get(2)?);
        if let Some(e) = r.get::<_, Option<String>>(11)? {
            d.last_error = Some(e);
        }
        // Even columns hold the first time a state was reached, odd ones the last.
        let t = &mut times.last_mut().expect("pushed above").1;
        for (k, slot) in t.iter_mut().enumerate() {
            let v: Option<String> = r.get(3 + k)?;
            if let Some(v) = v {
                let better = slot
                    .as_ref()
                    .is_none_or(|old| if k % 2 == 0 { v < *old } else { v > *old });
                if better {
                    *slot = Some(v);
                }
            }
        }
        Ok(std::ops::ControlFlow::<()>::Continue(()))
    })?;
    for (d, (_, t)) in out.iter_mut().zip(times) {
        d.state = d.instances.summary();
        for (i, name) in ["queued", "sent", "stored", "verified"]
            .into_iter()
            .enumerate()
        {
            if let (Some(first), Some(last)) = (&t[2 * i], &t[2 * i + 1]) {
                d.timeline.push(TimelineStep {
                    state: name.into(),
                    first: first.clone(),
                    last: last.clone(),
                });
            }
        }
        d.manifests = manifests(c, study, &d.peer)?;
    }
    Ok(out)
}

fn manifests(c: &Connection, study: &str, peer: &str) -> super::db::Result<Vec<ManifestRecord>> {
    c.prepare_cached(
        "SELECT id, instances, state, detail, created_at, answered_at, manifest_jws, receipt_jws FROM deliveries \
         WHERE study_instance_uid = ?1 AND peer = ?2 ORDER BY created_at, id",
    )?
    .query_map(params![study, peer], |r| {
        Ok(ManifestRecord {
            id: r.get(0)?,
            instances: r.get(1)?,
            state: r.get(2)?,
            detail: r.get(3)?,
            created_at: r.get(4)?,
            answered_at: r.get(5)?,
            manifest: r.get(6)?,
            receipt: r.get(7)?,
        })
    })?
    .collect()
}
