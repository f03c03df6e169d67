//! `tramy eval`: how good and how fast models are on a labelled data set, for researchers.
//!
//! Data: a folder with one sub-folder per class (files in the folder named like a label, case
//! ignored, are positives for it; all others negatives), or a CSV `path,label1,label2,…` of 0/1
//! values with a header naming the labels. Files: DICOM, PNG or JPEG.
//!
//! A CSV may also carry breakdown columns `facility`, `modality`, `sex`, `age` (years or an Age
//! String) and `age_group`; they are not labels and override what the DICOM header says. With
//! `--labels-from feedback` the CSV is a research export's feedback `labels.csv` ([`feedback`]).
//!
//! Per model and label: AUC with a 95% confidence interval (Hanley & McNeil, 1982), sensitivity
//! and specificity at the manifest's threshold, the confusion matrix, Brier score, a 10-bin
//! reliability diagram and expected calibration error ([`stats`]), and the same figures per
//! facility, modality, sex and age group ([`strata`]); per model: latency p50/p95 of
//! preprocessing plus inference for one image, and throughput. Between models, per label:
//! DeLong's test of the two AUCs on the files both scored ([`compare`]).

pub mod feedback;
pub mod stats;
pub mod strata;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::model::LoadedModel;
use super::preprocess;

/// A labelled example: a file and, per label name (lower case), whether it is positive.
#[derive(Debug, Clone)]
pub struct Example {
    /// The file.
    pub path: PathBuf,
    /// Truth per label.
    pub truth: BTreeMap<String, bool>,
    /// Breakdown attributes ([`strata::DIMENSIONS`]): the labels file's, else the header's.
    pub attributes: BTreeMap<String, String>,
}

/// Where the truth comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelsFrom {
    /// A folder per class or a CSV of 0/1 columns ([`load_dataset`]).
    #[default]
    Data,
    /// Doctors' agree/disagree feedback on findings ([`feedback::load`]).
    Feedback,
}

/// CSV columns that describe the case, not a label.
const ATTRIBUTE_COLUMNS: [&str; 5] = ["facility", "modality", "sex", "age", "age_group"];

/// Copies the breakdown columns of a CSV row into `attributes` (an `age` becomes its group).
pub(crate) fn attributes_from_row(
    header: &[String],
    cells: &[&str],
    attributes: &mut BTreeMap<String, String>,
) {
    for (h, v) in header.iter().zip(cells) {
        if v.is_empty() || !ATTRIBUTE_COLUMNS.contains(&h.as_str()) {
            continue;
        }
        let (key, value) = match h.as_str() {
            "age" => match strata::age_group_of_text(v) {
                Some(group) => ("age_group", group.to_string()),
                None => continue,
            },
            "sex" => ("sex", v.to_uppercase()),
            other => (other, v.to_string()),
        };
        attributes.insert(key.to_string(), value);
    }
}

/// Fills each example's missing breakdown attributes from its DICOM header.
fn add_header_attributes(examples: &mut [Example]) {
    for example in examples {
        for (key, value) in strata::from_dicom(&example.path) {
            example.attributes.entry(key).or_insert(value);
        }
    }
}

/// Reads a data set from `path` with truth from `from`; with feedback, also how many rows gave
/// labels and how many were excluded.
pub fn load(
    path: &Path,
    labels: &[String],
    from: LabelsFrom,
) -> Result<(Vec<Example>, Option<feedback::FeedbackCounts>), EvalError> {
    let (mut examples, counts) = match from {
        LabelsFrom::Data => (load_dataset(path, labels)?, None),
        LabelsFrom::Feedback => {
            let (examples, counts) = feedback::load(path)?;
            (examples, Some(counts))
        }
    };
    if examples.is_empty() {
        return Err(EvalError::Data {
            path: path.to_owned(),
            reason: "no labelled examples".into(),
        });
    }
    add_header_attributes(&mut examples);
    Ok((examples, counts))
}

/// Why a data set cannot be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The data set is unreadable or malformed.
    #[error("data set {path}: {reason}")]
    Data {
        /// Folder or CSV.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be scored.
    #[error("{path}: {reason}")]
    Example {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Reads a data set (folder per class, or CSV).
pub fn load_dataset(path: &Path, labels: &[String]) -> Result<Vec<Example>, EvalError> {
    let bad = |reason: String| EvalError::Data {
        path: path.to_owned(),
        reason,
    };
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        // A spreadsheet's UTF-8 byte order mark would otherwise hide the first column's name.
        let mut lines = text
            .trim_start_matches('\u{feff}')
            .lines()
            .filter(|l| !l.trim().is_empty());
        let header: Vec<String> = lines
            .next()
            .ok_or_else(|| bad("the CSV is empty".into()))?
            .split(',')
            .map(|h| h.trim().to_lowercase())
            .collect();
        let base = path.parent().unwrap_or(Path::new("."));
        return lines
            .enumerate()
            .map(|(n, line)| {
                let cells: Vec<&str> = line.split(',').map(str::trim).collect();
                if cells.len() != header.len() {
                    return Err(bad(format!(
                        "line {} has {} cells, the header {}",
                        n + 2,
                        cells.len(),
                        header.len()
                    )));
                }
                let mut attributes = BTreeMap::new();
                attributes_from_row(&header, &cells, &mut attributes);
                let truth = header[1..]
                    .iter()
                    .zip(&cells[1..])
                    .filter(|(h, _)| !ATTRIBUTE_COLUMNS.contains(&h.as_str()))
                    .map(|(h, v)| match *v {
                        "1" => Ok((h.clone(), true)),
                        "0" => Ok((h.clone(), false)),
                        other => Err(bad(format!("line {}: {other:?} is not 0 or 1", n + 2))),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Example {
                    path: base.join(cells[0]),
                    truth,
                    attributes,
                })
            })
            .collect();
    }
    let mut examples = Vec::new();
    let classes = std::fs::read_dir(path).map_err(|e| bad(e.to_string()))?;
    for class in classes.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
        let class_name = class.file_name().to_string_lossy().to_lowercase();
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(class.path())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        files.sort();
        for file in files {
            let truth = labels
                .iter()
                .map(|l| (l.to_lowercase(), l.to_lowercase() == class_name))
                .collect();
            examples.push(Example {
                path: file,
                truth,
                attributes: BTreeMap::new(),
            });
        }
    }
    if examples.is_empty() {
        return Err(bad(
            "no files: expect one sub-folder per class, or a CSV".into()
        ));
    }
    examples.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(examples)
}

/// Scores one file with one model: probabilities per label and the seconds it took.
pub fn score(model: &LoadedModel, path: &Path) -> Result<(BTreeMap<String, f32>, f64), EvalError> {
    let fail = |reason: String| EvalError::Example {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let start = Instant::now();
    let input = if bytes.len() > 132 && &bytes[128..132] == b"DICM" {
        preprocess::from_dicom(&bytes, &model.manifest)
            .map_err(|e| fail(e.to_string()))?
            .0
    } else {
        let image = image::load_from_memory(&bytes)
            .map_err(|e| fail(format!("neither DICOM nor a readable image: {e}")))?;
        preprocess::from_images(&[image], &model.manifest)
    };
    let scores = model.infer(&input).map_err(|e| fail(e.to_string()))?;
    let seconds = start.elapsed().as_secs_f64();
    let first = scores.into_iter().next().unwrap_or_default();
    Ok((
        first
            .into_iter()
            .map(|s| (s.label.to_lowercase(), s.probability))
            .collect(),
        seconds,
    ))
}

/// Area under the ROC curve (probability a positive outranks a negative; ties count half), by
/// midranks in O(n log n) ([`stats::auc`]); `None` when a class is missing.
pub fn auc(scores: &[(f32, bool)]) -> Option<f64> {
    let class = |truth: bool| -> Vec<f64> {
        scores
            .iter()
            .filter(|s| s.1 == truth)
            .map(|s| f64::from(s.0))
            .collect()
    };
    let (positives, negatives) = (class(true), class(false));
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    Some(stats::auc(&positives, &negatives))
}

/// 95% confidence interval of an AUC (Hanley & McNeil 1982 standard error), clamped to [0, 1].
pub fn auc_ci(auc: f64, positives: usize, negatives: usize) -> (f64, f64) {
    let q1 = auc / (2.0 - auc);
    let q2 = 2.0 * auc * auc / (1.0 + auc);
    let (n1, n2) = (positives as f64, negatives as f64);
    let variance =
        (auc * (1.0 - auc) + (n1 - 1.0) * (q1 - auc * auc) + (n2 - 1.0) * (q2 - auc * auc))
            / (n1 * n2);
    let se = variance.max(0.0).sqrt();
    ((auc - 1.96 * se).max(0.0), (auc + 1.96 * se).min(1.0))
}

/// ROC points (false positive rate, true positive rate), from the strictest threshold down.
pub fn roc(scores: &[(f32, bool)]) -> Vec<(f64, f64)> {
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let p = scores.iter().filter(|s| s.1).count().max(1) as f64;
    let n = scores.iter().filter(|s| !s.1).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut points = vec![(0.0, 0.0)];
    for (i, (score, positive)) in sorted.iter().enumerate() {
        if *positive {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        if sorted.get(i + 1).is_none_or(|next| next.0 != *score) {
            points.push((fp / n, tp / p));
        }
    }
    points
}

/// Results for one label of one model.
#[derive(Debug, Clone, Serialize)]
pub struct LabelReport {
    /// Label.
    pub label: String,
    /// Positives and negatives in the data.
    pub positives: usize,
    /// Negatives in the data.
    pub negatives: usize,
    /// AUC (absent when one class is missing).
    pub auc: Option<f64>,
    /// 95% confidence interval of the AUC.
    pub auc_ci95: Option<(f64, f64)>,
    /// Threshold from the manifest.
    pub threshold: f32,
    /// Sensitivity at the threshold.
    pub sensitivity: Option<f64>,
    /// Specificity at the threshold.
    pub specificity: Option<f64>,
    /// True positives, false positives, true negatives, false negatives.
    pub confusion: [usize; 4],
    /// ROC curve points.
    pub roc: Vec<(f64, f64)>,
    /// Brier score (mean squared error of the probability).
    pub brier: Option<f64>,
    /// Expected calibration error over [`LabelReport::reliability`].
    pub ece: Option<f64>,
    /// Reliability diagram: 10 equal-width bins of predicted probability.
    pub reliability: Vec<stats::Bin>,
    /// The same figures per facility, modality, sex and age group.
    pub strata: Vec<strata::Stratum>,
}

/// DeLong's test between this report's model and a later one, for one label.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Label.
    pub label: String,
    /// The other model's name.
    pub against: String,
    /// The other model's position in the report (0-based).
    pub against_index: usize,
    /// Files both models scored that have a truth for the label.
    pub examples: usize,
    /// The test; absent with fewer than two positives or two negatives.
    pub delong: Option<stats::DeLong>,
}

/// One file's scores, for researchers who want per-case outputs.
#[derive(Debug, Clone, Serialize)]
pub struct ExampleScores {
    /// The file.
    pub path: PathBuf,
    /// Probability per label name (lower case).
    pub probabilities: BTreeMap<String, f32>,
    /// Truth per label name, as the data set says.
    pub truth: BTreeMap<String, bool>,
    /// Breakdown attributes.
    pub attributes: BTreeMap<String, String>,
}

/// Results for one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Device it ran on.
    pub device: String,
    /// The model's use statement.
    pub statement: String,
    /// Files scored.
    pub examples: usize,
    /// Per label.
    pub labels: Vec<LabelReport>,
    /// Median seconds for one image (preprocessing and inference).
    pub latency_p50_ms: f64,
    /// 95th percentile.
    pub latency_p95_ms: f64,
    /// Images per second, one at a time.
    pub throughput_per_s: f64,
    /// Every file's scores, in data set order.
    pub scores: Vec<ExampleScores>,
    /// DeLong's tests against each model listed after this one ([`compare`]).
    pub comparisons: Vec<Comparison>,
    /// With labels from feedback: rows that gave labels and rows excluded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<feedback::FeedbackCounts>,
}

/// Evaluates `model` on `examples`, calling `progress` after each file; breakdown strata with
/// fewer than `min_stratum` positives or negatives get no figures.
pub fn evaluate(
    model: &LoadedModel,
    device: &str,
    examples: &[Example],
    min_stratum: usize,
    mut progress: impl FnMut(),
) -> Result<ModelReport, EvalError> {
    let mut per_label: BTreeMap<String, Vec<strata::Case<'_>>> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(examples.len());
    let mut per_example = Vec::with_capacity(examples.len());
    let started = Instant::now();
    for example in examples {
        let (scores, seconds) = score(model, &example.path)?;
        latencies.push(seconds * 1000.0);
        for label in &model.manifest.labels {
            let key = label.name.to_lowercase();
            if let (Some(p), Some(t)) = (scores.get(&key), example.truth.get(&key)) {
                per_label
                    .entry(key)
                    .or_default()
                    .push((*p, *t, &example.attributes));
            }
        }
        per_example.push(ExampleScores {
            path: example.path.clone(),
            probabilities: scores,
            truth: example.truth.clone(),
            attributes: example.attributes.clone(),
        });
        progress();
    }
    let total = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let percentile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let labels = model
        .manifest
        .labels
        .iter()
        .filter_map(|label| {
            let cases = per_label.get(&label.name.to_lowercase())?;
            let scores: Vec<(f32, bool)> = cases.iter().map(|c| (c.0, c.1)).collect();
            let as_f64: Vec<(f64, bool)> = scores.iter().map(|s| (f64::from(s.0), s.1)).collect();
            let reliability = stats::reliability(&as_f64, 10);
            let positives = scores.iter().filter(|s| s.1).count();
            let negatives = scores.len() - positives;
            let a = auc(&scores);
            let tp = scores
                .iter()
                .filter(|s| s.1 && s.0 >= label.threshold)
                .count();
            let fp = scores
                .iter()
                .filter(|s| !s.1 && s.0 >= label.threshold)
                .count();
            let (fn_, tn) = (positives - tp, negatives - fp);
            Some(LabelReport {
                label: label.name.clone(),
                positives,
                negatives,
                auc: a,
                auc_ci95: a.map(|a| auc_ci(a, positives, negatives)),
                threshold: label.threshold,
                sensitivity: (positives > 0).then(|| tp as f64 / positives as f64),
                specificity: (negatives > 0).then(|| tn as f64 / negatives as f64),
                confusion: [tp, fp, tn, fn_],
                roc: roc(&scores),
                brier: stats::brier(&as_f64),
                ece: stats::expected_calibration_error(&reliability),
                reliability,
                strata: strata::breakdown(cases, label.threshold, min_stratum),
            })
        })
        .collect();
    Ok(ModelReport {
        model: model.manifest.name.clone(),
        version: model.manifest.version.clone(),
        device: device.to_string(),
        statement: model.manifest.provenance.statement.clone(),
        examples: examples.len(),
        labels,
        latency_p50_ms: percentile(0.5),
        latency_p95_ms: percentile(0.95),
        throughput_per_s: if total > 0.0 {
            examples.len() as f64 / total
        } else {
            0.0
        },
        scores: per_example,
        comparisons: Vec::new(),
        feedback: None,
    })
}

/// Fills each report's [`ModelReport::comparisons`]: for every later model and every label both
/// have, DeLong's test on the files both scored (matched by path) that have a truth.
pub fn compare(reports: &mut [ModelReport]) {
    for i in 0..reports.len() {
        let mut found = Vec::new();
        for (j, other) in reports.iter().enumerate().skip(i + 1) {
            let theirs: BTreeMap<&Path, &ExampleScores> =
                other.scores.iter().map(|s| (s.path.as_path(), s)).collect();
            for label in &reports[i].labels {
                if !other.labels.iter().any(|l| l.label == label.label) {
                    continue;
                }
                let key = label.label.to_lowercase();
                let cases: Vec<(f64, f64, bool)> = reports[i]
                    .scores
                    .iter()
                    .filter_map(|mine| {
                        let other = theirs.get(mine.path.as_path())?;
                        Some((
                            f64::from(*mine.probabilities.get(&key)?),
                            f64::from(*other.probabilities.get(&key)?),
                            *mine.truth.get(&key)?,
                        ))
                    })
                    .collect();
                found.push(Comparison {
                    label: label.label.clone(),
                    against: other.model.clone(),
                    against_index: j,
                    examples: cases.len(),
                    delong: stats::delong(&cases),
                });
            }
        }
        reports[i].comparisons = found;
    }
}

/// Draws the ROC curves of every model for `label` into a PNG (models in the order given, colours
/// listed in the table `tramy eval` prints), with the chance diagonal.
pub fn draw_roc(path: &Path, curves: &[(&str, &[(f64, f64)])]) -> Result<(), String> {
    use plotters::prelude::*;
    const COLOURS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let root = BitMapBackend::new(path, (480, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let area = root.margin(20, 20, 20, 20);
    let (w, h) = area.dim_in_pixel();
    let to_px = |(x, y): (f64, f64)| {
        (
            (x * f64::from(w - 1)) as i32,
            ((1.0 - y) * f64::from(h - 1)) as i32,
        )
    };
    area.draw(&Rectangle::new(
        [(0, 0), (w as i32 - 1, h as i32 - 1)],
        BLACK.stroke_width(1),
    ))
    .map_err(|e| e.to_string())?;
    area.draw(&PathElement::new(
        vec![to_px((0.0, 0.0)), to_px((1.0, 1.0))],
        RGBColor(180, 180, 180),
    ))
    .map_err(|e| e.to_string())?;
    for (i, (_, points)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        area.draw(&PathElement::new(
            points.iter().map(|p| to_px(*p)).collect::<Vec<_>>(),
            colour.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Draws the reliability diagrams of every model for one label into a PNG: per model, the mean
/// predicted probability (x) against the observed fraction of positives (y) of each non-empty bin,
/// joined by a line, a dot's area growing with the bin's count; the diagonal is perfect
/// calibration. Colours as in [`draw_roc`].
pub fn draw_reliability(path: &Path, models: &[(&str, &[stats::Bin])]) -> Result<(), String> {
    use plotters::prelude::*;
    const COLOURS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let root = BitMapBackend::new(path, (480, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let area = root.margin(20, 20, 20, 20);
    let (w, h) = area.dim_in_pixel();
    let to_px = |(x, y): (f64, f64)| {
        (
            (x * f64::from(w - 1)) as i32,
            ((1.0 - y) * f64::from(h - 1)) as i32,
        )
    };
    let frame = Rectangle::new(
        [(0, 0), (w as i32 - 1, h as i32 - 1)],
        BLACK.stroke_width(1),
    );
    area.draw(&frame).map_err(|e| e.to_string())?;
    let diagonal = PathElement::new(
        vec![to_px((0.0, 0.0)), to_px((1.0, 1.0))],
        RGBColor(180, 180, 180),
    );
    area.draw(&diagonal).map_err(|e| e.to_string())?;
    for (i, (_, bins)) in models.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<((f64, f64), usize)> = bins
            .iter()
            .filter_map(|b| Some(((b.mean_predicted?, b.observed?), b.count)))
            .collect();
        let line: Vec<(i32, i32)> = points.iter().map(|(p, _)| to_px(*p)).collect();
        area.draw(&PathElement::new(line, colour.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        for (p, count) in &points {
            let radius = 2 + (*count as f64).sqrt().min(10.0) as i32;
            area.draw(&Circle::new(to_px(*p), radius, colour.filled()))
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

/// The colour name of curve `i` in [`draw_roc`].
pub fn colour_name(i: usize) -> &'static str {
    ["blue", "red", "green", "magenta", "cyan", "black"][i % 6]
}
