//! Triage on arrival: jobs are queued in the index with the instance rows (so they survive a
//! restart), and a worker runs them off the acknowledgement path: highest priority first, retried
//! with exponential back-off, dead-lettered with the reason after the configured attempts.
//! Findings go to the index, one row per label (and frame).

use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::clip::ClipFinding;
use super::field_of_view::{self, FieldOfView};
use super::gate::{self, GateVerdict};
use super::intended_use::{self, Assessment, IntendedUse, Subject};
use super::manifest::{Anatomy, Urgency};
use super::model::{LoadedModel, Scores};
use super::preprocess;
use crate::access::Principal;
use crate::dicom::SopInstanceUid;
use crate::ingest::Archive;
use crate::store::findings::{ClaimedJob, JobFindings, JobState, NewFinding};

/// What a successful job produced: the model, the frames it looked at, their scores, and the
/// study and series of the instance.
struct Outcome {
    model: Arc<LoadedModel>,
    frames: Vec<u32>,
    scores: Vec<Scores>,
    /// For a per-frame model reading a clip: each label's finding on the whole clip.
    clip: Vec<ClipFinding>,
    /// Each frame's field of view (empty when the model is not cropped to one).
    fields_of_view: Vec<Option<FieldOfView>>,
    study: String,
    series: String,
    /// The findings as a Comprehensive SR, to file into the study.
    report: crate::dicom::ReceivedInstance,
    /// The instance against the model's intended use.
    assessment: Assessment,
}

/// Why an instance was left unscored on purpose.
#[derive(Debug, Clone)]
enum SkipReason {
    /// Outside the model's declared population, which says to skip: the reason (it names the
    /// patient's age, so the audit trail gets only the kind).
    OutsideIntendedUse(String),
    /// The model's anatomy gate did not find its anatomy: the reason (the image's, not the
    /// patient's: "not a frontal chest radiograph: lung area 0.0%").
    RefusedByGate(String),
}

impl SkipReason {
    /// The reason the job list shows.
    fn text(&self) -> &str {
        match self {
            SkipReason::OutsideIntendedUse(r) | SkipReason::RefusedByGate(r) => r,
        }
    }

    /// The reason the audit trail records, without patient data.
    fn audit_text(&self) -> &str {
        match self {
            SkipReason::OutsideIntendedUse(_) => "outside the model's intended use",
            SkipReason::RefusedByGate(r) => r,
        }
    }
}

/// An instance left unscored, with its study for the audit trail.
struct Skip {
    reason: SkipReason,
    study: String,
}

/// How a job ended without an error.
enum Settled {
    /// Scored.
    Scored(Box<Outcome>),
    /// Left unscored on purpose.
    Skipped(Skip),
}

/// Runs queued triage jobs until the task is dropped.
pub struct TriageWorker {
    archive: Archive,
    /// Triage is tramy's own work.
    principal: Principal,
    /// The models that score, by name.
    models: HashMap<String, Arc<LoadedModel>>,
    /// The anatomy gates, which models made for an anatomy run first.
    gates: HashMap<Anatomy, Arc<LoadedModel>>,
    /// The endoscope field-of-view finder, which models with `preprocess.field_of_view` run
    /// first.
    field_of_view: Option<Arc<LoadedModel>>,
    max_attempts: i64,
    max_batch: i64,
    max_wait: Duration,
    /// How long a claimed job is this worker's before another may take it over.
    lease: Duration,
}

impl TriageWorker {
    /// A worker for `models`.
    pub fn new(
        archive: Archive,
        models: &[Arc<LoadedModel>],
        config: &crate::config::TriageConfig,
    ) -> Self {
        TriageWorker {
            archive,
            principal: Principal::system(),
            models: models
                .iter()
                .filter(|m| !m.manifest.is_stage())
                .map(|m| (m.manifest.name.clone(), m.clone()))
                .collect(),
            gates: models
                .iter()
                .filter_map(|m| Some((m.manifest.gate.as_ref()?.anatomy, m.clone())))
                .collect(),
            field_of_view: models
                .iter()
                .find(|m| m.manifest.task == super::manifest::Task::FieldOfView)
                .cloned(),
            max_attempts: i64::from(config.max_attempts.max(1)),
            max_batch: i64::from(config.max_batch.max(1)),
            max_wait: Duration::from_millis(config.max_wait_ms),
            lease: Duration::from_secs(config.lease_seconds.max(1)),
        }
    }

    /// Processes jobs forever; jobs left running by a crash are queued again first.
    pub async fn run(self) {
        if let Err(e) = self
            .archive
            .index()
            .requeue_interrupted_jobs(&self.principal)
            .await
        {
            tracing::error!(error = %e, "cannot requeue interrupted triage jobs");
        }
        loop {
            let mut jobs = self.claim_or_log(self.max_batch).await;
            if jobs.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            // Dynamic batching: a short wait lets a burst of arrivals share one inference.
            if (jobs.len() as i64) < self.max_batch && !self.max_wait.is_zero() {
                tokio::time::sleep(self.max_wait).await;
                jobs.extend(self.claim_or_log(self.max_batch - jobs.len() as i64).await);
            }
            let mut by_model: HashMap<String, Vec<ClaimedJob>> = HashMap::new();
            for job in jobs {
                by_model.entry(job.model.clone()).or_default().push(job);
            }
            for (_, group) in by_model {
                let results = self.process_group(&group).await;
                for (job, result) in group.iter().zip(results) {
                    if let Err(e) = self.settle(job, result).await {
                        tracing::error!(error = %e, job = job.id, "cannot record a triage result");
                    }
                }
            }
        }
    }

    async fn claim_or_log(&self, limit: i64) -> Vec<ClaimedJob> {
        self.claim(limit).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot claim triage jobs");
            Vec::new()
        })
    }

    async fn claim(&self, limit: i64) -> Result<Vec<ClaimedJob>, crate::store::IndexError> {
        self.archive
            .index()
            .claim_triage_jobs(&self.principal, limit, self.lease)
            .await
    }

    /// The object of a job's instance, or why it cannot be had.
    async fn load(
        &self,
        job: &ClaimedJob,
    ) -> Result<(crate::store::StoredInstance, bytes::Bytes), String> {
        let sop = SopInstanceUid::new(&job.sop_instance_uid).map_err(|e| e.to_string())?;
        let instance = self
            .archive
            .index()
            .instance(&self.principal, &sop)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the instance is no longer stored")?;
        let file = self
            .archive
            .read_instance(&instance)
            .await
            .map_err(|e| e.to_string())?;
        Ok((instance, file))
    }

    /// Runs the jobs of one model: single-image inputs as one batch, per-frame inputs (already a
    /// batch of frames each) one by one. One result per job, in order.
    async fn process_group(&self, jobs: &[ClaimedJob]) -> Vec<Result<Settled, String>> {
        let Some(model) = jobs
            .first()
            .and_then(|j| self.models.get(&j.model))
            .cloned()
        else {
            return jobs
                .iter()
                .map(|j| Err(format!("model {} is not loaded", j.model)))
                .collect();
        };
        let gate = match model.manifest.routing.anatomy {
            Some(anatomy) => match self.gates.get(&anatomy) {
                Some(gate) => Some(gate.clone()),
                None => {
                    let reason = format!("no anatomy gate for {anatomy} is loaded");
                    return jobs.iter().map(|_| Err(reason.clone())).collect();
                }
            },
            None => None,
        };
        let field_of_view = match model.manifest.preprocess.field_of_view {
            true => match &self.field_of_view {
                Some(f) => Some(f.clone()),
                None => {
                    let reason = "no field-of-view model is loaded".to_string();
                    return jobs.iter().map(|_| Err(reason.clone())).collect();
                }
            },
            false => None,
        };
        let mut loaded = Vec::with_capacity(jobs.len());
        for job in jobs {
            loaded.push(self.load(job).await);
        }
        let runner = model.clone();
        let computed = tokio::task::spawn_blocking(move || {
            let stages = Stages {
                gate: gate.as_deref(),
                field_of_view: field_of_view.as_deref(),
            };
            compute(&runner, stages, loaded)
        })
        .await;
        match computed {
            Ok(results) => results
                .into_iter()
                .map(|r| {
                    r.map(|computed| match computed {
                        Computed::Skipped(skip) => Settled::Skipped(skip),
                        Computed::Scored(s) => Settled::Scored(Box::new(Outcome {
                            model: model.clone(),
                            frames: s.frames,
                            scores: s.scores,
                            clip: s.clip,
                            fields_of_view: s.fields_of_view,
                            study: s.instance.study_instance_uid,
                            series: s.instance.series_instance_uid,
                            report: s.report,
                            assessment: s.assessment,
                        })),
                    })
                })
                .collect(),
            Err(e) => jobs
                .iter()
                .map(|_| Err(format!("triage task failed: {e}")))
                .collect(),
        }
    }

    async fn settle(
        &self,
        job: &ClaimedJob,
        result: Result<Settled, String>,
    ) -> Result<(), crate::store::IndexError> {
        let job = job.clone();
        let max_attempts = self.max_attempts;
        match result {
            Ok(Settled::Skipped(skip)) => {
                tracing::info!(job = job.id, model = %job.model, reason = skip.reason.audit_text(), "triage skipped");
                self.archive
                    .index()
                    .skip_triage_job(&self.principal, &job, skip.reason.text().to_string())
                    .await?;
                let detail = format!("triage {} skipped: {}", job.model, skip.reason.audit_text());
                self.audit(skip.study, detail).await;
                Ok(())
            }
            Ok(Settled::Scored(outcome)) => {
                let Outcome {
                    model,
                    frames,
                    scores,
                    clip,
                    fields_of_view,
                    study,
                    series,
                    report,
                    assessment,
                } = *outcome;
                // The report goes into the study through the same ingest path as any instance.
                let sender = crate::ingest::Sender {
                    principal: self.principal.clone(),
                    source: super::sr::AI_SOURCE.into(),
                    address: "triage".into(),
                    origin_facility: None,
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
                let flagged = scores.iter().flatten().filter(|s| s.flagged).count()
                    + clip.iter().filter(|c| c.flagged).count();
                tracing::info!(model = %name, flagged, "triage finished");
                let detail = format!("triage {name} scored: {flagged} label(s) flagged");
                self.audit(study.clone(), detail).await;
                let fov_of = |index: usize| fields_of_view.get(index).copied().flatten();
                let fov_at = |frame: u32| frames.iter().position(|f| *f == frame).and_then(fov_of);
                let findings: Vec<NewFinding> = frames
                    .iter()
                    .zip(&scores)
                    .enumerate()
                    .flat_map(|(index, (frame, frame_scores))| {
                        frame_scores.iter().map(move |s| NewFinding {
                            frame: i64::from(*frame) + 1,
                            fired_frames: Vec::new(),
                            field_of_view: fov_of(index),
                            label: s.label.clone(),
                            probability: f64::from(s.probability),
                            flagged: s.flagged,
                            urgency: s.urgency,
                        })
                    })
                    .chain(clip.iter().map(|c| NewFinding {
                        frame: 0,
                        field_of_view: fov_at(c.peak_frame),
                        fired_frames: c.fired_frames.iter().map(|f| i64::from(*f) + 1).collect(),
                        label: c.label.clone(),
                        probability: f64::from(c.probability),
                        flagged: c.flagged,
                        urgency: c.urgency,
                    }))
                    .collect();
                let flag = findings
                    .iter()
                    .filter(|f| f.flagged)
                    .map(|f| f.urgency)
                    .max();
                let results = JobFindings {
                    study_instance_uid: study,
                    series_instance_uid: series,
                    model: name,
                    model_version: version,
                    statement,
                    intended_use: assessment.intended_use,
                    intended_use_note: assessment.note,
                    view_position: assessment.view,
                    findings,
                    forwarding: flag.map(|urgency| crate::store::findings::FlagForwarding {
                        rules: self.archive.forward_rules_shared(),
                        urgency,
                        report_source: super::sr::AI_SOURCE.into(),
                    }),
                };
                self.archive
                    .index()
                    .complete_triage_job(&self.principal, &job, results)
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
                let next = if dead {
                    JobState::Dead
                } else {
                    JobState::Queued
                };
                self.archive
                    .index()
                    .fail_triage_job(&self.principal, &job, next, reason, not_before)
                    .await
            }
        }
    }
}

impl TriageWorker {
    /// Records a triage job's end in the study's audit trail: tramy's own access to it.
    async fn audit(&self, study: String, detail: String) {
        use crate::audit::{AuditAction, AuditOutcome, NewAuditEvent};
        let event = NewAuditEvent {
            actor: self.principal.clone(),
            action: AuditAction::Triage,
            outcome: AuditOutcome::Success,
            study_instance_uid: Some(study),
            patient: None,
            detail,
        };
        if let Err(e) = self.archive.index().record_audit(event).await {
            tracing::error!(error = %e, "an audit event could not be recorded");
        }
    }
}

/// What one job's instance gave.
enum Computed {
    /// Scored.
    Scored(Box<Scored>),
    /// Left unscored on purpose.
    Skipped(Skip),
}

/// A scored instance.
struct Scored {
    instance: crate::store::StoredInstance,
    frames: Vec<u32>,
    scores: Vec<Scores>,
    clip: Vec<ClipFinding>,
    fields_of_view: Vec<Option<FieldOfView>>,
    report: crate::dicom::ReceivedInstance,
    assessment: Assessment,
}

/// The models a model's input passes through first.
#[derive(Clone, Copy)]
struct Stages<'a> {
    /// Its anatomy's gate.
    gate: Option<&'a LoadedModel>,
    /// The endoscope field-of-view finder.
    field_of_view: Option<&'a LoadedModel>,
}

/// An instance ready for inference, or one left unscored.
enum Prepared {
    Ready(Box<Ready>),
    Skipped(Skip),
}

/// An instance with its model input.
struct Ready {
    instance: crate::store::StoredInstance,
    source: dicom_object::InMemDicomObject,
    assessment: Assessment,
    input: ndarray::Array4<f32>,
    frames: Vec<u32>,
    /// The anatomy gate's input (its first frame), for a model made for an anatomy.
    gate_input: Option<ndarray::Array4<f32>>,
    /// What the gate found, once it ran.
    gate: Option<GateVerdict>,
    /// Each sampled frame's field of view, when the model is cropped to it.
    fields_of_view: Vec<Option<FieldOfView>>,
}

/// Parses the instance, judges it against the model's intended use, and (unless that says to
/// skip it) prepares its input and its gate's, from one decoding where their windows agree.
fn prepare(
    model: &LoadedModel,
    stages: Stages<'_>,
    loaded: Result<(crate::store::StoredInstance, bytes::Bytes), String>,
) -> Result<Prepared, String> {
    let gate = stages.gate;
    let (instance, file) = loaded?;
    let source = crate::dicom::ReceivedInstance::from_part10(file.clone())
        .and_then(|r| r.parse())
        .map_err(|e| e.to_string())?;
    let assessment =
        intended_use::assess(model.manifest.population.as_ref(), &Subject::of(&source));
    if assessment.skip() {
        return Ok(Prepared::Skipped(Skip {
            reason: SkipReason::OutsideIntendedUse(assessment.note),
            study: instance.study_instance_uid,
        }));
    }
    let (images, frames) =
        preprocess::images_from_dicom(&file, &model.manifest).map_err(|e| e.to_string())?;
    let (cropped, fields_of_view) = match stages.field_of_view {
        Some(f) => to_field_of_view(f, &images)?,
        None => (Vec::new(), Vec::new()),
    };
    let model_images = if cropped.is_empty() {
        &images
    } else {
        &cropped
    };
    let input = preprocess::from_images(model_images, &model.manifest);
    let gate_input = gate
        .map(|g| preprocess::first_frame_input(&g.manifest, &model.manifest, &images, &file))
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(Prepared::Ready(Box::new(Ready {
        instance,
        source,
        assessment,
        input,
        frames,
        gate_input,
        gate: None,
        fields_of_view,
    })))
}

/// The frames cropped to the endoscope's field of view, and each frame's circle.
type Cropped = (Vec<image::DynamicImage>, Vec<Option<FieldOfView>>);

/// Finds each frame's field of view and crops the frame to it.
fn to_field_of_view(
    model: &LoadedModel,
    images: &[image::DynamicImage],
) -> Result<Cropped, String> {
    let rgb: Vec<image::RgbImage> = images.iter().map(|i| i.to_rgb8()).collect();
    let found = field_of_view::estimate(model, &rgb).map_err(|e| format!("field of view: {e}"))?;
    let cropped = images
        .iter()
        .zip(&found)
        .map(|(image, fov)| field_of_view::crop(image, fov.as_ref()))
        .collect();
    Ok((cropped, found))
}

/// Runs the anatomy gate over every prepared instance that has its input, in one batch, and
/// leaves unscored those that do not show the anatomy.
fn run_gate(gate: &LoadedModel, prepared: &mut [Result<Prepared, String>]) {
    let waiting: Vec<usize> = (0..prepared.len())
        .filter(|&i| matches!(&prepared[i], Ok(Prepared::Ready(r)) if r.gate_input.is_some()))
        .collect();
    let views: Vec<_> = waiting
        .iter()
        .filter_map(|&i| match &prepared[i] {
            Ok(Prepared::Ready(r)) => r.gate_input.as_ref().map(|g| g.view()),
            _ => None,
        })
        .collect();
    if views.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let masks = ndarray::concatenate(ndarray::Axis(0), &views)
        .map_err(|e| e.to_string())
        .and_then(|batch| gate::masks(gate, &batch).map_err(|e| e.to_string()));
    metrics::histogram!("tramy_triage_gate_seconds", "model" => gate.manifest.name.clone())
        .record(started.elapsed().as_secs_f64());
    let spec = match gate::spec_of(gate) {
        Ok(spec) => spec,
        Err(e) => return fail_all(prepared, &waiting, &e.to_string()),
    };
    let masks = match masks {
        Ok(masks) => masks,
        Err(e) => return fail_all(prepared, &waiting, &e),
    };
    let by = format!("{} {}", gate.manifest.name, gate.manifest.version);
    for (&i, mask) in waiting.iter().zip(masks) {
        let verdict = gate::judge(&by, spec, mask);
        let slot = &mut prepared[i];
        if let Ok(Prepared::Ready(r)) = slot {
            match verdict.refusal.clone() {
                Some(refusal) => {
                    *slot = Ok(Prepared::Skipped(Skip {
                        reason: SkipReason::RefusedByGate(refusal),
                        study: r.instance.study_instance_uid.clone(),
                    }));
                }
                None => r.gate = Some(verdict),
            }
        }
    }
}

/// Marks the given prepared instances failed with `reason`.
fn fail_all(prepared: &mut [Result<Prepared, String>], which: &[usize], reason: &str) {
    for &i in which {
        prepared[i] = Err(format!("anatomy gate: {reason}"));
    }
}

/// The clip's findings of a per-frame model with a `[clip]` rule: then the clip's smoothed
/// finding decides, and single frames are evidence, never flags of their own.
fn clip_of(
    model: &LoadedModel,
    frames: &[u32],
    scores: &mut [Scores],
    assessment: &Assessment,
) -> Vec<ClipFinding> {
    let Some(rule) = &model.manifest.clip else {
        return Vec::new();
    };
    let mut clip = super::clip::clip_findings(&model.manifest, rule, frames, scores);
    for s in scores.iter_mut().flatten() {
        s.flagged = false;
    }
    if assessment.intended_use == IntendedUse::Outside {
        for c in &mut clip {
            c.flagged = false;
            c.urgency = Urgency::Routine;
        }
    }
    clip
}

/// A finding outside the model's intended use is never flagged, so never urgent.
fn unflag(scores: &mut [Scores]) {
    for s in scores.iter_mut().flatten() {
        s.flagged = false;
        s.urgency = Urgency::Routine;
    }
}

/// The input of a prepared single image (not a batch of frames), which batches with others.
fn single_input(
    p: &Result<Prepared, String>,
    per_frame: bool,
) -> Option<ndarray::ArrayView4<'_, f32>> {
    match p {
        Ok(Prepared::Ready(r)) if !per_frame && r.input.shape()[0] == 1 => Some(r.input.view()),
        _ => None,
    }
}

/// Preprocesses every loaded instance, infers (single images together), and writes each report.
fn compute(
    model: &LoadedModel,
    stages: Stages<'_>,
    loaded: Vec<Result<(crate::store::StoredInstance, bytes::Bytes), String>>,
) -> Vec<Result<Computed, String>> {
    let per_frame = model.manifest.task == super::manifest::Task::PerFrame;
    // Decoding and resizing dominate (a 2000-pixel radiograph takes longer than the model): the
    // batch's instances are prepared in parallel on rayon's pool.
    let mut prepared: Vec<Result<Prepared, String>> = loaded
        .into_par_iter()
        .map(|l| prepare(model, stages, l))
        .collect();
    if let Some(gate) = stages.gate {
        run_gate(gate, &mut prepared);
    }
    // Scores per prepared item: one batched inference over the single images.
    let single = |p| single_input(p, per_frame);
    let singles: Vec<usize> = (0..prepared.len())
        .filter(|&i| single(&prepared[i]).is_some())
        .collect();
    let mut scores: Vec<Option<Result<Vec<Scores>, String>>> =
        prepared.iter().map(|_| None).collect();
    if !singles.is_empty() {
        let views: Vec<_> = singles
            .iter()
            .filter_map(|&i| single(&prepared[i]))
            .collect();
        metrics::histogram!("tramy_triage_batch_size", "model" => model.manifest.name.clone())
            .record(views.len() as f64);
        let started = std::time::Instant::now();
        let inferred = ndarray::concatenate(ndarray::Axis(0), &views)
            .map_err(|e| e.to_string())
            .and_then(|batch| model.infer(&batch).map_err(|e| e.to_string()));
        metrics::histogram!("tramy_triage_inference_seconds", "model" => model.manifest.name.clone())
            .record(started.elapsed().as_secs_f64());
        match inferred {
            Ok(all) => {
                for (&i, s) in singles.iter().zip(all) {
                    scores[i] = Some(Ok(vec![s]));
                }
            }
            Err(e) => {
                for &i in &singles {
                    scores[i] = Some(Err(e.clone()));
                }
            }
        }
    }
    prepared
        .into_iter()
        .zip(scores)
        .map(|(p, batched)| match p? {
            Prepared::Skipped(skip) => Ok(Computed::Skipped(skip)),
            Prepared::Ready(r) => score(model, *r, batched),
        })
        .collect()
}

/// The scores of a prepared instance (inferred alone unless its batch did) and its report.
fn score(
    model: &LoadedModel,
    r: Ready,
    batched: Option<Result<Vec<Scores>, String>>,
) -> Result<Computed, String> {
    let mut scores = match batched {
        Some(s) => s?,
        None => model.infer(&r.input).map_err(|e| e.to_string())?,
    };
    if r.assessment.intended_use == IntendedUse::Outside {
        unflag(&mut scores);
    }
    let clip = clip_of(model, &r.frames, &mut scores, &r.assessment);
    let report = super::sr::findings_sr(
        &r.source,
        &model.manifest,
        &r.frames,
        &scores,
        &r.assessment,
        r.gate.as_ref(),
        &clip,
    );
    Ok(Computed::Scored(Box::new(Scored {
        instance: r.instance,
        frames: r.frames,
        scores,
        clip,
        fields_of_view: r.fields_of_view,
        report,
        assessment: r.assessment,
    })))
}
