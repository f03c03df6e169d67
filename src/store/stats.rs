//! The rows of a facility's delivery counts (issue #10 item 4) and of reconciliation with a
//! peer: grouped counts by UTC day (the first ten characters of the index's RFC 3339 times),
//! what the outbox says a peer has, and putting back in the queue what the peer lacks.

use super::db::{params, Connection};

use super::index::{Index, IndexError};
use super::times::now;
use crate::access::{Action, Principal};
use crate::forward::reconcile::SentRecord;
use crate::forward::stats::{ReasonCount, StatsRow, Step, Tally};
use crate::triage::sr::AI_SOURCE;

/// A facility's counts are read by its own callers; a system-wide caller reads any.
fn own_facility(who: &Principal, facility: &str) -> Result<(), IndexError> {
    if who.is_system_wide() || who.facility() == Some(facility) {
        Ok(())
    } else {
        Err(IndexError::Forbidden {
            subject: who.subject().to_string(),
            action: Action::Query,
        })
    }
}

/// The day of time column `column`, or '' when the rows are not grouped by day.
fn day_of(column: &str, by_day: bool) -> String {
    if by_day {
        format!("substr({column}, 1, 10)")
    } else {
        "''".into()
    }
}

fn tally(r: &super::db::Row<'_>, at: usize) -> super::db::Result<Tally> {
    Ok(Tally {
        instances: r.get(at)?,
        studies: r.get(at + 1)?,
    })
}

/// `facility`'s rows in [start, end), grouped by day when `by_day`, else over the period.
fn stats_rows(
    c: &Connection,
    facility: &str,
    start: &str,
    end: &str,
    by_day: bool,
) -> super::db::Result<Vec<StatsRow>> {
    let mut rows = Vec::new();
    let day = day_of("i.received_at", by_day);
    let sql = format!(
        "SELECT {day}, count(*), count(DISTINCT se.study_fk) FROM instances i \
         JOIN series se ON i.series_fk = se.id \
         WHERE i.facility = ?1 AND i.received_at >= ?2 AND i.received_at < ?3 AND i.source <> ?4 \
         GROUP BY 1"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    // The findings reports tramy files itself are not arrivals.
    for row in stmt.query_map(params![facility, start, end, AI_SOURCE], |r| {
        Ok(StatsRow::Received {
            day: r.get(0)?,
            tally: tally(r, 1)?,
        })
    })? {
        rows.push(row?);
    }
    let day = day_of("received_at", by_day);
    let sql = format!(
        "SELECT {day}, sender_facility, count(*), sum(stored), count(DISTINCT study_instance_uid), sum(failed) \
         FROM received_deliveries WHERE destination = ?1 AND received_at >= ?2 AND received_at < ?3 \
         GROUP BY 1, 2"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    for row in stmt.query_map(params![facility, start, end], |r| {
        Ok(StatsRow::FromPeer {
            day: r.get(0)?,
            facility: r.get(1)?,
            deliveries: r.get(2)?,
            stored: tally(r, 3)?,
            failed: r.get(5)?,
        })
    })? {
        rows.push(row?);
    }
    for (step, column) in [
        (Step::Queued, "queued_at"),
        (Step::Sent, "sent_at"),
        (Step::Stored, "stored_at"),
        (Step::Verified, "verified_at"),
    ] {
        let day = day_of(column, by_day);
        let sql = format!(
            "SELECT {day}, peer, count(*), count(DISTINCT study_instance_uid) FROM outbox \
             WHERE facility = ?1 AND {column} >= ?2 AND {column} < ?3 GROUP BY 1, 2"
        );
        let mut stmt = c.prepare_cached(&sql)?;
        for row in stmt.query_map(params![facility, start, end], |r| {
            Ok(StatsRow::Event {
                day: r.get(0)?,
                peer: r.get(1)?,
                step,
                tally: tally(r, 2)?,
            })
        })? {
            rows.push(row?);
        }
    }
    let day = day_of("queued_at", by_day);
    let sql = format!(
        "SELECT {day}, peer, CASE WHEN state IN ('queued', 'sent') THEN 'pending' ELSE state END, \
         count(*), count(DISTINCT study_instance_uid) FROM outbox \
         WHERE facility = ?1 AND queued_at >= ?2 AND queued_at < ?3 \
         AND state IN ('queued', 'sent', 'failed', 'dead') GROUP BY 1, 2, 3"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    for row in stmt.query_map(params![facility, start, end], |r| {
        Ok(StatsRow::State {
            day: r.get(0)?,
            peer: r.get(1)?,
            state: r.get(2)?,
            tally: tally(r, 3)?,
        })
    })? {
        rows.push(row?);
    }
    let sql = format!(
        "SELECT {day}, peer, state, last_error, count(*) FROM outbox \
         WHERE facility = ?1 AND queued_at >= ?2 AND queued_at < ?3 \
         AND state IN ('failed', 'dead') GROUP BY 1, 2, 3, 4"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    for row in stmt.query_map(params![facility, start, end], |r| {
        Ok(StatsRow::Reason {
            day: r.get(0)?,
            peer: r.get(1)?,
            reason: ReasonCount {
                state: r.get(2)?,
                reason: r.get(3)?,
                instances: r.get(4)?,
            },
        })
    })? {
        rows.push(row?);
    }
    let day = day_of("f.created_at", by_day);
    let sql = format!(
        "SELECT {day}, count(*), count(DISTINCT f.study_instance_uid) FROM findings f \
         JOIN instances i ON i.sop_instance_uid = f.sop_instance_uid \
         WHERE f.flagged = 1 AND f.created_at >= ?2 AND f.created_at < ?3 AND i.facility = ?1 \
         GROUP BY 1"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    for row in stmt.query_map(params![facility, start, end], |r| {
        Ok(StatsRow::Flags {
            day: r.get(0)?,
            tally: tally(r, 1)?,
        })
    })? {
        rows.push(row?);
    }
    Ok(rows)
}

/// Instances of one study for one destination not yet confirmed there, or failed: what the
/// facility dashboard lists so someone can act on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxProblem {
    /// The destination.
    pub peer: String,
    /// The study.
    pub study_instance_uid: String,
    /// `queued`, `sent` (not yet confirmed), `failed` (retried after `next_retry`) or `dead`.
    pub state: String,
    /// Instances in this state.
    pub instances: i64,
    /// The most attempts any of them took.
    pub attempts: i64,
    /// The last error recorded ('' when none).
    pub last_error: String,
    /// When the next attempt is due (queued and failed rows; RFC 3339).
    pub next_retry: Option<String>,
}

/// How often one model version flagged what it scored on a facility's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFlagRate {
    /// The model's name.
    pub model: String,
    /// Its version.
    pub model_version: String,
    /// Findings scored (one per label, instance and frame).
    pub scored: i64,
    /// Of those, over the model's threshold.
    pub flagged: i64,
}

/// How one destination's outbox stands now, over every facility.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerOutboxState {
    /// The destination.
    pub peer: String,
    /// Instances queued or sent and not yet confirmed.
    pub pending: i64,
    /// Instances failed, to be retried after a back-off.
    pub failed: i64,
    /// Instances given up (retried by hand).
    pub dead: i64,
    /// The last error of a failed or given-up one ('' when none).
    pub last_error: String,
}

fn peer_states(c: &Connection) -> super::db::Result<Vec<PeerOutboxState>> {
    let mut out: Vec<PeerOutboxState> = Vec::new();
    let rows = c
        .prepare_cached(
            "SELECT peer, state, count(*), \
             coalesce(max(CASE WHEN last_error <> '' THEN last_error END), '') FROM outbox \
             WHERE state IN ('queued', 'sent', 'failed', 'dead') GROUP BY peer, state ORDER BY peer",
        )?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<super::db::Result<Vec<_>>>()?;
    for (peer, state, n, error) in rows {
        if out.last().is_none_or(|p| p.peer != peer) {
            out.push(PeerOutboxState {
                peer,
                ..PeerOutboxState::default()
            });
        }
        let p = out.last_mut().expect("pushed above");
        match state.as_str() {
            "failed" => p.failed += n,
            "dead" => p.dead += n,
            _ => p.pending += n,
        }
        if !error.is_empty() && state != "queued" && state != "sent" {
            p.last_error = error;
        }
    }
    Ok(out)
}

fn outbox_problems(
    c: &Connection,
    facility: &str,
    limit: i64,
) -> super::db::Result<Vec<OutboxProblem>> {
    // Failed and dead first: they need someone; then the oldest waiting.
    c.prepare_cached(
        "SELECT peer, study_instance_uid, state, count(*), max(attempts), \
         coalesce(max(CASE WHEN last_error <> '' THEN last_error END), ''), \
         min(CASE WHEN state IN ('queued', 'failed') THEN not_before END) FROM outbox \
         WHERE facility = ?1 AND state IN ('queued', 'sent', 'failed', 'dead') \
         GROUP BY peer, study_instance_uid, state \
         ORDER BY CASE WHEN state IN ('failed', 'dead') THEN 0 ELSE 1 END, min(queued_at), peer \
         LIMIT ?2",
    )?
    .query_map(params![facility, limit], |r| {
        Ok(OutboxProblem {
            peer: r.get(0)?,
            study_instance_uid: r.get(1)?,
            state: r.get(2)?,
            instances: r.get(3)?,
            attempts: r.get(4)?,
            last_error: r.get(5)?,
            next_retry: r.get(6)?,
        })
    })?
    .collect()
}

fn flag_rates(
    c: &Connection,
    facility: &str,
    start: &str,
    end: &str,
) -> super::db::Result<Vec<ModelFlagRate>> {
    c.prepare_cached(
        "SELECT f.model, f.model_version, count(*), sum(f.flagged) FROM findings f \
         JOIN instances i ON i.sop_instance_uid = f.sop_instance_uid \
         WHERE i.facility = ?1 AND f.created_at >= ?2 AND f.created_at < ?3 \
         GROUP BY f.model, f.model_version ORDER BY f.model, f.model_version",
    )?
    .query_map(params![facility, start, end], |r| {
        Ok(ModelFlagRate {
            model: r.get(0)?,
            model_version: r.get(1)?,
            scored: r.get(2)?,
            flagged: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
        })
    })?
    .collect()
}

impl Index {
    /// `facility`'s count rows for times in [`start`, `end`) (the index's time text), grouped
    /// by UTC day when `by_day`, else over the whole period (day '').
    pub async fn facility_stats_rows(
        &self,
        who: &Principal,
        facility: &str,
        start: &str,
        end: &str,
        by_day: bool,
    ) -> Result<Vec<StatsRow>, IndexError> {
        self.admit(who, Action::Query)?;
        own_facility(who, facility)?;
        let (facility, start, end) = (facility.to_string(), start.to_string(), end.to_string());
        self.read(move |c| Ok(stats_rows(c, &facility, &start, &end, by_day)?))
            .await
    }

    /// Up to `limit` groups (destination, study, state) of `facility`'s outbox rows that are
    /// pending (queued, or sent and not confirmed), failed or dead; failed and dead first.
    pub async fn facility_outbox_problems(
        &self,
        who: &Principal,
        facility: &str,
        limit: usize,
    ) -> Result<Vec<OutboxProblem>, IndexError> {
        self.admit(who, Action::Query)?;
        own_facility(who, facility)?;
        let facility = facility.to_string();
        self.read(move |c| Ok(outbox_problems(c, &facility, limit as i64)?))
            .await
    }

    /// Each destination's outbox now, over every facility (a system-wide caller: peers are the
    /// whole server's).
    pub async fn peer_outbox_states(
        &self,
        who: &Principal,
    ) -> Result<Vec<PeerOutboxState>, IndexError> {
        self.admit(who, Action::Administer)?;
        if !who.is_system_wide() {
            return Err(IndexError::Forbidden {
                subject: who.subject().to_string(),
                action: Action::Administer,
            });
        }
        self.read(|c| Ok(peer_states(c)?)).await
    }

    /// Per model version, the findings scored and flagged on `facility`'s instances in
    /// [`start`, `end`) (the index's time text).
    pub async fn facility_flag_rates(
        &self,
        who: &Principal,
        facility: &str,
        start: &str,
        end: &str,
    ) -> Result<Vec<ModelFlagRate>, IndexError> {
        self.admit(who, Action::Query)?;
        own_facility(who, facility)?;
        let (facility, start, end) = (facility.to_string(), start.to_string(), end.to_string());
        self.read(move |c| Ok(flag_rates(c, &facility, &start, &end)?))
            .await
    }

    /// Up to `limit` outbox rows for `peer` the peer accepted or confirmed (sent, stored,
    /// verified), sent at or after `since` when given, with ids above `after`, by id.
    pub async fn sent_to_peer(
        &self,
        who: &Principal,
        peer: &str,
        since: Option<String>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<SentRecord>, IndexError> {
        self.admit(who, Action::Integrity)?;
        let peer = peer.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, study_instance_uid, sop_instance_uid, sha256, state FROM outbox \
                 WHERE peer = ?1 AND state IN ('sent', 'stored', 'verified') AND id > ?2 \
                 AND (CAST(?3 AS TEXT) IS NULL OR sent_at >= ?3) ORDER BY id LIMIT ?4",
            )?
            .query_map(params![peer, after, since, limit as i64], |r| {
                Ok(SentRecord {
                    id: r.get(0)?,
                    study_instance_uid: r.get(1)?,
                    sop_instance_uid: r.get(2)?,
                    sha256: r.get(3)?,
                    state: r.get(4)?,
                })
            })?
            .collect::<super::db::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Puts the outbox rows `ids` back in the queue, due now, as never confirmed (the peer does
    /// not hold them): the running server's sender sends them again and asks for a new
    /// receipt. Only rows still sent, stored or verified are changed; returns how many were.
    pub async fn requeue_unconfirmed(
        &self,
        who: &Principal,
        ids: Vec<i64>,
        reason: String,
    ) -> Result<usize, IndexError> {
        self.admit(who, Action::Integrity)?;
        self.write(move |c| {
            let now = now();
            let mut n = 0;
            for id in ids {
                n += c
                    .prepare_cached(
                        "UPDATE outbox SET state = 'queued', attempts = 0, not_before = ?2, last_error = ?3, \
                         delivery_id = NULL, stored_at = NULL, verified_at = NULL \
                         WHERE id = ?1 AND state IN ('sent', 'stored', 'verified')",
                    )?
                    .execute(params![id, now, reason])?;
            }
            Ok(n)
        })
        .await
    }
}
