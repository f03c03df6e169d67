//! Fetches the ONNX Runtime shared library that AI triage loads at run time (`ort` with
//! `load-dynamic`), from the PyPI wheel `onnxruntime`, into `target/onnxruntime/`. Nothing here
//! can fail the build: without Python, pip or network the library is simply absent, and triage
//! reports so when it is enabled (or `ORT_DYLIB_PATH` points at another copy).

use std::path::{Path, PathBuf};
use std::process::Command;

const ONNXRUNTIME_VERSION: &str = "1.31.1";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TRAMY_SKIP_ONNXRUNTIME_FETCH");
    let Some(target_dir) = target_dir() else {
        return;
    };
    let dir = target_dir.join("onnxruntime");
    let lib = dir.join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"));
    println!(
        "cargo:rustc-env=TRAMY_BUNDLED_ONNXRUNTIME={}",
        lib.display()
    );
    if lib.exists() || std::env::var_os("TRAMY_SKIP_ONNXRUNTIME_FETCH").is_some() {
        return;
    }
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        println!("cargo:warning=fetch ONNX Runtime yourself and set ORT_DYLIB_PATH (only linux x86_64 is fetched automatically)");
        return;
    }
    if let Err(e) = fetch(&dir, &lib) {
        println!("cargo:warning=ONNX Runtime {ONNXRUNTIME_VERSION} was not fetched ({e}); AI triage needs it: set ORT_DYLIB_PATH or rebuild with network access to PyPI");
    }
}

/// `target/` from `target/<profile>/build/<pkg>/out`.
fn target_dir() -> Option<PathBuf> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
    out.ancestors().nth(4).map(Path::to_path_buf)
}

fn fetch(dir: &Path, lib: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let download = dir.join("wheel");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .arg(format!("onnxruntime=={ONNXRUNTIME_VERSION}"))
        .arg("-d")
        .arg(&download)
        .status()
        .map_err(|e| format!("python3 -m pip: {e}"))?;
    if !status.success() {
        return Err("pip download failed".into());
    }
    let script = format!(
        "import glob, sys, zipfile\n\
         wheel = glob.glob(sys.argv[1] + '/onnxruntime-{v}-*.whl')[0]\n\
         with zipfile.ZipFile(wheel) as z, open(sys.argv[2], 'wb') as f:\n    \
             f.write(z.read('onnxruntime/capi/libonnxruntime.so.{v}'))\n",
        v = ONNXRUNTIME_VERSION
    );
    let partial = lib.with_extension("partial");
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&download)
        .arg(&partial)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("extracting libonnxruntime from the wheel failed".into());
    }
    std::fs::rename(&partial, lib).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&download);
    Ok(())
}
