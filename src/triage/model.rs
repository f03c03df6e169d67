//! A loaded model: its manifest and an ONNX Runtime session, scoring a batch of inputs.

use std::sync::Mutex;

use ndarray::{Array4, Axis};
use ort::session::Session;
use ort::value::TensorRef;
use serde::Serialize;

use super::manifest::{Activation, ModelManifest, Urgency};
use super::runtime::{environment, Device, RuntimeError};

/// Why a model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The runtime is not available.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The ONNX file does not load.
    #[error("{path}: {reason}")]
    Load {
        /// The file.
        path: String,
        /// What ONNX Runtime said.
        reason: String,
    },
    /// The manifest does not fit the graph (names, shapes).
    #[error("model {model}: {reason}")]
    Mismatch {
        /// Model name.
        model: String,
        /// What does not fit.
        reason: String,
    },
    /// Inference failed.
    #[error("model {model}: inference failed: {reason}")]
    Inference {
        /// Model name.
        model: String,
        /// What ONNX Runtime said.
        reason: String,
    },
}

/// One label's result for one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    /// Label name.
    pub label: String,
    /// Probability after the label's activation.
    pub probability: f32,
    /// At or above the threshold.
    pub flagged: bool,
    /// Urgency when flagged.
    pub urgency: Urgency,
}

/// The most inputs one inference run takes; larger batches are run in chunks.
pub const MAX_INFERENCE_BATCH: usize = 8;

/// Every label's result for one input.
pub type Scores = Vec<LabelScore>;

/// A model ready to run.
pub struct LoadedModel {
    /// Its manifest.
    pub manifest: ModelManifest,
    session: Mutex<Session>,
}

impl LoadedModel {
    /// Loads the manifest's ONNX file on `device` and checks that the names it declares exist.
    pub fn load(manifest: ModelManifest, device: Device) -> Result<LoadedModel, ModelError> {
        let env = environment(device)?;
        let path = manifest.model_path();
        let load_err = |e: ort::Error| {
            let mut reason = e.to_string();
            if device == Device::Cuda && reason.contains("CUDA") {
                reason.push_str(&format!(
                    " (the ONNX Runtime library {} cannot use CUDA: point ORT_DYLIB_PATH at the \
                     onnxruntime-gpu library, with its CUDA and cuDNN libraries on \
                     LD_LIBRARY_PATH; see the README's GPU section)",
                    super::runtime::library_path().display()
                ));
            }
            ModelError::Load {
                path: path.display().to_string(),
                reason,
            }
        };
        let session = Session::builder(env)
            .map_err(load_err)?
            .commit_from_file(&path)
            .map_err(load_err)?;
        let mismatch = |reason: String| ModelError::Mismatch {
            model: manifest.name.clone(),
            reason,
        };
        if !session
            .inputs()
            .iter()
            .any(|i| i.name() == manifest.input.name)
        {
            let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
            return Err(mismatch(format!(
                "input {:?} is not in the graph (it has {names:?})",
                manifest.input.name
            )));
        }
        let outputs = manifest
            .labels
            .iter()
            .map(|l| (format!("label {}", l.name), &l.output))
            .chain(
                manifest
                    .gate
                    .iter()
                    .map(|g| ("gate".to_string(), &g.output)),
            );
        for (what, output) in outputs {
            if !session.outputs().iter().any(|o| o.name() == *output) {
                let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
                return Err(mismatch(format!(
                    "{what}: output {output:?} is not in the graph (it has {names:?})"
                )));
            }
        }
        Ok(LoadedModel {
            manifest,
            session: Mutex::new(session),
        })
    }

    /// Scores a batch; one [`Scores`] per batch item. A large batch (a clip's sampled frames)
    /// runs in chunks of [`MAX_INFERENCE_BATCH`], so the runtime's working memory is bounded by
    /// that, not by the clip: 64 frames of 716×716 at once took 4.8 GB.
    pub fn infer(&self, batch: &Array4<f32>) -> Result<Vec<Scores>, ModelError> {
        let n = batch.len_of(Axis(0));
        if n <= MAX_INFERENCE_BATCH {
            return self.infer_batch(batch);
        }
        let mut all = Vec::with_capacity(n);
        for start in (0..n).step_by(MAX_INFERENCE_BATCH) {
            let end = (start + MAX_INFERENCE_BATCH).min(n);
            let chunk = batch.slice_axis(Axis(0), ndarray::Slice::from(start..end));
            all.extend(self.infer_batch(&chunk.to_owned())?);
        }
        Ok(all)
    }

    /// Runs the session on `batch` and hands its outputs to `read`, with the error maker.
    fn run<T>(
        &self,
        batch: &Array4<f32>,
        read: impl FnOnce(
            &ort::session::SessionOutputs<'_>,
            &dyn Fn(String) -> ModelError,
        ) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        let m = &self.manifest;
        let fail = |reason: String| ModelError::Inference {
            model: m.name.clone(),
            reason,
        };
        let mut session = self.session.lock().map_err(|e| fail(e.to_string()))?;
        let input = TensorRef::from_array_view(batch.view()).map_err(|e| fail(e.to_string()))?;
        let outputs = session
            .run(ort::inputs![m.input.name.as_str() => input])
            .map_err(|e| fail(e.to_string()))?;
        read(&outputs, &fail)
    }

    fn infer_batch(&self, batch: &Array4<f32>) -> Result<Vec<Scores>, ModelError> {
        self.run(batch, |outputs, fail| {
            self.scores(outputs, fail, batch.len_of(Axis(0)))
        })
    }

    /// Every label's score for each of the `n` batch items from the session's outputs.
    fn scores(
        &self,
        outputs: &ort::session::SessionOutputs<'_>,
        fail: &dyn Fn(String) -> ModelError,
        n: usize,
    ) -> Result<Vec<Scores>, ModelError> {
        let m = &self.manifest;
        let mut scores: Vec<Scores> = vec![Vec::new(); n];
        for label in &m.labels {
            let array = outputs[label.output.as_str()]
                .try_extract_array::<f32>()
                .map_err(|e| fail(format!("output {}: {e}", label.output)))?;
            let width = array.len() / n.max(1);
            let rows = array.into_shape_with_order((n, width)).map_err(|e| {
                fail(format!(
                    "output {} cannot be read as {n} rows: {e}",
                    label.output
                ))
            })?;
            for (item, row) in rows.outer_iter().enumerate() {
                let raw = *row.get(label.index).ok_or_else(|| {
                    fail(format!(
                        "label {}: index {} is outside output {} of width {}",
                        label.name,
                        label.index,
                        label.output,
                        row.len()
                    ))
                })?;
                let probability = match label.activation {
                    Activation::None => raw,
                    Activation::Sigmoid => 1.0 / (1.0 + (-raw).exp()),
                    Activation::Softmax => {
                        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
                        (raw - max).exp() / sum
                    }
                };
                scores[item].push(LabelScore {
                    label: label.name.clone(),
                    probability,
                    flagged: probability >= label.threshold,
                    urgency: label.urgency,
                });
            }
        }
        Ok(scores)
    }

    /// Runs the model on a batch and returns one output tensor whole (an anatomy gate's
    /// per-class scores).
    pub(crate) fn output(
        &self,
        batch: &Array4<f32>,
        output: &str,
    ) -> Result<ndarray::ArrayD<f32>, ModelError> {
        self.run(batch, |outputs, fail| {
            let array = outputs[output]
                .try_extract_array::<f32>()
                .map_err(|e| fail(format!("output {output}: {e}")))?;
            Ok(array.to_owned())
        })
    }

    /// The input of one mid-grey image, for smoke tests.
    pub(crate) fn grey_input(&self) -> Array4<f32> {
        let i = &self.manifest.input;
        let p = &self.manifest.preprocess;
        let grey = 128.0 * p.scale + p.offset;
        let shape = match i.layout {
            super::manifest::Layout::Nchw => {
                (1, i.channels as usize, i.height as usize, i.width as usize)
            }
            super::manifest::Layout::Nhwc => {
                (1, i.height as usize, i.width as usize, i.channels as usize)
            }
        };
        Array4::from_elem(shape, grey)
    }

    /// Runs the model once on a mid-grey input: the smoke test of `tramy models check`.
    /// An anatomy gate has no labels: its output is read whole, and the scores are empty.
    pub fn smoke_test(&self) -> Result<Scores, ModelError> {
        if self.manifest.task == super::manifest::Task::FieldOfView {
            let grey = image::RgbImage::from_pixel(854, 480, image::Rgb([128, 128, 128]));
            super::field_of_view::estimate(self, &[grey])?;
            return Ok(Vec::new());
        }
        let batch = self.grey_input();
        if let Some(gate) = &self.manifest.gate {
            self.output(&batch, &gate.output)?;
            return Ok(Vec::new());
        }
        let mut scores = self.infer(&batch)?;
        Ok(scores.remove(0))
    }
}
