//! Set-up that needs the network, done as part of `cargo build` so that the README's two
//! commands are all a fresh machine needs:
//!
//! 1. the ONNX Runtime shared library that AI triage loads at run time (`ort` with
//!    `load-dynamic`), from the PyPI wheel `onnxruntime`, into `target/onnxruntime/`;
//! 2. the chest X-ray pneumonia model, converted from PyPI `pneumonia-model-package` by
//!    `models/chest-xray-pneumonia/convert.py` (its weights carry no licence, so they are never
//!    committed), plus its 16 labelled images in `dicom-samples/fetched/kermany-val/`;
//! 3. the chest X-ray lung-segmentation U-Net, converted from PyPI `cheXwhatsApp` by
//!    `models/chest-lung-segmentation/convert.py` (no torch), for the "is this a chest?" gate;
//! 4. the endoscopy field-of-view edge model, converted from PyPI `torchcontentarea` by
//!    `models/endoscopy-field-of-view/convert.py` (no torch), the first stage of endoscopy models.
//!
//! Nothing here can fail the build: without Python, pip or network the files are simply absent,
//! `tramy serve` says which model is not installed and how to install it, and triage reports a
//! missing runtime when it is enabled (or `ORT_DYLIB_PATH` points at another copy).

use std::path::{Path, PathBuf};
use std::process::Command;

const ONNXRUNTIME_VERSION: &str = "1.31.1";
/// The OHIF Viewer release served at `/viewer` (the one its browser tests pass with).
const OHIF_VERSION: &str = "3.13.2";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TRAMY_SKIP_ONNXRUNTIME_FETCH");
    println!("cargo:rerun-if-env-changed=TRAMY_SKIP_MODEL_SETUP");
    let Some(target_dir) = target_dir() else {
        return;
    };
    if std::env::var_os("TRAMY_SKIP_MODEL_SETUP").is_none() {
        set_up_pneumonia_model(&target_dir);
        set_up_lung_segmentation_model(&target_dir);
        set_up_field_of_view_model(&target_dir);
    }
    fetch_onnxruntime(&target_dir);
    fetch_viewer(&target_dir);
}

/// Converts the pneumonia model unless it and its images are already there. A failure is a
/// warning, and the build script runs again on the next build until it succeeds.
fn set_up_pneumonia_model(target_dir: &Path) {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let folder = root.join("models/chest-xray-pneumonia");
    let model = folder.join("model.onnx");
    let images = root.join("dicom-samples/fetched/kermany-val");
    println!(
        "cargo:rerun-if-changed={}",
        folder.join("convert.py").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        folder.join("requirements.txt").display()
    );
    if model.is_file() && images.join("PNEUMONIA").is_dir() {
        return;
    }
    // `cargo build --release` and `cargo test` may run this at the same time.
    let lock = std::fs::File::create(target_dir.join("setup-venv.lock"));
    let _guard = lock.as_ref().ok().filter(|f| f.lock().is_ok());
    if model.is_file() && images.join("PNEUMONIA").is_dir() {
        return;
    }
    if let Err(e) = convert_pneumonia_model(target_dir, &folder, &images) {
        println!("cargo:warning=the chest X-ray pneumonia model was not converted ({e}); tramy runs without it. Rebuild with network access to PyPI, or see models/chest-xray-pneumonia/README.md");
        // Try again next build.
        println!("cargo:rerun-if-changed={}", model.display());
    }
}

/// The Python both converters run in, with both requirement files installed (the same pins, so
/// the two never rebuild the venv in turn). Call with the set-up lock held.
fn setup_python(target_dir: &Path, root: &Path) -> Result<PathBuf, String> {
    let venv = target_dir.join("setup-venv");
    let python = venv.join("bin/python");
    let files = [
        root.join("models/chest-xray-pneumonia/requirements.txt"),
        root.join("models/chest-lung-segmentation/requirements.txt"),
        root.join("models/endoscopy-field-of-view/requirements.txt"),
    ];
    let mut wanted = String::new();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        wanted += &std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    }
    let marker = venv.join("requirements.installed");
    if !python.exists() || std::fs::read_to_string(&marker).unwrap_or_default() != wanted {
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv))?;
        let mut pip = Command::new(&python);
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--retries=1",
            "--timeout=20",
            "--disable-pip-version-check",
        ]);
        for file in &files {
            pip.arg("-r").arg(file);
        }
        run(&mut pip)?;
        std::fs::write(&marker, wanted).map_err(|e| e.to_string())?;
    }
    Ok(python)
}

fn convert_pneumonia_model(target_dir: &Path, folder: &Path, images: &Path) -> Result<(), String> {
    let root = folder.ancestors().nth(2).unwrap_or(folder);
    let python = setup_python(target_dir, root)?;
    run(Command::new(&python)
        .arg(folder.join("convert.py"))
        .arg("--cache")
        .arg(target_dir.join("pneumonia-model-package"))
        .arg("--images")
        .arg(images))
}

/// Converts the lung-segmentation U-Net unless it is already there.
fn set_up_lung_segmentation_model(target_dir: &Path) {
    set_up_converted_model(
        target_dir,
        "chest-lung-segmentation",
        "chexwhatsapp",
        "the chest X-ray lung-segmentation model",
    );
}

/// Converts the endoscopy field-of-view model unless it is already there.
fn set_up_field_of_view_model(target_dir: &Path) {
    set_up_converted_model(
        target_dir,
        "endoscopy-field-of-view",
        "torchcontentarea",
        "the endoscopy field-of-view model",
    );
}

/// Runs `models/<folder>/convert.py --cache target/<cache>` in the shared set-up venv unless its
/// model.onnx is there; like the pneumonia model, a failure is a warning naming `what`, and the
/// next build tries again.
fn set_up_converted_model(target_dir: &Path, folder: &str, cache: &str, what: &str) {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = root.join("models").join(folder);
    let model = dir.join("model.onnx");
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("convert.py").display()
    );
    if model.is_file() {
        return;
    }
    let lock = std::fs::File::create(target_dir.join("setup-venv.lock"));
    let _guard = lock.as_ref().ok().filter(|f| f.lock().is_ok());
    if model.is_file() {
        return;
    }
    let converted = setup_python(target_dir, &root).and_then(|python| {
        run(Command::new(&python)
            .arg(dir.join("convert.py"))
            .arg("--cache")
            .arg(target_dir.join(cache)))
    });
    if let Err(e) = converted {
        println!("cargo:warning={what} was not converted ({e}); tramy runs without it. Rebuild with network access to PyPI, or see models/{folder}/README.md");
        println!("cargo:rerun-if-changed={}", model.display());
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    // Our stdout is cargo's instruction channel; the tools' chatter belongs on stderr.
    let status = command
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed ({status})"))
    }
}

fn fetch_onnxruntime(target_dir: &Path) {
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

/// The OHIF Viewer tramy serves at `/viewer` (npm `@ohif/app` at [`OHIF_VERSION`], by
/// `scripts/fetch-ohif.sh`), fetched once into `target/ohif/`; the binary finds it through
/// `TRAMY_BUNDLED_VIEWER` unless `[http] viewer_dir` names another. Without npm or network the
/// build goes on with a warning, and tramy runs without a viewer.
fn fetch_viewer(target_dir: &Path) {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let script = root.join("scripts/fetch-ohif.sh");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-env-changed=TRAMY_SKIP_VIEWER_FETCH");
    let dest = target_dir.join("ohif").join(OHIF_VERSION);
    let dist = dest.join("dist");
    println!("cargo:rustc-env=TRAMY_BUNDLED_VIEWER={}", dist.display());
    if dist.join("index.html").is_file() || std::env::var_os("TRAMY_SKIP_VIEWER_FETCH").is_some() {
        return;
    }
    let fetched = Command::new("bash")
        .arg(&script)
        .arg(&dest)
        .env("OHIF_VERSION", OHIF_VERSION)
        .stdout(std::process::Stdio::null())
        .status();
    if !matches!(fetched, Ok(s) if s.success()) {
        println!("cargo:warning=the OHIF Viewer was not fetched (needs npm and the npm registry): tramy runs without /viewer until a rebuild fetches it, or set [http] viewer_dir");
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
            "--retries=1",
            "--timeout=20",
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
