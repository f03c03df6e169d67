//! `tramy eval`: how good and how fast models are on a labelled data set, for researchers.
//!
//! Data: a folder with one sub-folder per class (files in the folder named like a label, case
//! ignored, are positives for it; all others negatives), or a CSV `path,label1,label2,…` of 0/1
//! values with a header naming the labels. Files: DICOM, PNG or JPEG.
//!
//! Per model and label: AUC with a 95% confidence interval (Hanley & McNeil, 1982), sensitivity
//! and specificity at the manifest's threshold, the confusion matrix; per model: latency p50/p95
//! of preprocessing plus inference for one image, and throughput.

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
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
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
                let truth = header[1..]
                    .iter()
                    .zip(&cells[1..])
                    .map(|(h, v)| match *v {
                        "1" => Ok((h.clone(), true)),
                        "0" => Ok((h.clone(), false)),
                        other => Err(bad(format!("line {}: {other:?} is not 0 or 1", n + 2))),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Example {
                    path: base.join(cells[0]),
                    truth,
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
            examples.push(Example { path: file, truth });
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

/// Area under the ROC curve (probability a positive outranks a negative; ties count half).
pub fn auc(scores: &[(f32, bool)]) -> Option<f64> {
    let positives: Vec<f32> = scores.iter().filter(|s| s.1).map(|s| s.0).collect();
    let negatives: Vec<f32> = scores.iter().filter(|s| !s.1).map(|s| s.0).collect();
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in &positives {
        for n in &negatives {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (positives.len() * negatives.len()) as f64)
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
}

/// Evaluates `model` on `examples`, calling `progress` after each file.
pub fn evaluate(
    model: &LoadedModel,
    device: &str,
    examples: &[Example],
    mut progress: impl FnMut(),
) -> Result<ModelReport, EvalError> {
    let mut per_label: BTreeMap<String, Vec<(f32, bool)>> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(examples.len());
    let mut per_example = Vec::with_capacity(examples.len());
    let started = Instant::now();
    for example in examples {
        let (scores, seconds) = score(model, &example.path)?;
        latencies.push(seconds * 1000.0);
        for label in &model.manifest.labels {
            let key = label.name.to_lowercase();
            if let (Some(p), Some(t)) = (scores.get(&key), example.truth.get(&key)) {
                per_label.entry(key).or_default().push((*p, *t));
            }
        }
        per_example.push(ExampleScores {
            path: example.path.clone(),
            probabilities: scores,
            truth: example.truth.clone(),
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
            let scores = per_label.get(&label.name.to_lowercase())?;
            let positives = scores.iter().filter(|s| s.1).count();
            let negatives = scores.len() - positives;
            let a = auc(scores);
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
                roc: roc(scores),
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
    })
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

/// The colour name of curve `i` in [`draw_roc`].
pub fn colour_name(i: usize) -> &'static str {
    ["blue", "red", "green", "magenta", "cyan", "black"][i % 6]
}
