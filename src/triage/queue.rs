//! Triage on arrival: jobs are queued in the index with the instance rows (so they survive a
//! restart), and a worker runs them off the acknowledgement path: highest priority first, retried
//! with exponential back-off, dead-lettered with the reason after the configured attempts.
//! Findings go to the index, one row per label (and frame).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection};

use super::model::{LoadedModel, Scores};
use super::preprocess;
use crate::dicom::SopInstanceUid;
use crate::ingest::Archive;

/// What a successful job produced: the model, the frames it looked at, their scores, and the
/// study and series of the instance.
struct Outcome {
    model: Arc<LoadedModel>,
    frames: Vec<u32>,
    scores: Vec<Scores>,
    study: String,
    series: String,
    /// The findings as a Comprehensive SR, to file into the study.
    report: crate::dicom::ReceivedInstance,
}

/// A claimed job.
#[derive(Debug, Clone)]
struct Job {
    id: i64,
    sop_instance_uid: String,
    model: String,
    attempts: i64,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs queued triage jobs until the task is dropped.
pub struct TriageWorker {
    archive: Archive,
    models: HashMap<String, Arc<LoadedModel>>,
    max_attempts: i64,
}

impl TriageWorker {
    /// A worker for `models`.
    pub fn new(archive: Archive, models: &[Arc<LoadedModel>], max_attempts: u32) -> Self {
        TriageWorker {
            archive,
            models: models
                .iter()
                .map(|m| (m.manifest.name.clone(), m.clone()))
                .collect(),
            max_attempts: i64::from(max_attempts.max(1)),
        }
    }

    /// Processes jobs forever; jobs left running by a crash are queued again first.
    pub async fn run(self) {
        if let Err(e) = self
            .archive
            .index
            .write(|c: &Connection| {
                c.execute(
                    "UPDATE triage_jobs SET state = 'queued' WHERE state = 'running'",
                    [],
                )
            })
            .await
        {
            tracing::error!(error = %e, "cannot requeue interrupted triage jobs");
        }
        loop {
            let jobs = match self.claim(8).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim triage jobs");
                    Vec::new()
                }
            };
            if jobs.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            for job in jobs {
                let result = self.process(&job).await;
                if let Err(e) = self.settle(&job, result).await {
                    tracing::error!(error = %e, job = job.id, "cannot record a triage result");
                }
            }
        }
    }

    async fn claim(&self, limit: i64) -> Result<Vec<Job>, crate::store::IndexError> {
        let now = now();
        self.archive
            .index
            .write(move |c: &Connection| {
                let jobs: Vec<Job> = c
                    .prepare_cached(
                        "SELECT id, sop_instance_uid, model, attempts FROM triage_jobs \
                         WHERE state = 'queued' AND not_before <= ?1 ORDER BY priority DESC, id LIMIT ?2",
                    )?
                    .query_map(params![now, limit], |r| {
                        Ok(Job {
                            id: r.get(0)?,
                            sop_instance_uid: r.get(1)?,
                            model: r.get(2)?,
                            attempts: r.get::<_, i64>(3)? + 1,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                for j in &jobs {
                    c.execute(
                        "UPDATE triage_jobs SET state = 'running', attempts = ?2 WHERE id = ?1",
                        params![j.id, j.attempts],
                    )?;
                }
                Ok(jobs)
            })
            .await
    }

    async fn process(&self, job: &Job) -> Result<Outcome, String> {
        let model = self
            .models
            .get(&job.model)
            .cloned()
            .ok_or_else(|| format!("model {} is not loaded", job.model))?;
        let sop = SopInstanceUid::new(&job.sop_instance_uid).map_err(|e| e.to_string())?;
        let instance = self
            .archive
            .index
            .instance(&sop)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the instance is no longer stored")?;
        let file = self
            .archive
            .objects
            .get(&instance.object_key)
            .await
            .map_err(|e| e.to_string())?;
        let runner = model.clone();
        let (frames, scores, report) = tokio::task::spawn_blocking(move || {
            let (input, frames) =
                preprocess::from_dicom(&file, &runner.manifest).map_err(|e| e.to_string())?;
            let scores = runner.infer(&input).map_err(|e| e.to_string())?;
            let source = crate::dicom::ReceivedInstance::from_part10(file)
                .and_then(|r| r.parse())
                .map_err(|e| e.to_string())?;
            let report = super::sr::findings_sr(&source, &runner.manifest, &frames, &scores);
            Ok::<_, String>((frames, scores, report))
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(Outcome {
            model,
            frames,
            scores,
            study: instance.study_instance_uid,
            series: instance.series_instance_uid,
            report,
        })
    }

    async fn settle(
        &self,
        job: &Job,
        result: Result<Outcome, String>,
    ) -> Result<(), crate::store::IndexError> {
        let job = job.clone();
        let max_attempts = self.max_attempts;
        match result {
            Ok(Outcome {
                model,
                frames,
                scores,
                study,
                series,
                report,
            }) => {
                // The report goes into the study through the same ingest path as any instance.
                let sender = crate::ingest::Sender {
                    source: super::sr::AI_SOURCE.into(),
                    address: "triage".into(),
                };
                if let Err(e) = self
                    .archive
                    .ingest(report, &sender, &crate::ingest::Expected::NOTHING)
                    .await
                {
                    tracing::warn!(error = %e, model = %model.manifest.name, "the findings report was not stored");
                }
                let (name, version, statement) = (
                    model.manifest.name.clone(),
                    model.manifest.version.clone(),
                    model.manifest.provenance.statement.clone(),
                );
                let flagged = scores.iter().flatten().filter(|s| s.flagged).count();
                tracing::info!(model = %name, flagged, "triage finished");
                self.archive
                    .index
                    .write(move |c: &Connection| {
                        let created = now();
                        for (frame, frame_scores) in frames.iter().zip(&scores) {
                            for s in frame_scores {
                                c.execute(
                                    "INSERT OR REPLACE INTO findings (study_instance_uid, series_instance_uid, \
                                     sop_instance_uid, frame, model, model_version, label, probability, flagged, \
                                     urgency, statement, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                                    params![
                                        study,
                                        series,
                                        job.sop_instance_uid,
                                        frame + 1,
                                        name,
                                        version,
                                        s.label,
                                        f64::from(s.probability),
                                        s.flagged,
                                        format!("{:?}", s.urgency).to_lowercase(),
                                        statement,
                                        created
                                    ],
                                )?;
                            }
                        }
                        c.execute("UPDATE triage_jobs SET state = 'done', last_error = '' WHERE id = ?1", [job.id])?;
                        Ok(())
                    })
                    .await
            }
            Err(reason) => {
                let dead = job.attempts >= max_attempts;
                tracing::warn!(job = job.id, model = %job.model, attempts = job.attempts, dead, %reason, "triage job failed");
                // Back-off: 2, 4, 8… seconds, capped at ten minutes.
                let delay = chrono::Duration::seconds(
                    2_i64
                        .saturating_pow(job.attempts.clamp(1, 9) as u32)
                        .min(600),
                );
                let not_before = (chrono::Utc::now() + delay)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                self.archive
                    .index
                    .write(move |c: &Connection| {
                        c.execute(
                            "UPDATE triage_jobs SET state = ?2, last_error = ?3, not_before = ?4 WHERE id = ?1",
                            params![job.id, if dead { "dead" } else { "queued" }, reason, not_before],
                        )?;
                        Ok(())
                    })
                    .await
            }
        }
    }
}
