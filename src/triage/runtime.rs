//! The ONNX Runtime environment: one per process, loaded from a shared library so the binary
//! builds without it and a site can swap in a GPU build.
//!
//! Library lookup: `ORT_DYLIB_PATH`, else the copy the build fetched from the PyPI wheel
//! `onnxruntime` into `target/onnxruntime/`. CUDA is registered with `error_on_failure`, so a
//! broken GPU set-up is an error, never a silent fall-back to CPU.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use serde::{Deserialize, Serialize};

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// ONNX Runtime's CPU provider.
    #[default]
    Cpu,
    /// CUDA GPU 0 (needs the onnxruntime-gpu library and its CUDA packages).
    Cuda,
}

/// Why the runtime is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No library found.
    #[error("ONNX Runtime library not found at {0}: set ORT_DYLIB_PATH to libonnxruntime.so (the build fetches it from the PyPI wheel onnxruntime into target/onnxruntime/ when it can reach PyPI)")]
    LibraryMissing(PathBuf),
    /// The library did not load.
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load {
        /// The library.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// Environment creation or provider registration failed.
    #[error("cannot start ONNX Runtime on {device:?}: {reason}")]
    Start {
        /// Requested device.
        device: Device,
        /// What ONNX Runtime said.
        reason: String,
    },
    /// Asked for another device than the one the process already runs on.
    #[error("ONNX Runtime already runs on {0:?} in this process")]
    DeviceMismatch(Device),
}

/// The library this process loads.
pub fn library_path() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("TRAMY_BUNDLED_ONNXRUNTIME")))
}

static ENVIRONMENT: OnceLock<(Device, Environment)> = OnceLock::new();

/// The process's ONNX Runtime environment on `device`, started on first use.
pub fn environment(device: Device) -> Result<&'static Environment, RuntimeError> {
    if let Some((running, env)) = ENVIRONMENT.get() {
        return if *running == device {
            Ok(env)
        } else {
            Err(RuntimeError::DeviceMismatch(*running))
        };
    }
    let path = library_path();
    if !path.exists() {
        return Err(RuntimeError::LibraryMissing(path));
    }
    let builder = ort::init_from(&path).map_err(|e| RuntimeError::Load {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let builder = match device {
        Device::Cpu => builder,
        Device::Cuda => {
            builder.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
        }
    };
    let env = builder
        .with_name("tramy")
        .build()
        .map_err(|e| RuntimeError::Start {
            device,
            reason: e.to_string(),
        })?;
    // Two threads racing here both built an environment; ort allows one, so the loser errs above.
    let _ = ENVIRONMENT.set((device, env));
    ENVIRONMENT
        .get()
        .map(|(_, env)| env)
        .ok_or(RuntimeError::DeviceMismatch(device))
}
