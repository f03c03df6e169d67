//! AI triage plumbing against the real ONNX Runtime (the library the build fetched from PyPI):
//! manifests are validated with errors that name the file, models load and run, and tramy's
//! preprocessing and inference agree with an independent Python pipeline (pydicom + Python
//! onnxruntime) on the same instance.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const MANIFEST: &str = TEST_MODEL_MANIFEST;

fn tramy(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tramy"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `tramy models check` on the models folder holding `model_dir`.
fn models_check(model_dir: &Path, envs: &[(&str, &str)]) -> Output {
    let root = model_dir.parent().unwrap().display().to_string();
    tramy(&["models", "check", "--dir", &root], envs)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `tramy eval` of the model in `model` on `data`, writing its JSON and ROC PNGs (`roc/`)
/// into `dir`; returns the printed table and the JSON report.
fn eval(model: &Path, data: &Path, dir: &Path) -> (String, serde_json::Value) {
    let out = dir.join("eval.json");
    let run = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .arg("eval")
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(&out)
        .arg("--roc-dir")
        .arg(dir.join("roc"))
        .output()
        .unwrap();
    assert_success(&run, "tramy eval");
    let report = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    (text(&run), report)
}

#[test]
fn models_are_listed_checked_and_run_on_onnx_runtime() {
    let (_tmp, dir) = models_dir(MANIFEST);
    let root = dir.parent().unwrap().display().to_string();
    let list = tramy(&["models", "list", "--dir", &root], &[]);
    assert_success(&list, "tramy models list");
    assert!(
        text(&list).contains("test-brightness") && text(&list).contains("TEST MODEL"),
        "{}",
        text(&list)
    );
    let check = tramy(&["models", "check", "--dir", &root], &[]);
    assert_success(&check, "tramy models check");
    assert!(
        text(&check).contains("ok      test-brightness"),
        "{}",
        text(&check)
    );
}

#[test]
fn preprocessing_and_inference_match_python_onnxruntime() {
    let (tmp, dir) = models_dir(MANIFEST);
    let sample = repo_root().join("dicom-samples/mr_small_explicit_le.dcm");
    let dump = tmp.path().join("input.bin");
    let run = tramy(
        &[
            "models",
            "run",
            &dir.display().to_string(),
            &sample.display().to_string(),
            "--dump-input",
            &dump.display().to_string(),
        ],
        &[],
    );
    assert_success(&run, "tramy models run");
    let result: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let probability = result["scores"][0][0]["probability"].as_f64().unwrap();
    assert_eq!(result["input_shape"], serde_json::json!([1, 1, 64, 64]));

    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/triage_parity.py"))
        .arg(dir.join("model.onnx"))
        .arg(&sample)
        .arg(&dump)
        .arg(probability.to_string())
        .output()
        .unwrap();
    assert_success(&out, "triage_parity.py");
    let parity: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // One grey level of an 8-bit window, for rounding; the model sees the same values otherwise.
    assert!(
        parity["max_input_difference"].as_f64().unwrap() <= 1.0 / 255.0 + 1e-6,
        "{parity}"
    );
    assert!(
        parity["output_difference"].as_f64().unwrap() < 1e-5,
        "{parity}"
    );
}

#[test]
fn a_bad_manifest_is_an_error_naming_the_file_and_the_field() {
    let (_tmp, dir) = models_dir(&MANIFEST.replace("channels = 1", "channels = 2"));
    let check = models_check(&dir, &[]);
    assert!(!check.status.success());
    let said = text(&check);
    assert!(
        said.contains(&dir.join("model.toml").display().to_string()) && said.contains("channels"),
        "{said}"
    );

    let (_tmp, dir) = models_dir(&MANIFEST.replace("statement = ", "statment = "));
    let check = models_check(&dir, &[]);
    assert!(!check.status.success());
    assert!(
        text(&check).contains("statment"),
        "unknown keys are named: {}",
        text(&check)
    );
}

#[test]
fn a_missing_onnx_runtime_library_is_a_clear_error() {
    let (_tmp, dir) = models_dir(MANIFEST);
    let check = models_check(
        &dir,
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert!(!check.status.success());
    assert!(text(&check).contains("ORT_DYLIB_PATH"), "{}", text(&check));
}

/// The SR series of `study`, as QIDO-RS lists them (DICOM JSON).
fn qido_sr_series(server: &TramyServer, study: &str) -> serde_json::Value {
    server
        .http(
            "GET",
            &format!("/dicomweb/studies/{study}/series?Modality=SR"),
            &[("Accept", "application/dicom+json")],
            b"",
        )
        .json()
}

/// What pynetdicom's findscu prints for a Study Root SERIES query for the SR series of `study`.
fn c_find_sr_series(server: &TramyServer, study: &str) -> String {
    let study_key = format!("StudyInstanceUID={study}");
    let find = pynetdicom_find(
        server,
        None,
        &[
            "QueryRetrieveLevel=SERIES",
            &study_key,
            "Modality=SR",
            "SeriesInstanceUID=",
        ],
    );
    assert_success(&find, "findscu");
    text(&find)
}

fn uid(sample: &str, tag: dicom_core::Tag) -> String {
    let obj = dicom_object::open_file(repo_root().join("dicom-samples").join(sample)).unwrap();
    tramy::dicom::attributes::text(&obj, tag)
}

#[test]
fn an_instance_stored_over_dimse_is_triaged_and_its_finding_served() {
    use dicom_dictionary_std::tags;
    let (_tmp, dir) = models_dir(MANIFEST);
    let server = TramyServer::start_with_config(&format!(
        "[triage]\nmodels_dir = \"{}\"\n",
        dir.parent().unwrap().display()
    ));
    let mr = repo_root().join("dicom-samples/mr_small_explicit_le.dcm");
    let ct = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    server.store_files(&[&mr, &ct], "storescu");

    let study = uid("mr_small_explicit_le.dcm", tags::STUDY_INSTANCE_UID);
    let findings = wait_for("the MR finding", || {
        let v = server.findings(&study);
        (!v.is_empty()).then_some(v)
    });
    let f = &findings[0];
    assert_eq!(f["label"], "bright");
    assert_eq!(f["model"], "test-brightness");
    assert!(
        f["statement"].as_str().unwrap().contains("TEST MODEL"),
        "every finding carries the model's statement"
    );

    // The same number `tramy models run` computes for the stored instance.
    let run = tramy(
        &[
            "models",
            "run",
            &dir.display().to_string(),
            &mr.display().to_string(),
        ],
        &[],
    );
    assert_success(&run, "tramy models run");
    let expected: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let want = expected["scores"][0][0]["probability"].as_f64().unwrap();
    assert!(
        (f["probability"].as_f64().unwrap() - want).abs() < 1e-6,
        "{f} vs {want}"
    );

    // The findings are also a Comprehensive SR (TID 1500) in the study, found by QIDO-RS and
    // C-FIND and retrievable with the images.
    let series = qido_sr_series(&server, &study);
    assert_eq!(series.as_array().map(Vec::len), Some(1), "{series}");
    let series_uid = series[0]["0020000E"]["Value"][0]
        .as_str()
        .unwrap()
        .to_string();
    let metadata = server.http(
        "GET",
        &format!("/dicomweb/studies/{study}/series/{series_uid}/metadata"),
        &[("Accept", "application/dicom+json")],
        b"",
    );
    let report = String::from_utf8_lossy(&metadata.body).to_string();
    for expected in [
        "1.2.840.10008.5.1.4.1.1.88.33",
        "Imaging Measurement Report",
        "bright",
        "Certainty of Finding",
        "Tracking Unique Identifier",
        "TEST MODEL",
        "Algorithm Version",
    ] {
        assert!(
            report.contains(expected),
            "the SR holds {expected:?}: {report}"
        );
    }
    assert!(
        report.contains(&uid("mr_small_explicit_le.dcm", tags::SOP_INSTANCE_UID)),
        "the SR references its source image"
    );
    let said = c_find_sr_series(&server, &study);
    assert_eq!(
        said.matches("0xFF00 (Pending)").count(),
        1,
        "C-FIND finds the report series: {said}"
    );

    // dcmtk, when installed, reads it as a valid Comprehensive SR (relationship constraints of
    // PS3.3 A.35.3 included).
    if dcmtk_available() {
        let report_file = server
            .object_files()
            .into_iter()
            .find(|p| p.to_string_lossy().contains("/series/2.25."))
            .expect("the report object");
        let dump = Command::new("dsrdump").arg(&report_file).output().unwrap();
        let said = text(&dump);
        assert!(
            dump.status.success() && !said.contains("E: "),
            "dsrdump: {said}"
        );
        assert!(
            said.contains("Imaging Measurement Report") && said.contains("inferred from IMAGE"),
            "{said}"
        );
    }

    // Where the model looked, as a PNG over the image.
    let series_of_mr = uid("mr_small_explicit_le.dcm", tags::SERIES_INSTANCE_UID);
    let sop_of_mr = uid("mr_small_explicit_le.dcm", tags::SOP_INSTANCE_UID);
    let r = server.http(
        "GET",
        &format!("/api/v1/studies/{study}/series/{series_of_mr}/instances/{sop_of_mr}/heatmap?model=test-brightness&label=bright"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let map = image::load_from_memory(&r.body).unwrap().to_rgb8();
    assert_eq!(map.dimensions(), (64, 64));
    assert!(
        map.pixels().any(|p| p[0] > p[1].saturating_add(40)),
        "bright anatomy shows as important"
    );
    let r = server.http(
        "GET",
        &format!("/api/v1/studies/{study}/series/{series_of_mr}/instances/{sop_of_mr}/heatmap?model=test-brightness&label=nothing"),
        &[],
        b"",
    );
    assert_eq!(r.status, 404);

    // The CT study is not routed to an MR model: no job, no finding.
    let ct_study = uid("ct_small_explicit_le.dcm", tags::STUDY_INSTANCE_UID);
    assert!(server.findings(&ct_study).is_empty());
    let jobs = server.http("GET", "/api/v1/triage/jobs", &[], b"").json();
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");

    let worklist = server.http("GET", "/api/v1/worklist", &[], b"").json();
    assert_eq!(
        worklist.as_array().unwrap().len(),
        2,
        "both studies are on the worklist: {worklist}"
    );
}

#[test]
fn a_model_failing_on_an_instance_dead_letters_it_with_the_reason_and_the_server_stays_healthy() {
    // No routing: the model is offered every instance, including a report without pixels.
    let manifest = MANIFEST.replace("[routing]\nmodalities = [\"MR\"]\n", "");
    let (_tmp, dir) = models_dir(&manifest);
    let server = TramyServer::start_with_config(&format!(
        "[triage]\nmodels_dir = \"{}\"\nmax_attempts = 1\n",
        dir.parent().unwrap().display()
    ));
    let sr = repo_root().join("dicom-samples/sr_comprehensive.dcm");
    server.store_files(&[&sr], "storescu of a report");
    let dead = wait_for("the dead letter", || {
        let v = server
            .http("GET", "/api/v1/triage/jobs?state=dead", &[], b"")
            .json();
        v.as_array().is_some_and(|a| !a.is_empty()).then_some(v)
    });
    assert!(
        dead[0]["last_error"].as_str().unwrap().contains("pixel"),
        "the reason is kept: {dead}"
    );
    assert_eq!(server.http("GET", "/healthz", &[], b"").status, 200);
    let echo = pynetdicom("echoscu", &["-aec", "TRAMY", "127.0.0.1", &server.port()]);
    assert_success(&echo, "echoscu after a failed triage job");
}

#[test]
fn eval_reports_auc_sensitivity_specificity_latency_and_roc_on_a_labelled_set() {
    let (tmp, dir) = models_dir(MANIFEST);
    // Grey squares: "bright" ones mostly above mid-grey, one below; "dark" ones all below.
    let data = tmp.path().join("data");
    for (class, levels) in [
        (
            "bright",
            vec![100u8, 140, 150, 160, 170, 180, 190, 200, 210, 220],
        ),
        ("dark", (2..12).map(|i| i * 10).collect::<Vec<u8>>()),
    ] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for level in levels {
            image::GrayImage::from_pixel(64, 64, image::Luma([level]))
                .save(data.join(class).join(format!("{level:03}.png")))
                .unwrap();
        }
    }
    let (table, report) = eval(&dir, &data, tmp.path());
    assert!(
        table.contains("test-brightness") && table.contains("0.985"),
        "{table}"
    );
    let label = &report[0]["labels"][0];
    // The one bright square below mid-grey outranks 8 dark ones, ties one, loses to one.
    assert!(
        (label["auc"].as_f64().unwrap() - 0.985).abs() < 1e-9,
        "{label}"
    );
    assert_eq!(label["confusion"], serde_json::json!([9, 0, 10, 1]));
    assert!((label["sensitivity"].as_f64().unwrap() - 0.9).abs() < 1e-9);
    assert_eq!(label["specificity"], 1.0);
    let ci = label["auc_ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() < 0.985 && ci[1].as_f64().unwrap() >= 0.985);
    assert!(report[0]["latency_p50_ms"].as_f64().unwrap() > 0.0);
    assert!(report[0]["throughput_per_s"].as_f64().unwrap() > 0.0);
    let png = std::fs::read(tmp.path().join("roc/roc-bright.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

#[test]
fn the_same_image_in_five_transfer_syntaxes_gets_the_same_finding() {
    use dicom_dictionary_std::tags;
    let (_tmp, dir) = models_dir(MANIFEST);
    let server = TramyServer::start_with_config(&format!(
        "[triage]\nmodels_dir = \"{}\"\nmax_wait_ms = 200\n",
        dir.parent().unwrap().display()
    ));
    let variants: Vec<PathBuf> = [
        "mr_small_explicit_le",
        "mr_small_implicit_le",
        "mr_small_explicit_be",
        "mr_small_rle",
        "mr_small_j2k_lossless",
    ]
    .iter()
    .map(|v| repo_root().join(format!("dicom-samples/{v}.dcm")))
    .collect();
    let files: Vec<&Path> = variants.iter().map(PathBuf::as_path).collect();
    server.store_files(&files, "storescu of the MR variants");
    let study = uid("mr_small_explicit_le.dcm", tags::STUDY_INSTANCE_UID);
    let findings = wait_for("five findings", || {
        let v = server.findings(&study);
        (v.len() == 5).then_some(v)
    });
    let probabilities: Vec<f64> = findings
        .iter()
        .map(|f| f["probability"].as_f64().unwrap())
        .collect();
    for p in &probabilities {
        assert!(
            (p - probabilities[0]).abs() < 1e-6,
            "decoding must not change what the model sees: {probabilities:?}"
        );
    }
    let metrics =
        String::from_utf8_lossy(&server.http("GET", "/metrics", &[], b"").body).to_string();
    assert!(metrics.contains("tramy_triage_batch_size"), "{metrics}");
}

#[test]
fn a_per_frame_model_scores_sampled_frames_of_a_multi_frame_instance() {
    use dicom_dictionary_std::tags;
    // The video path a polyp model takes: every 5th frame of the 30-frame ultrasound clip.
    let manifest = MANIFEST
        .replace("task = \"binary\"", "task = \"per-frame\"")
        .replace("modalities = [\"MR\"]", "modalities = [\"US\"]")
        .replace(
            "offset = 0.0",
            "offset = 0.0\nframe_step = 5\nmax_frames = 64",
        );
    let (_tmp, dir) = models_dir(&manifest);
    let server = TramyServer::start_with_config(&format!(
        "[triage]\nmodels_dir = \"{}\"\n",
        dir.parent().unwrap().display()
    ));
    let us = repo_root().join("dicom-samples/us_multiframe_jpeg.dcm");
    server.store_files(&[&us], "storescu of the clip");
    let study = uid("us_multiframe_jpeg.dcm", tags::STUDY_INSTANCE_UID);
    let findings = wait_for("per-frame findings", || {
        let v = server.findings(&study);
        (!v.is_empty()).then_some(v)
    });
    let mut frames: Vec<i64> = findings
        .iter()
        .map(|f| f["frame"].as_i64().unwrap())
        .collect();
    frames.sort();
    assert_eq!(
        frames,
        vec![1, 6, 11, 16, 21, 26],
        "every 5th of 30 frames, 1-based"
    );
    // The report names the frame each probability came from.
    let sr = wait_for("the report", || {
        let v = qido_sr_series(&server, &study);
        v.as_array().is_some_and(|a| a.len() == 1).then_some(v)
    });
    let series = sr[0]["0020000E"]["Value"][0].as_str().unwrap();
    let metadata = server.http(
        "GET",
        &format!("/dicomweb/studies/{study}/series/{series}/metadata"),
        &[("Accept", "application/dicom+json")],
        b"",
    );
    let text = String::from_utf8_lossy(&metadata.body);
    assert!(
        text.contains("00081160"),
        "Referenced Frame Number in the report: {text}"
    );
}

fn endoscopy_demo() -> PathBuf {
    repo_root().join("models/endoscopy-synthetic-demo")
}

#[test]
fn the_synthetic_endoscopy_demo_scores_every_frame_of_a_clip_on_default_settings() {
    use dicom_dictionary_std::tags;
    // Default settings: models_dir = "models", which holds the synthetic demo.
    let server = TramyServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("clip.dcm");
    let made = Command::new(python())
        .arg(endoscopy_demo().join("build.py"))
        .args(["clip", &clip.display().to_string(), "20", "3"])
        .output()
        .unwrap();
    assert_success(&made, "build.py clip");
    let truth: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    server.store_files(&[&clip], "storescu of the clip");
    let obj = dicom_object::open_file(&clip).unwrap();
    let study = tramy::dicom::attributes::text(&obj, tags::STUDY_INSTANCE_UID);
    let findings = wait_for("20 per-frame findings and the clip's", || {
        let v = server.findings(&study);
        (v.len() == 21).then_some(v)
    });
    let mut frames: Vec<&serde_json::Value> = findings.iter().filter(|f| f["frame"] != 0).collect();
    frames.sort_by_key(|f| f["frame"].as_i64().unwrap());
    let probability = |f: &serde_json::Value| f["probability"].as_f64().unwrap();
    let agree = frames
        .iter()
        .filter(|f| {
            let frame = f["frame"].as_u64().unwrap() as usize - 1;
            Some(probability(f) >= 0.5) == truth["polyp"][frame].as_bool()
        })
        .count();
    assert!(
        agree >= 18,
        "frame scores agree with the generated ground truth on {agree}/20 frames"
    );
    assert!(
        frames.iter().all(|f| f["flagged"] == false),
        "single frames are evidence; the clip's finding flags"
    );
    // The clip's finding: the per-frame probabilities averaged over 3 frames (the manifest's
    // [clip]), flagged where that reaches 0.5, peaking at its maximum.
    let p: Vec<f64> = frames.iter().map(|f| probability(f)).collect();
    let smoothed: Vec<f64> = (0..p.len())
        .map(|i| {
            let part = &p[i.saturating_sub(1)..(i + 2).min(p.len())];
            part.iter().sum::<f64>() / part.len() as f64
        })
        .collect();
    let fired: Vec<i64> = (0..p.len())
        .filter(|&i| smoothed[i] >= 0.5)
        .map(|i| i as i64 + 1)
        .collect();
    let clip = findings
        .iter()
        .find(|f| f["frame"] == 0)
        .expect("the clip's finding");
    assert_eq!(clip["fired_frames"], serde_json::json!(fired), "{clip}");
    assert_eq!(clip["flagged"], !fired.is_empty(), "{clip}");
    let peak = smoothed.iter().cloned().fold(0.0, f64::max);
    assert!((probability(clip) - peak).abs() < 1e-4, "{clip} vs {peak}");
    assert!(findings[0]["statement"]
        .as_str()
        .unwrap()
        .contains("SYNTHETIC DEMO"));
}

#[test]
fn eval_on_the_synthetic_endoscopy_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("frames");
    let made = Command::new(python())
        .arg(endoscopy_demo().join("build.py"))
        .args(["frames", &data.display().to_string(), "200", "2"])
        .output()
        .unwrap();
    assert_success(&made, "build.py frames");
    let (table, report) = eval(&endoscopy_demo(), &data, tmp.path());
    let auc = report[0]["labels"][0]["auc"].as_f64().unwrap();
    assert!(
        auc > 0.95,
        "the demo separates its own synthetic classes: AUC {auc}"
    );
    assert!(table.contains("SYNTHETIC DEMO"));
}

#[test]
fn the_committed_demo_model_is_what_build_py_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("build.py");
    std::fs::copy(endoscopy_demo().join("build.py"), &copy).unwrap();
    let made = Command::new(python())
        .arg(&copy)
        .arg("model")
        .output()
        .unwrap();
    assert_success(&made, "build.py model");
    // Same weights up to float rounding (numpy versions may differ in the last bits).
    let compare = Command::new(python())
        .arg("-c")
        .arg(
            "import sys, onnx, numpy\n\
             from onnx import numpy_helper\n\
             a, b = (onnx.load(p) for p in sys.argv[1:3])\n\
             wa = {i.name: numpy_helper.to_array(i) for i in a.graph.initializer}\n\
             wb = {i.name: numpy_helper.to_array(i) for i in b.graph.initializer}\n\
             assert wa.keys() == wb.keys()\n\
             print(max(float(numpy.abs(wa[k] - wb[k]).max()) for k in wa))",
        )
        .arg(tmp.path().join("model.onnx"))
        .arg(endoscopy_demo().join("model.onnx"))
        .output()
        .unwrap();
    assert_success(&compare, "comparing weights");
    let difference: f64 = String::from_utf8_lossy(&compare.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(
        difference < 1e-4,
        "model.onnx is what build.py trains (largest weight difference {difference})"
    );
}

/// The Keras model's own pneumonia probability per image file name (recorded once with
/// TensorFlow by record_keras_reference.py).
fn keras_reference() -> std::collections::BTreeMap<String, f64> {
    let path = repo_root().join("models/chest-xray-pneumonia/keras-reference.json");
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["file"].as_str().unwrap().to_string(),
                i["softmax_pneumonia"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// How far tramy's probabilities may be from Keras' on the same JPEG: the two decode JPEG with
/// different IDCTs (Rust `image`/`jpeg-decoder` vs libjpeg-turbo), a difference of a grey level
/// in some pixels; measured at most 0.003.
const JPEG_DECODER_TOLERANCE: f64 = 0.01;

#[test]
fn the_pneumonia_onnx_conversion_matches_the_keras_model_within_1e_4() {
    let (folder, _) = pneumonia_model();
    let out = Command::new(python())
        .arg(folder.join("convert.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert_success(&out, "convert.py --check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["images"], 16, "{stdout}");
    assert!(
        summary["worst_max_abs_diff"].as_f64().unwrap() <= 1e-4 && summary["parity"] == true,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("\"same_input_as_keras\": true").count(),
        16,
        "the check fed ONNX exactly the tensors Keras saw: {stdout}"
    );
}

#[test]
fn eval_on_the_sixteen_kermany_images_reproduces_the_keras_model() {
    let (folder, images) = pneumonia_model();
    let tmp = tempfile::tempdir().unwrap();
    let (table, report) = eval(&folder, &images, tmp.path());
    assert!(table.contains("Research use only"), "{table}");
    let reference = keras_reference();
    let scores = report[0]["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 16);
    for s in scores {
        let file = PathBuf::from(s["path"].as_str().unwrap());
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let ours = s["probabilities"]["pneumonia"].as_f64().unwrap();
        let keras = reference[&name];
        assert!(
            (ours - keras).abs() <= JPEG_DECODER_TOLERANCE,
            "{name}: tramy {ours} vs Keras {keras}"
        );
        assert_eq!(
            s["truth"]["pneumonia"].as_bool().unwrap(),
            name.starts_with("person"),
            "the folder names are the labels"
        );
    }
    let label = &report[0]["labels"][0];
    // Keras itself: 6 of 8 pneumonia flagged, 1 of 8 normal flagged (13/16 right).
    assert_eq!(
        label["confusion"],
        serde_json::json!([6, 1, 7, 2]),
        "{label}"
    );
    assert!(
        (label["auc"].as_f64().unwrap() - 0.906).abs() < 0.02,
        "{label}"
    );
    assert_eq!(
        &std::fs::read(tmp.path().join("roc/roc-pneumonia.png")).unwrap()[..4],
        b"\x89PNG"
    );
}

#[test]
fn a_chest_cr_and_a_kermany_jpeg_wrapped_as_dx_get_pneumonia_findings_and_an_sr() {
    use dicom_dictionary_std::tags;
    let (_, images) = pneumonia_model();
    let fetch = Command::new(repo_root().join("dicom-samples/fetch-chest-cr.sh"))
        .output()
        .unwrap();
    assert_success(&fetch, "dicom-samples/fetch-chest-cr.sh");
    let cr = repo_root().join("dicom-samples/fetched/chest_cr_rg1_explicit_le.dcm");
    let tmp = tempfile::tempdir().unwrap();
    let dx = tmp.path().join("dx.dcm");
    let jpeg = "person1946_bacteria_4874.jpeg";
    wrap_jpeg_as_dx(&images.join("PNEUMONIA").join(jpeg), &dx);

    // Default settings: models_dir = "models", where build.rs put the converted model.
    let server = TramyServer::start();
    server.store_files(&[&cr, &dx], "storescu of the chest CR and the DX");
    let study_of = |path: &std::path::Path| {
        tramy::dicom::attributes::text(
            &dicom_object::open_file(path).unwrap(),
            tags::STUDY_INSTANCE_UID,
        )
    };
    let pneumonia_finding = |study: &str| {
        wait_for("a pneumonia finding", || {
            server
                .findings(study)
                .into_iter()
                .find(|f| f["model"] == "chest-xray-pneumonia-kermany")
        })
    };

    let dx_study = study_of(&dx);
    let f = pneumonia_finding(&dx_study);
    let keras = keras_reference()[jpeg];
    let ours = f["probability"].as_f64().unwrap();
    assert!(
        (ours - keras).abs() <= JPEG_DECODER_TOLERANCE,
        "DX of {jpeg}: tramy {ours} vs Keras {keras}"
    );
    assert_eq!(f["label"], "pneumonia");
    assert_eq!(f["flagged"], true);
    assert_eq!(f["urgency"], "urgent");
    // The wrapped JPEG says no age: taken as inside the paediatric population, and said so.
    assert_eq!(f["intended_use"], "inside", "{f}");
    assert_eq!(f["intended_use_note"], "age unknown");
    assert!(f["statement"]
        .as_str()
        .unwrap()
        .contains("Research use only"));

    // The adult CR is out of the model's (paediatric) distribution, but it is scored and says so.
    let cr_study = study_of(&cr);
    let f = pneumonia_finding(&cr_study);
    assert!((0.0..=1.0).contains(&f["probability"].as_f64().unwrap()));
    assert!(f["statement"].as_str().unwrap().contains("paediatric"));
    // Its age is its birth date (1940-03-05) against its study date (2004-08-26).
    assert_eq!(f["intended_use"], "outside", "{f}");
    assert_eq!(
        f["intended_use_note"],
        "outside intended use: age 64 years, model population 0-17 years"
    );
    assert_eq!(f["flagged"], false);

    // The flagged DX is at the top of the worklist.
    let worklist = server.http("GET", "/api/v1/worklist", &[], b"").json();
    assert_eq!(
        worklist[0]["study_instance_uid"],
        dx_study.as_str(),
        "{worklist}"
    );

    // Each study holds a Comprehensive SR: found by C-FIND, retrieved by WADO-RS.
    for study in [&dx_study, &cr_study] {
        let sr_series = wait_for("the SR series", || {
            qido_sr_series(&server, study)[0]["0020000E"]["Value"][0]
                .as_str()
                .map(str::to_string)
        });
        let said = c_find_sr_series(&server, study);
        assert!(said.contains(&sr_series), "{said}");
        let r = server.http(
            "GET",
            &format!("/dicomweb/studies/{study}/series/{sr_series}"),
            &[("Accept", "multipart/related; type=\"application/dicom\"")],
            b"",
        );
        assert_eq!(r.status, 200);
        let body = String::from_utf8_lossy(&r.body);
        for expected in [
            "DICM",
            "1.2.840.10008.5.1.4.1.1.88.33",
            "chest-xray-pneumonia-kermany",
            "Pneumonia",
            "Research use only",
        ] {
            assert!(body.contains(expected), "the SR holds {expected:?}");
        }
    }
}

/// The pneumonia model's probability for the chest CR as `tramy models run` computes it.
fn pneumonia_probability_of_the_chest_cr(cr: &Path) -> f64 {
    let run = tramy(
        &[
            "models",
            "run",
            &repo_root()
                .join("models/chest-xray-pneumonia")
                .display()
                .to_string(),
            &cr.display().to_string(),
        ],
        &[],
    );
    assert_success(&run, "tramy models run");
    let scores: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    scores["scores"][0][0]["probability"].as_f64().unwrap()
}

fn study_uid(path: &Path) -> String {
    tramy::dicom::attributes::text(
        &dicom_object::open_file(path).unwrap(),
        dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
    )
}

#[test]
fn an_adult_chest_cr_is_scored_but_marked_outside_the_paediatric_models_intended_use() {
    let (_, images) = pneumonia_model();
    let tmp = tempfile::tempdir().unwrap();
    let adult = aged_copy(&chest_cr(), "045Y", tmp.path());
    let child = aged_copy(&chest_cr(), "004Y", tmp.path());
    let want = pneumonia_probability_of_the_chest_cr(&chest_cr());
    // A Kermany image the model flags (as the DX test shows), as if its patient were 45.
    let dx = tmp.path().join("dx.dcm");
    wrap_jpeg_as_dx(&images.join("PNEUMONIA/person1946_bacteria_4874.jpeg"), &dx);
    let adult_dx = aged_copy(&dx, "045Y", tmp.path());

    // Default settings: models_dir = "models", whose pneumonia model declares ages 0-17, "mark".
    let server = TramyServer::start();
    server.store_files(&[&adult, &child, &adult_dx], "storescu of the aged images");
    let pneumonia = |study: &str| {
        wait_for("a pneumonia finding", || {
            server
                .findings(study)
                .into_iter()
                .find(|f| f["model"] == "chest-xray-pneumonia-kermany")
        })
    };
    let (adult_study, child_study) = (study_uid(&adult), study_uid(&child));

    let f = pneumonia(&adult_study);
    assert_eq!(f["intended_use"], "outside", "{f}");
    assert_eq!(
        f["intended_use_note"],
        "outside intended use: age 45 years, model population 0-17 years"
    );
    assert_eq!(f["flagged"], false, "{f}");
    assert_eq!(f["urgency"], "routine", "never urgent: {f}");
    assert_eq!(f["view_position"], "PA");
    assert!(
        (f["probability"].as_f64().unwrap() - want).abs() < 1e-6,
        "{f}"
    );

    // The same image at 4 years old is scored as before and flagged by its threshold alone.
    let g = pneumonia(&child_study);
    assert_eq!(g["intended_use"], "inside", "{g}");
    assert_eq!(g["intended_use_note"], "");
    assert!(
        (g["probability"].as_f64().unwrap() - want).abs() < 1e-6,
        "{g}"
    );
    assert_eq!(g["flagged"], want >= 0.5, "{g}");
    assert_eq!(g["urgency"], "urgent", "the label's urgency: {g}");

    // Above the threshold, an adult's finding is still not flagged, nor urgent.
    let h = pneumonia(&study_uid(&adult_dx));
    assert!(h["probability"].as_f64().unwrap() >= 0.5, "{h}");
    assert_eq!(h["intended_use"], "outside", "{h}");
    assert_eq!(h["flagged"], false, "{h}");
    assert_eq!(h["urgency"], "routine", "{h}");
    assert_eq!(h["view_position"], "AP");

    // The worklist: the adult's study carries no flag and no urgency, and says why.
    let worklist = server.http("GET", "/api/v1/worklist", &[], b"").json();
    let entry = |study: &str| {
        worklist
            .as_array()
            .unwrap()
            .iter()
            .position(|e| e["study_instance_uid"] == study)
            .map(|i| (i, worklist[i].clone()))
            .unwrap_or_else(|| panic!("{study} on the worklist: {worklist}"))
    };
    let (adult_rank, adult_entry) = entry(&adult_study);
    assert_eq!(adult_entry["urgency"], "none", "{adult_entry}");
    assert_eq!(adult_entry["flags"], serde_json::json!([]));
    assert_eq!(
        adult_entry["outside_intended_use"],
        serde_json::json!(["pneumonia"])
    );
    let (child_rank, child_entry) = entry(&child_study);
    assert_eq!(child_entry["outside_intended_use"], serde_json::json!([]));
    if want >= 0.5 {
        assert!(
            child_rank < adult_rank,
            "the flagged child first: {worklist}"
        );
    }
    let (_, adult_dx_entry) = entry(&study_uid(&adult_dx));
    assert_eq!(adult_dx_entry["urgency"], "none", "{adult_dx_entry}");
    assert_eq!(adult_dx_entry["flags"], serde_json::json!([]));

    // Its report says so too (read back by dsrdump and dciodvfy in tests/sr_conformance.rs).
    let report = fetch_report(
        &server,
        &adult_study,
        "chest-xray-pneumonia-kermany",
        tmp.path(),
    );
    let report = String::from_utf8_lossy(&std::fs::read(report).unwrap()).to_string();
    assert!(
        report.contains("not flagged, not urgent (outside intended use: age 45 years"),
        "{report}"
    );
}

#[test]
fn with_outside_skip_an_adult_gets_no_finding_and_its_job_says_why() {
    pneumonia_model();
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let skip = [("outside = \"mark\"", "outside = \"skip\"")];
    shipped_manifest_copy(&models, "chest-xray-pneumonia", &skip);
    shipped_manifest_copy(&models, "chest-lung-segmentation", &[]);
    let server = TramyServer::start_with_config(&format!(
        "[triage]\nmodels_dir = \"{}\"\n",
        models.display()
    ));
    let adult = aged_copy(&chest_cr(), "045Y", tmp.path());
    server.store_files(&[&adult], "storescu of the adult chest CR");

    let job = wait_for("the skipped job", || {
        let jobs = server
            .http("GET", "/api/v1/triage/jobs?state=skipped", &[], b"")
            .json();
        jobs.as_array().and_then(|j| j.first().cloned())
    });
    assert_eq!(job["state"], "skipped");
    assert_eq!(
        job["last_error"],
        "outside intended use: age 45 years, model population 0-17 years"
    );
    assert_eq!(job["attempts"], 1, "skipped once, not retried: {job}");
    let study = study_uid(&adult);
    assert!(server.findings(&study).is_empty());
    assert_eq!(
        qido_sr_series(&server, &study).as_array().map(Vec::len),
        Some(0),
        "no report either"
    );
    let worklist = server.http("GET", "/api/v1/worklist", &[], b"").json();
    assert_eq!(worklist[0]["urgency"], "none", "{worklist}");
    assert_eq!(worklist[0]["pending_jobs"], 0, "{worklist}");
    assert_eq!(worklist[0]["failed_jobs"], 0, "{worklist}");
    assert_eq!(worklist[0]["skipped_jobs"], 1, "{worklist}");
}
