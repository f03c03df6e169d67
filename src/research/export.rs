//! Writing a research set: which studies (those the caller may retrieve, narrowed to one
//! research grant and to a modality and study dates), then each instance read through the
//! verified read path, screened, de-identified and handed to a [`SetWriter`] one at a time
//! (never the whole set in memory), then `labels.csv`, `manifest.json` and `README.txt`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dicom_dictionary_std::tags;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use super::deidentify::{self, Exclusion, Subject, METHOD, METHOD_CODES};
use super::{may_export, Pseudonyms, ResearchError};
use crate::access::{Action, Principal};
use crate::audit::{AuditAction, AuditOutcome, NewAuditEvent};
use crate::dicom::age::Age;
use crate::dicom::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use crate::ingest::Archive;
use crate::store::findings::Finding;
use crate::store::query::{AttributeQuery, QueryLevel};

/// What to export (`POST /api/v1/research/exports`, `tramy research export`).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// A research grant to the caller's facility; absent: every study the caller may see for
    /// research (the research grants in force to its facility).
    #[serde(default)]
    pub grant: Option<String>,
    /// Only studies with this modality (e.g. `DX`).
    #[serde(default)]
    pub modality: Option<String>,
    /// Only studies on or after this date (`YYYY-MM-DD`).
    #[serde(default)]
    pub from: Option<String>,
    /// Only studies on or before this date (`YYYY-MM-DD`).
    #[serde(default)]
    pub to: Option<String>,
}

/// What a set holds and what was left out, as `manifest.json` states it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportSummary {
    /// Studies chosen.
    pub studies: usize,
    /// Instances written.
    pub instances: usize,
    /// Instances left out, by reason.
    pub excluded: BTreeMap<Exclusion, usize>,
}

impl ExportSummary {
    /// Instances left out, all reasons together.
    pub fn excluded_total(&self) -> usize {
        self.excluded.values().sum()
    }
}

/// Where a set's files go: a streamed ZIP ([`ZipStream`]) or a folder ([`DirWriter`]).
pub trait SetWriter: Send {
    /// Adds the file `name` (a relative path with `/`).
    fn add(
        &mut self,
        name: &str,
        data: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), ResearchError>> + Send;
}

/// A study date filter value, `YYYY-MM-DD` (or `YYYYMMDD`), as DA.
fn da(value: &Option<String>, what: &str) -> Result<String, ResearchError> {
    let Some(v) = value else {
        return Ok(String::new());
    };
    let digits: String = v.chars().filter(|c| *c != '-').collect();
    chrono::NaiveDate::parse_from_str(&digits, "%Y%m%d")
        .map(|_| digits)
        .map_err(|_| ResearchError::BadRequest(format!("{what} is not a date YYYY-MM-DD")))
}

/// The studies `who` may export under `request`, at most `max` (more is an error, never a
/// silently cut set).
pub async fn select_studies(
    archive: &Archive,
    who: &Principal,
    request: &ExportRequest,
    max: usize,
) -> Result<Vec<String>, ResearchError> {
    if !may_export(who) {
        return Err(ResearchError::Forbidden);
    }
    let mut conditions = Vec::new();
    if let Some(grant) = &request.grant {
        let granted = archive
            .index()
            .research_grant_studies(who, grant.clone())
            .await?
            .ok_or_else(|| ResearchError::NoSuchGrant(grant.clone()))?;
        if granted.is_empty() {
            return Ok(Vec::new());
        }
        if granted.len() > max {
            return Err(ResearchError::TooManyStudies(max));
        }
        conditions.push((tags::STUDY_INSTANCE_UID, granted.join("\\")));
    } else {
        conditions.push((tags::STUDY_INSTANCE_UID, String::new()));
    }
    if let Some(modality) = request.modality.as_deref().filter(|m| !m.is_empty()) {
        if modality.len() > 16 || !modality.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ResearchError::BadRequest(
                "modality is not a DICOM modality".into(),
            ));
        }
        conditions.push((tags::MODALITIES_IN_STUDY, modality.to_uppercase()));
    }
    let (from, to) = (da(&request.from, "from")?, da(&request.to, "to")?);
    if !from.is_empty() || !to.is_empty() {
        conditions.push((tags::STUDY_DATE, format!("{from}-{to}")));
    }
    let query = AttributeQuery {
        level: QueryLevel::Study,
        conditions,
        limit: Some(max as u64 + 1),
        offset: 0,
        fuzzy_person_names: false,
    };
    // Retrieve: what the caller may take the images of (for a researcher, research grants).
    let found = archive
        .index()
        .query_as(who, Action::Retrieve, move |scope| scope.find(&query))
        .await?
        .map_err(|e| ResearchError::BadRequest(e.to_string()))?;
    if found.len() > max {
        return Err(ResearchError::TooManyStudies(max));
    }
    Ok(found
        .into_iter()
        .filter_map(|m| m.values.get(&tags::STUDY_INSTANCE_UID).cloned())
        .collect())
}

/// The thresholds of each (model, label), for `labels.csv`.
pub type Thresholds = HashMap<(String, String), f32>;

/// Doctors' feedback on one finding for `labels.csv`: how many current verdicts agree and
/// disagree. Their comments are free text, which no profile can clean of names (PS3.15 E.3.1
/// removes such text), so they never enter a de-identified set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackColumns {
    /// Reviewers whose current verdict agrees with the finding.
    pub agree: u64,
    /// Reviewers whose current verdict disagrees.
    pub disagree: u64,
}

/// The current verdicts on `finding` of `study` as `who` may read them (none when the index
/// cannot say: a finding without feedback and one whose feedback could not be read look alike
/// to `tramy eval`, which leaves both out).
pub async fn finding_feedback(
    archive: &Archive,
    who: &Principal,
    study: &str,
    finding: &Finding,
) -> FeedbackColumns {
    let verdicts = match archive
        .index()
        .finding_feedback(who, study, Some(finding.id))
        .await
    {
        Ok(Some(verdicts)) => verdicts,
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "feedback for a research export could not be read");
            Vec::new()
        }
    };
    let agree = verdicts
        .iter()
        .filter(|f| f.verdict == crate::store::feedback::Verdict::Agree)
        .count() as u64;
    FeedbackColumns {
        agree,
        disagree: verdicts.len() as u64 - agree,
    }
}

/// `labels.csv`'s columns; `path` (the instance's file in the set), `label`, `flagged` and the
/// feedback counts are what `tramy eval --labels-from feedback` reads.
const LABELS_HEADER: &str = "path,research_subject_id,study_instance_uid,series_instance_uid,\
sop_instance_uid,modality,age_group,sex,model,model_version,label,probability,threshold,flagged,\
feedback_agree,feedback_disagree\n";

/// A CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// The age band of labels.csv: ten-year bands, 90 and over together (as HIPAA's safe harbour
/// groups the oldest), empty when unknown.
fn age_group(obj: &InMemDicomObject) -> String {
    match Age::of_instance(obj).map(|a| a.completed_years()) {
        None => String::new(),
        Some(y) if y >= 90 => "90+".into(),
        Some(y) => format!("{}-{}", y / 10 * 10, y / 10 * 10 + 9),
    }
}

fn value(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// One instance, de-identified: its path in the set, its bytes, and what labels.csv says of it.
struct Written {
    path: String,
    part10: Vec<u8>,
    row: [String; 8],
}

/// Parses, screens and de-identifies one stored object (CPU work: on a blocking thread).
fn deidentify_object(part10: &[u8], keys: &Pseudonyms) -> Result<Written, Exclusion> {
    let file = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(Cursor::new(part10))
        .map_err(|_| Exclusion::Unreadable)?;
    let ts = file.meta().transfer_syntax().to_string();
    let original: &InMemDicomObject = &file;
    if let Some(reason) = deidentify::screen(original) {
        return Err(reason);
    }
    let subject = Subject::of(original, keys);
    let mut clean = deidentify::deidentify(original, &subject, keys);
    deidentify::mark_deidentified(&mut clean);
    let uid = |tag| value(&clean, tag);
    let (study, series, sop) = (
        uid(tags::STUDY_INSTANCE_UID),
        uid(tags::SERIES_INSTANCE_UID),
        uid(tags::SOP_INSTANCE_UID),
    );
    let sex = match value(original, tags::PATIENT_SEX).as_str() {
        s @ ("M" | "F" | "O") => s.to_string(),
        _ => String::new(),
    };
    let path = format!("DICOM/{}/{study}/{series}/{sop}.dcm", subject.id);
    let row = [
        path.clone(),
        subject.id.clone(),
        study.clone(),
        series.clone(),
        sop.clone(),
        value(original, tags::MODALITY),
        age_group(original),
        sex,
    ];
    // The stored transfer syntax is kept: the data set is written in it, pixel data as it was.
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(ts)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    let out = clean.with_meta(meta).map_err(|_| Exclusion::Unreadable)?;
    let mut part10 = Vec::with_capacity(part10.len());
    out.write_all(&mut part10)
        .map_err(|_| Exclusion::Unreadable)?;
    Ok(Written { path, part10, row })
}

/// The findings of the instance `sop`, or none.
fn findings_of<'a>(findings: &'a [Finding], sop: &'a str) -> impl Iterator<Item = &'a Finding> {
    findings.iter().filter(move |f| f.sop_instance_uid == sop)
}

/// Writes the set of `studies` to `writer` and records a `ResearchExport` audit event with
/// its counts (no patient data). Objects are read through [`Archive::read_instance`] one at a
/// time.
pub async fn export_set<W: SetWriter>(
    archive: &Archive,
    who: &Principal,
    studies: &[String],
    grant: Option<&str>,
    keys: &Pseudonyms,
    thresholds: &Thresholds,
    writer: &mut W,
) -> Result<ExportSummary, ResearchError> {
    if !may_export(who) {
        return Err(ResearchError::Forbidden);
    }
    let mut summary = ExportSummary {
        studies: studies.len(),
        ..Default::default()
    };
    // About 200 bytes a row: a 100,000-instance set's labels are ~20 MB.
    let mut labels = String::from(LABELS_HEADER);
    for study in studies {
        let query = AttributeQuery {
            level: QueryLevel::Study,
            conditions: vec![(tags::STUDY_INSTANCE_UID, study.clone())],
            limit: None,
            offset: 0,
            fuzzy_person_names: false,
        };
        let instances = archive
            .index()
            .instances(who, query)
            .await?
            .map_err(|e| ResearchError::BadRequest(e.to_string()))?;
        let findings = archive
            .index()
            .findings_for_study(who, study)
            .await?
            .unwrap_or_default();
        for instance in instances {
            let written = match archive.read_instance(&instance).await {
                Ok(bytes) => {
                    let keys = keys.clone();
                    tokio::task::spawn_blocking(move || deidentify_object(&bytes, &keys))
                        .await
                        .unwrap_or(Err(Exclusion::Unreadable))
                }
                Err(_) => Err(Exclusion::Unreadable),
            };
            let written = match written {
                Ok(w) => w,
                Err(reason) => {
                    *summary.excluded.entry(reason).or_default() += 1;
                    continue;
                }
            };
            add_label_rows(
                &mut labels,
                &written.row,
                findings_of(&findings, &instance.sop_instance_uid),
                thresholds,
                archive,
                who,
                study,
            )
            .await;
            writer.add(&written.path, written.part10).await?;
            summary.instances += 1;
        }
    }
    writer.add("labels.csv", labels.into_bytes()).await?;
    let manifest = manifest(&summary, grant);
    let manifest_json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ResearchError::Write(e.to_string()))?;
    writer.add("manifest.json", manifest_json).await?;
    writer
        .add("README.txt", readme(&summary).into_bytes())
        .await?;
    audit(archive, who, &summary).await;
    Ok(summary)
}

async fn add_label_rows<'a>(
    labels: &mut String,
    row: &[String; 8],
    findings: impl Iterator<Item = &'a Finding>,
    thresholds: &Thresholds,
    archive: &Archive,
    who: &Principal,
    study: &str,
) {
    let head = row.iter().map(|f| csv(f)).collect::<Vec<_>>().join(",");
    let mut any = false;
    for f in findings {
        any = true;
        let threshold = thresholds
            .get(&(f.model.clone(), f.label.clone()))
            .map(|t| t.to_string())
            .unwrap_or_default();
        let feedback = finding_feedback(archive, who, study, f).await;
        labels.push_str(&format!(
            "{head},{},{},{},{},{threshold},{},{},{}\n",
            csv(&f.model),
            csv(&f.model_version),
            csv(&f.label),
            f.probability,
            f.flagged,
            feedback.agree,
            feedback.disagree,
        ));
    }
    if !any {
        labels.push_str(&format!("{head},,,,,,,,\n"));
    }
}

fn manifest(summary: &ExportSummary, grant: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
        "options": ["Retain Longitudinal Temporal Information with Modified Dates Option"],
        "options_not_applied": {
            "Clean Pixel Data Option": "pixel data is never altered; instances that may show burned-in text or a face are left out instead",
        },
        "deidentification_method": METHOD,
        "deidentification_method_codes": METHOD_CODES.iter().map(|(code, meaning)| {
            serde_json::json!({ "code": code, "scheme": "DCM", "meaning": meaning })
        }).collect::<Vec<_>>(),
        "grant": grant,
        "studies": summary.studies,
        "instances": summary.instances,
        "excluded": summary.excluded,
        "excluded_total": summary.excluded_total(),
        "layout": {
            "DICOM/<subject>/<study>/<series>/<instance>.dcm": "the de-identified instances, Part 10, in their stored transfer syntax",
            "labels.csv": "one row per instance and finding (an instance without findings: one row, finding columns empty)",
        },
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "tramy_version": env!("CARGO_PKG_VERSION"),
    })
}

fn readme(summary: &ExportSummary) -> String {
    let mut text = format!(
        "De-identified research set made by tramy {}.\n\n\
         Profile: DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, with the\n\
         Retain Longitudinal Temporal Information with Modified Dates Option: each subject's dates\n\
         move back by a number of whole days of its own (365 to 3,649), so intervals are kept.\n\
         The Clean Pixel Data Option is NOT applied: pixel data is unchanged, and instances that\n\
         may show burned-in text or a face are left out.\n\n\
         Studies: {}\nInstances: {}\nLeft out: {}\n",
        env!("CARGO_PKG_VERSION"),
        summary.studies,
        summary.instances,
        summary.excluded_total()
    );
    for reason in Exclusion::ALL {
        if let Some(n) = summary.excluded.get(&reason) {
            text.push_str(&format!("  {n}: {}\n", reason.explain()));
        }
    }
    text.push_str(
        "\nFiles: DICOM/<research subject>/<study>/<series>/<instance>.dcm; labels.csv (findings,\n\
         with doctors' feedback where recorded); manifest.json (the same, for programs).\n",
    );
    text
}

async fn audit(archive: &Archive, who: &Principal, summary: &ExportSummary) {
    let event = NewAuditEvent {
        actor: who.clone(),
        action: AuditAction::ResearchExport,
        outcome: AuditOutcome::Success,
        study_instance_uid: None,
        patient: None,
        detail: format!(
            "research export: {} studies, {} instances, {} left out",
            summary.studies,
            summary.instances,
            summary.excluded_total()
        ),
    };
    if let Err(e) = archive.index().record_audit(event).await {
        tracing::warn!("research export not audited: {e}");
    }
}

/// A [`Write`] into a buffer the ZIP stream drains after each file.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A set written as a ZIP (stored entries, data descriptors: no seeking) into a bounded channel
/// of chunks, one file's worth at a time, so a slow client slows the export instead of the
/// server holding the set.
pub struct ZipStream {
    zip: zip::ZipWriter<zip::write::StreamWriter<Shared>>,
    buffer: Shared,
    chunks: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl ZipStream {
    /// A writer sending its chunks to `chunks`.
    pub fn new(chunks: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> ZipStream {
        let buffer = Shared::default();
        ZipStream {
            zip: zip::ZipWriter::new_stream(buffer.clone()),
            buffer,
            chunks,
        }
    }

    async fn drain(&mut self) -> Result<(), ResearchError> {
        let chunk = match self.buffer.0.lock() {
            Ok(mut held) => std::mem::take(&mut *held),
            Err(_) => return Err(ResearchError::Write("poisoned buffer".into())),
        };
        if chunk.is_empty() {
            return Ok(());
        }
        self.chunks
            .send(Ok(Bytes::from(chunk)))
            .await
            .map_err(|_| ResearchError::Write("the client went away".into()))
    }

    /// Writes the central directory and sends the rest.
    pub async fn finish(mut self) -> Result<(), ResearchError> {
        let zip = std::mem::replace(&mut self.zip, zip::ZipWriter::new_stream(Shared::default()));
        zip.finish()
            .map_err(|e| ResearchError::Write(e.to_string()))?;
        self.drain().await
    }
}

impl SetWriter for ZipStream {
    async fn add(&mut self, name: &str, data: Vec<u8>) -> Result<(), ResearchError> {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(data.len() as u64 >= u64::from(u32::MAX));
        let failed = |e: &dyn std::fmt::Display| ResearchError::Write(e.to_string());
        self.zip.start_file(name, options).map_err(|e| failed(&e))?;
        self.zip.write_all(&data).map_err(|e| failed(&e))?;
        self.drain().await
    }
}

/// A set written as files under a folder (`tramy research export --out DIR`).
pub struct DirWriter {
    root: std::path::PathBuf,
}

impl DirWriter {
    /// Writes under `root` (made when missing).
    pub fn new(root: impl Into<std::path::PathBuf>) -> DirWriter {
        DirWriter { root: root.into() }
    }
}

impl SetWriter for DirWriter {
    async fn add(&mut self, name: &str, data: Vec<u8>) -> Result<(), ResearchError> {
        let path = self.root.join(name);
        let failed = |e: std::io::Error| ResearchError::Write(e.to_string());
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(failed)?;
        }
        tokio::fs::write(&path, data).await.map_err(failed)
    }
}
