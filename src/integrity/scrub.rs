//! `tramy verify`: reads every stored object (or those received since a date) at a bounded
//! rate, checks each as [`super::read`] does, and reports damaged and missing instances. Marks
//! in the index follow what it finds: a problem is recorded, and a mark whose object is intact
//! again (restored from a backup) is cleared. Safe beside a running server (SQLite WAL).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::read::{read_checked, ReadError};
use crate::access::Principal;
use crate::ingest::Archive;
use crate::store::damage::Problem;
use crate::store::IndexError;

/// What to verify and how fast.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only instances received at or after this time (RFC 3339 or a date `YYYY-MM-DD`).
    pub since: Option<String>,
    /// Read at most this many megabytes per second, so a scrub does not starve retrievals.
    pub rate_mb_per_s: Option<f64>,
    /// Show a progress bar.
    pub progress: bool,
}

/// One instance whose object failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Study Instance UID, to find it.
    pub study_instance_uid: String,
    /// What was found.
    pub reason: String,
}

/// What a verification found.
#[derive(Debug, Default, Serialize)]
pub struct VerifySummary {
    /// Instances checked.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Objects that are not what was acknowledged.
    pub damaged: Vec<Failed>,
    /// Objects that are gone.
    pub missing: Vec<Failed>,
    /// Objects the store could not read (I/O errors), unmarked.
    pub unreadable: Vec<Failed>,
    /// Instances marked earlier whose object is intact now; their marks were cleared.
    pub repaired: Vec<String>,
}

impl VerifySummary {
    /// Throughput in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / 1e6 / self.seconds
        } else {
            0.0
        }
    }

    /// Whether every checked object was intact.
    pub fn all_intact(&self) -> bool {
        self.damaged.is_empty() && self.missing.is_empty() && self.unreadable.is_empty()
    }

    /// A report for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "verified {} instances, {:.1} MB in {:.1} s ({:.1} MB/s)\n",
            self.checked,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.mb_per_s()
        );
        for (what, list) in [
            ("damaged", &self.damaged),
            ("missing", &self.missing),
            ("unreadable", &self.unreadable),
        ] {
            out.push_str(&format!("{what}: {}\n", list.len()));
            for f in list {
                out.push_str(&format!(
                    "  study {} instance {}: {}\n",
                    f.study_instance_uid, f.sop_instance_uid, f.reason
                ));
            }
        }
        if !self.repaired.is_empty() {
            out.push_str(&format!(
                "intact again (marks cleared): {}\n",
                self.repaired.len()
            ));
        }
        out
    }
}

const PAGE: usize = 500;

/// Runs [`verify`] every `interval` at `rate_mb_per_s`, for `tramy serve`; logs what each scrub
/// found and publishes `tramy_integrity_scrub_damaged` / `_missing` and the time of the last
/// scrub for alerting.
pub async fn every(archive: Archive, interval: Duration, rate_mb_per_s: f64) {
    let options = VerifyOptions {
        since: None,
        rate_mb_per_s: Some(rate_mb_per_s),
        progress: false,
    };
    loop {
        tokio::time::sleep(interval).await;
        match verify(&archive, &options).await {
            Ok(summary) => {
                metrics::gauge!("tramy_integrity_scrub_damaged").set(summary.damaged.len() as f64);
                metrics::gauge!("tramy_integrity_scrub_missing").set(summary.missing.len() as f64);
                metrics::gauge!("tramy_integrity_scrub_last_seconds")
                    .set(chrono::Utc::now().timestamp() as f64);
                if summary.all_intact() {
                    tracing::info!(
                        checked = summary.checked,
                        mb_per_s = summary.mb_per_s(),
                        "background scrub: every stored object is intact"
                    );
                } else {
                    tracing::error!(
                        checked = summary.checked,
                        damaged = summary.damaged.len(),
                        missing = summary.missing.len(),
                        unreadable = summary.unreadable.len(),
                        "background scrub found stored objects that are not intact; `tramy verify` lists them"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "background scrub failed"),
        }
    }
}

/// Verifies the archive's objects; see the module documentation.
pub async fn verify(
    archive: &Archive,
    options: &VerifyOptions,
) -> Result<VerifySummary, IndexError> {
    let since = options.since.clone().unwrap_or_default();
    // The scrub is tramy's own work, whoever started it.
    let system = Principal::system();
    let total = archive
        .index()
        .instance_count_since(&system, &since)
        .await?;
    let bar = if options.progress {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} instances  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let marked: HashSet<String> = archive
        .index()
        .damaged_instances(&system)
        .await?
        .into_iter()
        .map(|d| d.sop_instance_uid)
        .collect();
    let started = Instant::now();
    let mut summary = VerifySummary::default();
    let mut after = 0;
    loop {
        let page = archive
            .index()
            .instances_after(&system, after, &since, PAGE)
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        for (_, instance) in page {
            let result = read_checked(archive, &instance, false).await;
            summary.checked += 1;
            bar.inc(1);
            record(archive, &instance, result, &marked, &mut summary).await?;
            throttle(options.rate_mb_per_s, summary.bytes, started).await;
        }
    }
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn record(
    archive: &Archive,
    instance: &crate::store::StoredInstance,
    result: Result<(Option<bytes::Bytes>, u64), ReadError>,
    marked: &HashSet<String>,
    summary: &mut VerifySummary,
) -> Result<(), IndexError> {
    let sop = instance.sop_instance_uid.clone();
    let failed = |reason: String| Failed {
        sop_instance_uid: sop.clone(),
        study_instance_uid: instance.study_instance_uid.clone(),
        reason,
    };
    match result {
        Ok((_, read)) => {
            summary.bytes += read;
            if marked.contains(&sop) {
                archive
                    .index()
                    .clear_damage(&Principal::system(), &sop)
                    .await?;
                summary.repaired.push(sop);
            }
        }
        Err(ReadError::Backend(e)) => summary.unreadable.push(failed(e.to_string())),
        Err(e) => {
            if let Some((problem, reason)) = e.problem() {
                archive
                    .index()
                    .mark_damaged(&Principal::system(), &sop, problem, &reason)
                    .await?;
                match problem {
                    Problem::Missing => summary.missing.push(failed(reason)),
                    Problem::Damaged => summary.damaged.push(failed(reason)),
                }
            }
        }
    }
    Ok(())
}

/// Sleeps as long as reading `bytes` since `started` ran ahead of `rate` MB/s.
async fn throttle(rate_mb_per_s: Option<f64>, bytes: u64, started: Instant) {
    let Some(rate) = rate_mb_per_s.filter(|r| *r > 0.0) else {
        return;
    };
    let due = Duration::from_secs_f64(bytes as f64 / (rate * 1e6));
    if let Some(ahead) = due.checked_sub(started.elapsed()) {
        tokio::time::sleep(ahead).await;
    }
}
