//! `tramy eval` compares models honestly: DeLong's test of two correlated AUCs, Brier score and
//! reliability bins, each checked against an independent Python reference
//! (`tests/clients/eval_reference.py`: numpy/scipy DeLong, sklearn's `brier_score_loss` and
//! `calibration_curve`); breakdowns by sex, facility and age group with their counts; labels
//! from doctors' feedback.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use dicom_core::VR;
use dicom_dictionary_std::tags;

/// Runs `tramy eval` with `args` (plus `--out` and `--roc-dir` in `dir`); the printed text and
/// the JSON report.
fn eval(args: &[&str], dir: &Path) -> (String, serde_json::Value) {
    let out = dir.join("eval.json");
    let run = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .arg("eval")
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--roc-dir")
        .arg(dir.join("plots"))
        .output()
        .unwrap();
    assert_success(&run, "tramy eval");
    let report = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (text, report)
}

/// The pneumonia model with another preprocessing (Lanczos resize instead of nearest) and its
/// own name, in `dir`, sharing the converted weights.
fn lanczos_variant(model: &Path, dir: &Path) -> PathBuf {
    let folder = dir.join("pneumonia-lanczos");
    std::fs::create_dir_all(&folder).unwrap();
    let manifest = std::fs::read_to_string(model.join("model.toml")).unwrap();
    assert!(manifest.contains("resize_filter = \"nearest\""));
    let manifest = manifest
        .replace(
            "resize_filter = \"nearest\"",
            "resize_filter = \"lanczos3\"",
        )
        .replace(
            "name = \"chest-xray-pneumonia-kermany\"",
            "name = \"pneumonia-lanczos\"",
        );
    std::fs::write(folder.join("model.toml"), manifest).unwrap();
    std::os::unix::fs::symlink(model.join("model.onnx"), folder.join("model.onnx")).unwrap();
    folder
}

/// The 16 Kermany images in name order, with whether each shows pneumonia.
fn kermany(images: &Path) -> Vec<(PathBuf, bool)> {
    let mut files: Vec<(PathBuf, bool)> = ["PNEUMONIA", "NORMAL"]
        .iter()
        .flat_map(|class| {
            std::fs::read_dir(images.join(class))
                .unwrap()
                .map(move |e| (e.unwrap().path(), *class == "PNEUMONIA"))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 16);
    files
}

/// What the Python reference says about `y`, `a`, `b`.
fn reference(y: &[bool], a: &[f64], b: &[f64]) -> serde_json::Value {
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/clients/eval_reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::json!({
        "y": y.iter().map(|t| u8::from(*t)).collect::<Vec<_>>(),
        "a": a,
        "b": b,
    });
    serde_json::to_writer(child.stdin.take().unwrap(), &input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, "eval_reference.py");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn close(ours: &serde_json::Value, theirs: &serde_json::Value, what: &str) {
    let (o, t) = (ours.as_f64().unwrap(), theirs.as_f64().unwrap());
    assert!((o - t).abs() <= 1e-6, "{what}: tramy {o} vs reference {t}");
}

#[test]
fn two_models_on_the_kermany_images_match_the_python_reference() {
    let (model, images) = pneumonia_model();
    let tmp = tempfile::tempdir().unwrap();
    let other = lanczos_variant(&model, tmp.path());
    // Sex from a labels CSV column: the first 5 of each class F, the other 3 M.
    let mut csv = String::from("path,pneumonia,sex\n");
    let (mut pneumonia_seen, mut normal_seen) = (0, 0);
    for (path, positive) in kermany(&images) {
        let seen = if positive {
            &mut pneumonia_seen
        } else {
            &mut normal_seen
        };
        *seen += 1;
        let sex = if *seen <= 5 { "F" } else { "m" };
        csv += &format!("{},{},{sex}\n", path.display(), u8::from(positive));
    }
    let labels = tmp.path().join("labels.csv");
    std::fs::write(&labels, csv).unwrap();
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--model",
        other.to_str().unwrap(),
        "--data",
        labels.to_str().unwrap(),
    ];
    let (text, report) = eval(&args, tmp.path());

    // Both models' per-file scores, matched by path, into the reference.
    let scores = |i: usize| -> Vec<(String, f64, bool)> {
        report[i]["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["path"].as_str().unwrap().to_string(),
                    s["probabilities"]["pneumonia"].as_f64().unwrap(),
                    s["truth"]["pneumonia"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let (a, b) = (scores(0), scores(1));
    assert_eq!(a.len(), 16);
    assert_eq!(
        a.iter().map(|s| &s.0).collect::<Vec<_>>(),
        b.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    let y: Vec<bool> = a.iter().map(|s| s.2).collect();
    let pa: Vec<f64> = a.iter().map(|s| s.1).collect();
    let pb: Vec<f64> = b.iter().map(|s| s.1).collect();
    assert_ne!(pa, pb, "the two preprocessings score differently");
    let expected = reference(&y, &pa, &pb);

    let comparison = &report[0]["comparisons"][0];
    assert_eq!(comparison["against"], "pneumonia-lanczos", "{comparison}");
    assert_eq!(comparison["examples"], 16);
    let delong = &comparison["delong"];
    close(&delong["auc_a"], &expected["sklearn_auc_a"], "AUC A");
    close(&delong["auc_b"], &expected["sklearn_auc_b"], "AUC B");
    close(&delong["difference"], &expected["difference"], "difference");
    close(&delong["se"], &expected["se"], "standard error");
    close(&delong["p_value"], &expected["p_value"], "DeLong p-value");
    assert_eq!(delong["identical"], false);
    assert!(text.contains("DeLong"), "{text}");

    // Calibration of the first model: Brier and the non-empty bins as sklearn computes them.
    let label = &report[0]["labels"][0];
    close(&label["brier"], &expected["brier_a"], "Brier score");
    let bins: Vec<&serde_json::Value> = label["reliability"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["count"].as_u64().unwrap() > 0)
        .collect();
    assert_eq!(label["reliability"].as_array().unwrap().len(), 10);
    let observed = expected["calibration_observed_a"].as_array().unwrap();
    let predicted = expected["calibration_predicted_a"].as_array().unwrap();
    assert_eq!(bins.len(), observed.len(), "{label}");
    for ((bin, o), p) in bins.iter().zip(observed).zip(predicted) {
        close(&bin["observed"], o, "observed fraction");
        close(&bin["mean_predicted"], p, "mean predicted");
    }
    let counted: u64 = bins.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 16);
    assert!(label["ece"].as_f64().unwrap() >= 0.0);
    assert!(text.contains("Brier"), "{text}");

    // The breakdown by sex: F has 5 + 5 (figures), M 3 + 3 ("n too small" under 5).
    let sex: Vec<&serde_json::Value> = label["strata"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["by"] == "sex")
        .collect();
    assert_eq!(sex.len(), 2, "{sex:?}");
    assert_eq!(
        (&sex[0]["value"], &sex[0]["positives"], &sex[0]["negatives"]),
        (&"F".into(), &5.into(), &5.into())
    );
    assert!(sex[0]["auc"].is_f64() && sex[0]["too_small"] == false);
    assert_eq!(
        (&sex[1]["value"], &sex[1]["positives"], &sex[1]["negatives"]),
        (&"M".into(), &3.into(), &3.into())
    );
    assert!(sex[1]["auc"].is_null() && sex[1]["too_small"] == true);
    let confusion = |s: &serde_json::Value| -> Vec<u64> {
        s["confusion"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let (f, m) = (confusion(sex[0]), confusion(sex[1]));
    let whole = confusion(label);
    assert_eq!(
        (0..4).map(|i| f[i] + m[i]).collect::<Vec<_>>(),
        whole,
        "the strata partition the whole confusion matrix"
    );
    assert!(text.contains("n too small"), "{text}");

    for name in ["roc-pneumonia.png", "reliability-pneumonia.png"] {
        let png = std::fs::read(tmp.path().join("plots").join(name)).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "{name}");
    }
}

#[test]
fn a_model_compared_with_itself_is_identical() {
    let (model, images) = pneumonia_model();
    let tmp = tempfile::tempdir().unwrap();
    let m = model.to_str().unwrap();
    let args = [
        "--model",
        m,
        "--model",
        m,
        "--data",
        images.to_str().unwrap(),
    ];
    let (text, report) = eval(&args, tmp.path());
    let delong = &report[0]["comparisons"][0]["delong"];
    assert_eq!(delong["difference"], 0.0, "{delong}");
    assert_eq!(delong["p_value"], 1.0, "{delong}");
    assert_eq!(delong["identical"], true, "{delong}");
    assert_eq!(delong["auc_a"], report[0]["labels"][0]["auc"]);
    assert!(
        text.contains("identical (difference 0 with no variance, p = 1)"),
        "{text}"
    );
    assert!(
        report[1]["comparisons"].as_array().unwrap().is_empty(),
        "each pair once"
    );
}

#[test]
fn labels_from_feedback_follow_the_doctors_and_breakdowns_read_the_headers() {
    let (model, images) = pneumonia_model();
    let tmp = tempfile::tempdir().unwrap();
    let files = kermany(&images);
    // Six images as DX with a sex, facility and age in the header; the export's paths are
    // relative to its labels.csv.
    let headers = [
        ("F", "Hospital A", "004Y"),
        ("F", "Hospital A", "003Y"),
        ("M", "Hospital B", "045Y"),
        ("F", "Hospital B", "002Y"),
        ("M", "Hospital A", "070Y"),
        ("M", "Hospital B", "001Y"),
    ];
    let picked = [0usize, 1, 2, 8, 9, 10];
    let mut names = Vec::new();
    for (n, (i, (sex, facility, age))) in picked.iter().zip(headers).enumerate() {
        let wrapped = tmp.path().join(format!("wrapped-{n}.dcm"));
        wrap_jpeg_as_dx(&files[*i].0, &wrapped);
        let set = [
            (tags::PATIENT_SEX, VR::CS, sex),
            (tags::INSTITUTION_NAME, VR::LO, facility),
            (tags::PATIENT_AGE, VR::AS, age),
        ];
        edited_copy(&wrapped, tmp.path(), &format!("case-{n}"), &set, &[]);
        names.push(format!("case-{n}.dcm"));
    }
    // flagged, agree, disagree → truth: agreed keeps the flag, disagreed flips it; no feedback
    // and both are excluded. The facility column overrides case-3's header.
    let rows = [
        ("1", "1", "0", ""),
        ("1", "0", "1", ""),
        ("0", "2", "0", ""),
        ("0", "0", "1", "Clinic C"),
        ("1", "0", "0", ""),
        ("0", "1", "1", ""),
    ];
    let mut csv = String::from(
        "sop_instance_uid,path,model,label,flagged,feedback_agree,feedback_disagree,facility\n",
    );
    for (n, (flagged, agree, disagree, facility)) in rows.iter().enumerate() {
        csv += &format!(
            "1.2.3.{n},{},chest-xray-pneumonia-kermany,pneumonia,{flagged},{agree},{disagree},{facility}\n",
            names[n]
        );
    }
    std::fs::write(tmp.path().join("labels.csv"), csv).unwrap();
    let labels = tmp.path().join("labels.csv");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--data",
        labels.to_str().unwrap(),
        "--labels-from",
        "feedback",
        "--min-stratum",
        "1",
    ];
    let (text, report) = eval(&args, tmp.path());
    let r = &report[0];
    assert_eq!(
        r["feedback"],
        serde_json::json!({"labelled": 4, "no_feedback": 1, "conflicting": 1, "no_finding": 0}),
        "{r}"
    );
    assert!(
        text.contains("1 without feedback and 1 conflicting excluded"),
        "{text}"
    );
    assert_eq!(r["examples"], 4);
    let truth: Vec<(String, bool)> = r["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let path = PathBuf::from(s["path"].as_str().unwrap());
            (
                path.file_name().unwrap().to_string_lossy().to_string(),
                s["truth"]["pneumonia"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        truth,
        [
            ("case-0.dcm".to_string(), true),
            ("case-1.dcm".to_string(), false),
            ("case-2.dcm".to_string(), false),
            ("case-3.dcm".to_string(), true),
        ]
    );
    // Breakdowns from the headers of the four labelled cases, the CSV's facility overriding.
    let strata = r["labels"][0]["strata"].as_array().unwrap();
    let count = |by: &str, value: &str| -> (u64, u64) {
        strata
            .iter()
            .find(|s| s["by"] == by && s["value"] == value)
            .map(|s| {
                (
                    s["positives"].as_u64().unwrap(),
                    s["negatives"].as_u64().unwrap(),
                )
            })
            .unwrap_or_else(|| panic!("no stratum {by}={value}: {strata:?}"))
    };
    assert_eq!(count("sex", "F"), (2, 1));
    assert_eq!(count("sex", "M"), (0, 1));
    assert_eq!(count("facility", "Hospital A"), (1, 1));
    assert_eq!(count("facility", "Hospital B"), (0, 1));
    assert_eq!(count("facility", "Clinic C"), (1, 0));
    assert_eq!(count("age_group", "1-4"), (2, 1));
    assert_eq!(count("age_group", "18-64"), (0, 1));
    assert_eq!(count("modality", "DX"), (2, 2));
}
