//! Counts a facility can check (issue #10 item 4): per day and per destination, what arrived,
//! what was sent and how far it got, what peers delivered here, and the AI flags raised. The
//! rows come from `store/stats.rs`; this module says who may read them, what a period is, and
//! how rows become days.
//!
//! Days are UTC calendar days, as the index keeps its times. Event counts (received, queued,
//! sent, stored, verified, flags, deliveries from peers) fall on the day the event happened;
//! state counts (pending, failed, dead) are how the instances queued that day stand now.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use serde::Serialize;

use crate::access::Principal;
use crate::auth::Role;
use crate::store::{Index, IndexError};

/// The longest period one request may ask for.
pub const MAX_DAYS: i64 = 366;
/// The period when none is given: the last 30 days, today included.
pub const DEFAULT_DAYS: u64 = 30;

/// A period of whole UTC days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsPeriod {
    /// The first day.
    pub from: NaiveDate,
    /// The last day.
    pub to: NaiveDate,
}

/// A period that cannot be used; the message says how to write it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeriodError {
    /// Not a date.
    #[error("{0}: write the date as YYYY-MM-DD")]
    NotADate(String),
    /// `from` after `to`.
    #[error("from ({0}) is after to ({1})")]
    Reversed(NaiveDate, NaiveDate),
    /// Longer than [`MAX_DAYS`].
    #[error("the period has {0} days; ask for at most 366 days at once")]
    TooLong(i64),
}

impl StatsPeriod {
    /// The period from `from` to `to` (`YYYY-MM-DD`); `to` defaults to `today`, `from` to 29
    /// days before `to`.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        today: NaiveDate,
    ) -> Result<StatsPeriod, PeriodError> {
        let date = |name: &str, s: &str| {
            NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .map_err(|_| PeriodError::NotADate(format!("{name}={s:?}")))
        };
        let to = to.map(|s| date("to", s)).transpose()?.unwrap_or(today);
        let from = match from {
            Some(s) => date("from", s)?,
            None => to
                .checked_sub_days(Days::new(DEFAULT_DAYS - 1))
                .unwrap_or(to),
        };
        if from > to {
            return Err(PeriodError::Reversed(from, to));
        }
        let days = (to - from).num_days() + 1;
        if days > MAX_DAYS {
            return Err(PeriodError::TooLong(days));
        }
        Ok(StatsPeriod { from, to })
    }

    /// The first instant of the period, as the index writes times.
    pub fn start_text(&self) -> String {
        format!("{}T00:00:00.000Z", self.from.format("%Y-%m-%d"))
    }

    /// The first instant after the period, as the index writes times.
    pub fn end_text(&self) -> String {
        let next = self.to.checked_add_days(Days::new(1)).unwrap_or(self.to);
        format!("{}T00:00:00.000Z", next.format("%Y-%m-%d"))
    }
}

/// Whether `who` may read `facility`'s counts: its own admins and clinicians, and a
/// system-wide caller for any facility.
pub fn may_read(who: &Principal, facility: &str) -> bool {
    who.is_system_wide()
        || (who.facility() == Some(facility)
            && who
                .roles()
                .iter()
                .any(|r| matches!(r, Role::Admin | Role::Clinician))
            && matches!(who.kind(), crate::access::PrincipalKind::Authenticated))
}

/// Instances and the distinct studies they belong to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Tally {
    /// Instances.
    pub instances: i64,
    /// Distinct studies among them.
    pub studies: i64,
}

/// How many instances failed or were given up for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReasonCount {
    /// `failed` (retried after a back-off) or `dead` (given up; retried by hand).
    pub state: String,
    /// The last error recorded.
    pub reason: String,
    /// Instances.
    pub instances: i64,
}

/// One destination's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DestinationCounts {
    /// The peer's name.
    pub peer: String,
    /// Queued for it.
    pub queued: Tally,
    /// Sent to it (first accepted by the peer).
    pub sent: Tally,
    /// Confirmed stored: a plain DICOMweb peer's STOW-RS answer, or a tramy peer's before its
    /// receipt.
    pub stored: Tally,
    /// Confirmed by the peer's signed receipt (tramy peers only).
    pub verified: Tally,
    /// Of those queued, still queued or sent and not confirmed.
    pub pending: Tally,
    /// Of those queued, failed now and waiting out a back-off.
    pub failed: Tally,
    /// Of those queued, given up (dead-lettered).
    pub dead: Tally,
    /// Why the failed and dead ones failed, most frequent first.
    pub reasons: Vec<ReasonCount>,
}

/// What one peer facility delivered here (signed manifests this server answered).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FromPeer {
    /// The sending facility.
    pub facility: String,
    /// Manifests received.
    pub deliveries: i64,
    /// Instances the receipts confirmed, and their studies.
    pub stored: Tally,
    /// Instances listed in a manifest and not held as listed.
    pub failed: i64,
}

/// Counts of one day, or of the whole period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Counts {
    /// The facility's instances that arrived (from modalities, importers and peers; not the
    /// findings reports tramy filed itself).
    pub received: Tally,
    /// What peers delivered here under signed manifests, per sending facility.
    pub from_peers: Vec<FromPeer>,
    /// Per destination, what was queued, sent and confirmed.
    pub destinations: Vec<DestinationCounts>,
    /// Findings the AI flagged on the facility's instances.
    pub ai_flags: Tally,
}

/// The counts of one day with activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DayCounts {
    /// The UTC day, `YYYY-MM-DD`.
    pub date: String,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
}

/// A facility's counts over a period (`GET /api/v1/facilities/{code}/stats`, `tramy stats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FacilityStats {
    /// The facility's code.
    pub facility: String,
    /// The first day (UTC), `YYYY-MM-DD`.
    pub from: String,
    /// The last day (UTC), included.
    pub to: String,
    /// Each day with activity, oldest first; days without any are left out.
    pub days: Vec<DayCounts>,
    /// The whole period (a study counts once here, however many days it had activity).
    pub totals: Counts,
}

/// Which step of an outbox row an event count is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `queued_at`.
    Queued,
    /// `sent_at`.
    Sent,
    /// `stored_at`.
    Stored,
    /// `verified_at`.
    Verified,
}

/// One grouped row. `day` is `YYYY-MM-DD`, or empty for the whole period; `peer` names a
/// destination, `facility` a sending facility; `tally` counts instances and their studies.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are described above, once
pub enum StatsRow {
    /// The facility's instances by `received_at`.
    Received { day: String, tally: Tally },
    /// Manifests received from a facility by the day they were answered: how many, the
    /// instances confirmed (and their studies), the instances not held as listed.
    FromPeer {
        day: String,
        facility: String,
        deliveries: i64,
        stored: Tally,
        failed: i64,
    },
    /// Outbox rows that reached `step` that day.
    Event {
        day: String,
        peer: String,
        step: Step,
        tally: Tally,
    },
    /// Outbox rows queued that day now in `state`: `pending` (queued or sent), `failed`, `dead`.
    State {
        day: String,
        peer: String,
        state: String,
        tally: Tally,
    },
    /// Failed or dead outbox rows queued that day, by reason.
    Reason {
        day: String,
        peer: String,
        reason: ReasonCount,
    },
    /// Flagged findings by `created_at`.
    Flags { day: String, tally: Tally },
}

impl StatsRow {
    fn day(&self) -> &str {
        match self {
            StatsRow::Received { day, .. }
            | StatsRow::FromPeer { day, .. }
            | StatsRow::Event { day, .. }
            | StatsRow::State { day, .. }
            | StatsRow::Reason { day, .. }
            | StatsRow::Flags { day, .. } => day,
        }
    }
}

fn add(a: &mut Tally, b: Tally) {
    a.instances += b.instances;
    a.studies += b.studies;
}

fn destination<'a>(c: &'a mut Counts, peer: &str) -> &'a mut DestinationCounts {
    let at = match c.destinations.iter().position(|d| d.peer == peer) {
        Some(at) => at,
        None => {
            c.destinations.push(DestinationCounts {
                peer: peer.to_string(),
                ..Default::default()
            });
            c.destinations.len() - 1
        }
    };
    &mut c.destinations[at]
}

impl Counts {
    fn apply(&mut self, row: StatsRow) {
        match row {
            StatsRow::Received { tally, .. } => add(&mut self.received, tally),
            StatsRow::Flags { tally, .. } => add(&mut self.ai_flags, tally),
            StatsRow::FromPeer {
                facility,
                deliveries,
                stored,
                failed,
                ..
            } => self.from_peers.push(FromPeer {
                facility,
                deliveries,
                stored,
                failed,
            }),
            StatsRow::Event {
                peer, step, tally, ..
            } => {
                let d = destination(self, &peer);
                let slot = match step {
                    Step::Queued => &mut d.queued,
                    Step::Sent => &mut d.sent,
                    Step::Stored => &mut d.stored,
                    Step::Verified => &mut d.verified,
                };
                add(slot, tally);
            }
            StatsRow::State {
                peer, state, tally, ..
            } => {
                let d = destination(self, &peer);
                match state.as_str() {
                    "pending" => add(&mut d.pending, tally),
                    "failed" => add(&mut d.failed, tally),
                    "dead" => add(&mut d.dead, tally),
                    _ => {}
                }
            }
            StatsRow::Reason { peer, reason, .. } => destination(self, &peer).reasons.push(reason),
        }
    }

    fn sort(&mut self) {
        self.from_peers.sort_by(|a, b| a.facility.cmp(&b.facility));
        self.destinations.sort_by(|a, b| a.peer.cmp(&b.peer));
        for d in &mut self.destinations {
            d.reasons.sort_by(|a, b| {
                b.instances
                    .cmp(&a.instances)
                    .then_with(|| a.state.cmp(&b.state))
                    .then_with(|| a.reason.cmp(&b.reason))
            });
        }
    }
}

impl FacilityStats {
    /// The counts of `facility` over `period` from its rows grouped by day (`daily`) and over
    /// the whole period (`whole`).
    pub fn assemble(
        facility: &str,
        period: &StatsPeriod,
        daily: Vec<StatsRow>,
        whole: Vec<StatsRow>,
    ) -> FacilityStats {
        let mut days: BTreeMap<String, Counts> = BTreeMap::new();
        for row in daily {
            days.entry(row.day().to_string()).or_default().apply(row);
        }
        let mut totals = Counts::default();
        for row in whole {
            totals.apply(row);
        }
        totals.sort();
        FacilityStats {
            facility: facility.to_string(),
            from: period.from.format("%Y-%m-%d").to_string(),
            to: period.to.format("%Y-%m-%d").to_string(),
            days: days
                .into_iter()
                .map(|(date, mut counts)| {
                    counts.sort();
                    DayCounts { date, counts }
                })
                .collect(),
            totals,
        }
    }

    /// The counts as text tables: arrivals, each destination, deliveries from peers, reasons.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let rows: Vec<(&str, &Counts)> = self
            .days
            .iter()
            .map(|d| (d.date.as_str(), &d.counts))
            .chain(std::iter::once(("total", &self.totals)))
            .collect();
        let _ = writeln!(
            out,
            "facility {}, {} to {} (UTC days; days without activity left out)\n",
            self.facility, self.from, self.to
        );
        let _ = writeln!(
            out,
            "{:<12} {:>9} {:>8} {:>9} {:>13}",
            "received", "instances", "studies", "AI flags", "flagged st."
        );
        for (day, c) in &rows {
            let _ = writeln!(
                out,
                "{:<12} {:>9} {:>8} {:>9} {:>13}",
                day,
                c.received.instances,
                c.received.studies,
                c.ai_flags.instances,
                c.ai_flags.studies
            );
        }
        let _ = writeln!(
            out,
            "\n{:<12} {:<16} {:>7} {:>7} {:>7} {:>9} {:>8} {:>7} {:>6}   (instances)",
            "sent",
            "destination",
            "queued",
            "sent",
            "stored",
            "verified",
            "pending",
            "failed",
            "dead"
        );
        for (day, c) in &rows {
            for d in &c.destinations {
                let _ = writeln!(
                    out,
                    "{:<12} {:<16} {:>7} {:>7} {:>7} {:>9} {:>8} {:>7} {:>6}",
                    day,
                    d.peer,
                    d.queued.instances,
                    d.sent.instances,
                    d.stored.instances,
                    d.verified.instances,
                    d.pending.instances,
                    d.failed.instances,
                    d.dead.instances
                );
            }
        }
        let _ = writeln!(
            out,
            "\n{:<12} {:<16} {:>10} {:>7} {:>8} {:>7}",
            "from peers", "facility", "manifests", "stored", "studies", "failed"
        );
        for (day, c) in &rows {
            for p in &c.from_peers {
                let _ = writeln!(
                    out,
                    "{:<12} {:<16} {:>10} {:>7} {:>8} {:>7}",
                    day, p.facility, p.deliveries, p.stored.instances, p.stored.studies, p.failed
                );
            }
        }
        let reasons: Vec<_> = self
            .totals
            .destinations
            .iter()
            .flat_map(|d| d.reasons.iter().map(move |r| (&d.peer, r)))
            .collect();
        if !reasons.is_empty() {
            let _ = writeln!(out, "\nwhy instances failed (whole period)");
            for (peer, r) in reasons {
                let _ = writeln!(
                    out,
                    "{:<16} {:<6} {:>7}  {}",
                    peer, r.state, r.instances, r.reason
                );
            }
        }
        out
    }
}

/// `facility`'s counts over `period`, for a caller [`may_read`] admits.
pub async fn facility_stats(
    index: &Index,
    who: &Principal,
    facility: &str,
    period: &StatsPeriod,
) -> Result<FacilityStats, IndexError> {
    let (start, end) = (period.start_text(), period.end_text());
    let daily = index
        .facility_stats_rows(who, facility, &start, &end, true)
        .await?;
    let whole = index
        .facility_stats_rows(who, facility, &start, &end, false)
        .await?;
    Ok(FacilityStats::assemble(facility, period, daily, whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_default_period_is_the_last_thirty_days() {
        let p = StatsPeriod::parse(None, None, day("2026-11-30")).unwrap();
        assert_eq!((p.from, p.to), (day("2026-11-01"), day("2026-11-30")));
        assert_eq!(p.start_text(), "2026-11-01T00:00:00.000Z");
        assert_eq!(p.end_text(), "2026-12-01T00:00:00.000Z");
    }

    #[test]
    fn a_period_is_bounded_and_ordered() {
        let today = day("2026-11-30");
        assert!(StatsPeriod::parse(Some("2025-11-30"), Some("2026-11-30"), today).is_ok());
        assert_eq!(
            StatsPeriod::parse(Some("2025-11-29"), Some("2026-11-30"), today),
            Err(PeriodError::TooLong(367))
        );
        assert!(matches!(
            StatsPeriod::parse(Some("2026-11-30"), Some("2026-11-01"), today),
            Err(PeriodError::Reversed(..))
        ));
        assert!(matches!(
            StatsPeriod::parse(Some("30/11/2026"), None, today),
            Err(PeriodError::NotADate(_))
        ));
    }

    #[test]
    fn rows_become_days_with_destinations_and_totals() {
        let t = |instances, studies| Tally { instances, studies };
        let rows = |d: &str| {
            vec![
                StatsRow::Received {
                    day: d.into(),
                    tally: t(5, 1),
                },
                StatsRow::Event {
                    day: d.into(),
                    peer: "hub".into(),
                    step: Step::Sent,
                    tally: t(2, 1),
                },
                StatsRow::Event {
                    day: d.into(),
                    peer: "hospital".into(),
                    step: Step::Verified,
                    tally: t(5, 1),
                },
                StatsRow::State {
                    day: d.into(),
                    peer: "hub".into(),
                    state: "pending".into(),
                    tally: t(3, 1),
                },
            ]
        };
        let period = StatsPeriod::parse(None, None, day("2026-11-30")).unwrap();
        let s = FacilityStats::assemble("LOCAL", &period, rows("2026-11-30"), rows(""));
        assert_eq!(s.days.len(), 1);
        let c = &s.days[0].counts;
        assert_eq!(c.received, t(5, 1));
        let names: Vec<&str> = c.destinations.iter().map(|d| d.peer.as_str()).collect();
        assert_eq!(names, ["hospital", "hub"]);
        assert_eq!(c.destinations[1].pending, t(3, 1));
        assert_eq!(s.totals.destinations[0].verified, t(5, 1));
        let text = s.render();
        assert!(text.contains("hospital"), "{text}");
    }
}
