//! AI triage: ONNX models described by manifests in `models/<name>/model.toml`, run in process
//! through ONNX Runtime (`ort`, loaded dynamically), on CPU or CUDA.
//!
//! What is here: the runtime ([`runtime`]), manifests ([`manifest`]), preprocessing of stored
//! DICOM into model input ([`preprocess`]) and loaded models ([`model`]), driven by
//! `tramy models list | check | run`. Triage on arrival (the job queue), findings, DICOM SR and
//! `tramy eval` build on these.
//!
//! No model here is clinically validated; every manifest says so.

pub mod clip;
pub mod eval;
pub mod field_of_view;
pub mod gate;
pub mod heatmap;
pub mod intended_use;
pub mod manifest;
pub mod model;
pub mod preprocess;
pub mod queue;
pub mod runtime;
pub mod sr;

pub use manifest::{ManifestError, ModelManifest};
pub use model::{LoadedModel, ModelError, Scores};
pub use runtime::{Device, RuntimeError};
