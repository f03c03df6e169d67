//! The CUDA path of AI triage.
//!
//! Everywhere: asking for CUDA with a runtime that cannot use it is a clear error, never a silent
//! run on the CPU. On a GPU machine (`TRAMY_TEST_CUDA=1`, with `ORT_DYLIB_PATH` and
//! `LD_LIBRARY_PATH` set up from the onnxruntime-gpu wheel as the README's GPU section says):
//! the pneumonia model gives the same scores on CUDA as on the CPU, in `tramy eval` and on
//! arrival in a server configured with `device = "cuda"`.

mod common;

use std::process::Command;

use common::*;

fn cuda_is_set_up() -> bool {
    std::env::var("TRAMY_TEST_CUDA").is_ok_and(|v| v == "1")
}

#[test]
fn asking_for_cuda_with_a_cpu_only_runtime_is_an_error_not_a_silent_cpu_run() {
    if cuda_is_set_up() {
        eprintln!("TRAMY_TEST_CUDA=1: this machine's runtime can use CUDA; nothing to refuse");
        return;
    }
    // The library the build fetched is the CPU-only `onnxruntime` wheel's.
    let check = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .args(["models", "check", "--device", "cuda"])
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(!check.status.success(), "{said}");
    assert!(
        said.contains("CUDA") && said.contains("onnxruntime-gpu"),
        "the error says what is wrong and what to do: {said}"
    );

    let server = std::panic::catch_unwind(|| {
        TramyServer::start_with_config("[triage]\ndevice = \"cuda\"\n")
    });
    assert!(
        server.is_err(),
        "a server asked to triage on CUDA must not start on the CPU instead"
    );
}

#[test]
fn cuda_scores_match_the_cpu_in_eval_and_on_arrival() {
    if !cuda_is_set_up() {
        eprintln!("set TRAMY_TEST_CUDA=1 on a GPU machine (README: GPU) to run the CUDA path");
        return;
    }
    let (model, images) = pneumonia_model();
    let tmp = tempfile::tempdir().unwrap();
    let mut reports = Vec::new();
    for device in ["cpu", "cuda"] {
        let out = tmp.path().join(format!("{device}.json"));
        let run = Command::new(env!("CARGO_BIN_EXE_tramy"))
            .args(["eval", "--device", device, "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&images)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert_success(&run, &format!("tramy eval --device {device}"));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(report[0]["device"], device);
        reports.push(report);
    }
    let probabilities = |r: &serde_json::Value| -> Vec<f64> {
        r[0]["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["probabilities"]["pneumonia"].as_f64().unwrap())
            .collect()
    };
    let (cpu, cuda) = (probabilities(&reports[0]), probabilities(&reports[1]));
    assert_eq!(cpu.len(), 16);
    for (a, b) in cpu.iter().zip(&cuda) {
        assert!((a - b).abs() < 1e-3, "CPU {a} vs CUDA {b}");
    }

    // On arrival, in a server running its models on the GPU.
    let dx = tmp.path().join("dx.dcm");
    wrap_jpeg_as_dx(&images.join("PNEUMONIA/person1946_bacteria_4874.jpeg"), &dx);
    let server = TramyServer::start_with_config("[triage]\ndevice = \"cuda\"\n");
    // JPEG Baseline: store_files proposes each file's own transfer syntax.
    server.store_files(&[&dx], "storescu of the DX");
    let study = tramy::dicom::attributes::text(
        &dicom_object::open_file(&dx).unwrap(),
        dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
    );
    let finding = wait_for("a finding on CUDA", || {
        let r = server.http(
            "GET",
            &format!("/api/v1/studies/{study}/findings"),
            &[],
            b"",
        );
        r.json().as_array().and_then(|v| {
            v.iter()
                .find(|f| f["model"] == "chest-xray-pneumonia-kermany")
                .cloned()
        })
    });
    assert_eq!(finding["flagged"], true, "{finding}");
}
