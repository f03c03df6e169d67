//! Bring-your-own classifiers (issue 14 item 3): the ready manifest for agl-predict-endo-frame's
//! RegNetX-800MF and the generic torchvision/timm export path pass `tramy models check` once
//! their model file is placed, say what is missing before, and score endoscopy clips through
//! `tramy serve`. The model files are graphs of the same architecture and tensor names with
//! RANDOM weights, made at test time in a temporary folder by
//! tests/clients/random_regnetx_onnx.py (torch is not available here); no model is shipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const AGL: &str = "agl-predict-endo-frame-regnetx800mf";
const OWN: &str = "own-image-classifier";

fn available(name: &str) -> PathBuf {
    repo_root().join("models/available").join(name)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `tramy models SUBCOMMAND --dir DIR`.
fn models(subcommand: &str, dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tramy"))
        .args(["models", subcommand, "--dir"])
        .arg(dir)
        .output()
        .unwrap()
}

/// A models folder holding a copy of `models/available/NAME/model.toml` alone, as a site has
/// it after copying the folder and before exporting.
fn models_dir_with_manifest(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(
        available(name).join("model.toml"),
        folder.join("model.toml"),
    )
    .unwrap();
    (tmp, folder)
}

/// Writes a RANDOM-weight graph of `kind` (regnetx | tiny) as `folder/model.onnx`; returns
/// what the script says about it.
fn random_onnx(kind: &str, folder: &Path, labels: usize, size: u32) -> serde_json::Value {
    let made = Command::new(python())
        .arg(repo_root().join("tests/clients/random_regnetx_onnx.py"))
        .arg(kind)
        .arg(folder.join("model.onnx"))
        .args(["--labels", &labels.to_string(), "--size", &size.to_string()])
        .output()
        .unwrap();
    assert_success(&made, "random_regnetx_onnx.py");
    serde_json::from_slice(&made.stdout).unwrap()
}

fn manifest(folder: &Path) -> tramy::triage::ModelManifest {
    tramy::triage::ModelManifest::load_routing(&folder.join("model.toml")).unwrap()
}

/// The first line of `out` that mentions `name`.
fn line_about<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("no line about {name}:\n{out}"))
}

#[test]
fn the_agl_manifest_has_the_packages_fourteen_labels_and_preprocessing() {
    let m = manifest(&available(AGL));
    let names: Vec<&str> = m.labels.iter().map(|l| l.name.as_str()).collect();
    // agl_predict_endo_frame/predict.py sample_config["labels"], in output order.
    assert_eq!(
        names,
        [
            "appendix",
            "blood",
            "diverticule",
            "grasper",
            "ileocaecalvalve",
            "ileum",
            "low_quality",
            "nbi",
            "needle",
            "outside",
            "polyp",
            "snare",
            "water_jet",
            "wound"
        ]
    );
    assert!(m.labels.iter().enumerate().all(|(i, l)| l.index == i
        && l.output == "logits"
        && l.threshold == 0.5
        && l.activation == tramy::triage::manifest::Activation::Sigmoid));
    assert_eq!(
        (m.input.height, m.input.width, m.input.channels),
        (716, 716, 3)
    );
    assert_eq!(m.preprocess.mean, [0.45211223, 0.27139644, 0.19264949]);
    assert_eq!(m.preprocess.std, [0.31418097, 0.21088019, 0.16059452]);
    assert!((255.0 * m.preprocess.scale - 1.0).abs() < 1e-6 && m.preprocess.offset == 0.0);
    assert_eq!(m.task, tramy::triage::manifest::Task::PerFrame);
    let setup = m.setup.expect("a [setup] saying how to make model.onnx");
    assert!(setup.command.contains("export.py"), "{}", setup.command);
}

#[test]
fn the_random_regnetx_graph_has_torchvisions_regnet_x_800mf_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let info = random_onnx("regnetx", tmp.path(), 14, 716);
    // torchvision.models.regnet_x_800mf: stages of widths 64/128/288/672 and depths 1/3/7/5;
    // 7 259 656 parameters with the 1000-class head, so with Linear(672, 14) in its place
    // 7 259 656 - (672 * 1000 + 1000) + (672 * 14 + 14).
    assert_eq!(
        info["stages"],
        serde_json::json!([[64, 1], [128, 3], [288, 7], [672, 5]])
    );
    assert_eq!(
        info["torch_params"],
        7_259_656 - (672 * 1000 + 1000) + (672 * 14 + 14)
    );
}

#[test]
fn agl_without_its_model_file_is_not_installed_and_names_the_export_command() {
    let (tmp, _folder) = models_dir_with_manifest(AGL);
    for subcommand in ["list", "check"] {
        let out = models(subcommand, tmp.path());
        let said = text(&out);
        let line = line_about(&said, AGL);
        assert!(
            line.contains("NOT INSTALLED") || line.contains("not installed"),
            "{said}"
        );
        assert!(
            line.contains("models/agl-predict-endo-frame-regnetx800mf/export.py"),
            "{subcommand} prints the export command: {said}"
        );
        assert!(line.contains("model.onnx"), "{said}");
    }
    assert!(!models("check", tmp.path()).status.success());
}

#[test]
fn agl_with_a_random_regnetx_in_place_passes_the_check_and_scores_fourteen_labels_per_sampled_frame(
) {
    use dicom_dictionary_std::tags;
    let (tmp, folder) = models_dir_with_manifest(AGL);
    random_onnx("regnetx", &folder, 14, 716);
    let check = models("check", tmp.path());
    assert_success(&check, "tramy models check");
    let said = text(&check);
    assert!(line_about(&said, AGL).starts_with("ok"), "{said}");
    assert!(line_about(&said, AGL).contains("water_jet"), "{said}");
    let listed = text(&models("list", tmp.path()));
    assert!(line_about(&listed, AGL).contains("PerFrame"), "{listed}");

    // A synthetic Video Endoscopic clip (Modality ES) through tramy serve.
    let server = TramyServer::start_with_config(&format!(
        "[triage]\nmodels_dir = \"{}\"\n",
        tmp.path().display()
    ));
    let clip = tmp.path().join("clip.dcm");
    let frames = 8;
    let made = Command::new(python())
        .arg(repo_root().join("models/endoscopy-synthetic-demo/build.py"))
        .args([
            "clip",
            &clip.display().to_string(),
            &frames.to_string(),
            "5",
        ])
        .output()
        .unwrap();
    assert_success(&made, "build.py clip");
    server.store_files(&[&clip], "storescu of the clip");
    let obj = dicom_object::open_file(&clip).unwrap();
    let study = tramy::dicom::attributes::text(&obj, tags::STUDY_INSTANCE_UID);
    let m = manifest(&folder);
    // Every frame_step-th frame: 1 and 6 of 8 (1-based).
    let sampled: Vec<u64> = (0..frames)
        .step_by(m.preprocess.frame_step as usize)
        .map(|f| f + 1)
        .collect();
    let want = 14 * sampled.len();
    let findings = wait_for("14 findings per sampled frame", || {
        let v = server.findings(&study);
        (v.len() >= want).then_some(v)
    });
    assert_eq!(findings.len(), want);
    for frame in &sampled {
        let mut labels: Vec<&str> = findings
            .iter()
            .filter(|f| f["frame"].as_u64() == Some(*frame))
            .map(|f| f["label"].as_str().unwrap())
            .collect();
        labels.sort();
        let mut expected: Vec<&str> = m.labels.iter().map(|l| l.name.as_str()).collect();
        expected.sort();
        assert_eq!(labels, expected, "frame {frame}");
    }
    assert!(findings.iter().all(|f| {
        let p = f["probability"].as_f64().unwrap();
        (0.0..=1.0).contains(&p)
            && f["statement"]
                .as_str()
                .unwrap()
                .contains("Weights supplied by the hospital")
    }));
}

/// The arguments of the committed example in models/available/own-image-classifier.
const OWN_EXAMPLE: &[&str] = &[
    "--library",
    "torchvision",
    "--arch",
    "resnet18",
    "--weights",
    "polyp_resnet18.pt",
    "--labels",
    "polyp",
];

/// Runs the generic exporter with `--manifest-only` (no torch needed) into `out`.
fn own_manifest(out: &Path, extra: &[&str]) -> Output {
    Command::new(python())
        .arg(available(OWN).join("export.py"))
        .arg("--manifest-only")
        .args(OWN_EXAMPLE)
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn the_generic_exporter_writes_the_committed_example_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    // Run from the repository root with the example's relative --out, into a copy.
    let out = tmp.path().join(OWN);
    let made = own_manifest(&out, &[]);
    assert_success(&made, "export.py --manifest-only");
    let written = std::fs::read_to_string(out.join("model.toml")).unwrap();
    let committed = std::fs::read_to_string(available(OWN).join("model.toml")).unwrap();
    // Only the --out in the [setup] command differs.
    let written = written.replace(
        &out.display().to_string(),
        "models/available/own-image-classifier",
    );
    assert_eq!(written, committed);
}

#[test]
fn a_generic_classifier_is_not_installed_then_checked_and_evaluated_on_a_labelled_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let models_root = tmp.path().join("models");
    let folder = models_root.join("own-polyp-tiny");
    let made = own_manifest(&folder, &["--size", "96"]);
    assert_success(&made, "export.py --manifest-only");
    assert!(
        text(&made).contains("tramy models check"),
        "{}",
        text(&made)
    );

    let before = models("check", &models_root);
    assert!(!before.status.success());
    let said = text(&before);
    assert!(
        line_about(&said, "own-polyp-tiny").contains("own-image-classifier/export.py"),
        "{said}"
    );

    random_onnx("tiny", &folder, 1, 96);
    let after = models("check", &models_root);
    assert_success(&after, "tramy models check");
    assert!(
        text(&after).contains("ok      own-polyp-tiny"),
        "{}",
        text(&after)
    );

    // tramy eval on a labelled folder (one sub-folder per label; "normal" is negative for all).
    let data = tmp.path().join("frames");
    let frames = Command::new(python())
        .arg(repo_root().join("models/endoscopy-synthetic-demo/build.py"))
        .args(["frames", &data.display().to_string(), "20", "2"])
        .output()
        .unwrap();
    assert_success(&frames, "build.py frames");
    let report_path = tmp.path().join("eval.json");
    let eval = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .arg("eval")
        .arg("--model")
        .arg(&folder)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&report_path)
        .output()
        .unwrap();
    assert_success(&eval, "tramy eval");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let label = &report[0]["labels"][0];
    assert_eq!(label["label"], "polyp");
    assert_eq!(
        label["positives"].as_u64().unwrap() + label["negatives"].as_u64().unwrap(),
        20
    );
}
