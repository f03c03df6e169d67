//! Objects on an S3-compatible store (issue #11 item 1): a real single-node Garage
//! (`tests/common/garage.rs`). What goes in by C-STORE and STOW-RS comes out byte for byte by
//! QIDO-RS, WADO-RS and C-GET; a bucket that refuses the key fails C-STORE with Out of Resources
//! and indexes nothing (invariant 1: acknowledged only after the store confirmed the object); a
//! bucket the key may not use fails start-up with what to set; an instance over the spool
//! threshold goes up as a multipart upload and comes back intact.
//!
//! Skipped (with `SKIPPED:`) when `garage` is not installed; `.ci/run` installs it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::garage::{self, Garage};
use common::*;

const STUDY: &str = "1.2.826.0.1.3680043.10.1452.78.1";
const SERIES: &str = "1.2.826.0.1.3680043.10.1452.78.1.1";

fn garage_or_skip() -> Option<&'static Garage> {
    let garage = garage::shared();
    if garage.is_none() {
        eprintln!("SKIPPED: garage is not installed (cargo install garage --locked --version 2.5.0; .ci/run installs it)");
    }
    garage
}

/// A server whose objects are under a fresh prefix of Garage's test bucket.
fn server_on_garage(toml: &str) -> (TramyServer, Vec<(String, String)>) {
    let env = garage::server_env();
    (TramyServer::start_with_env(toml, env.clone()), env)
}

fn sop_of(path: &Path) -> String {
    let obj = dicom_object::open_file(path).expect("sample parses");
    tramy::dicom::attributes::text(&obj, dicom_dictionary_std::tags::SOP_INSTANCE_UID)
}

fn class_of(path: &Path) -> String {
    let obj = dicom_object::open_file(path).expect("sample parses");
    tramy::dicom::attributes::text(&obj, dicom_dictionary_std::tags::SOP_CLASS_UID)
}

fn study_of(path: &Path) -> String {
    let obj = dicom_object::open_file(path).expect("sample parses");
    tramy::dicom::attributes::text(&obj, dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
}

fn wado_dataset(server: &TramyServer, study: &str, sop: &str) -> Vec<u8> {
    let qido = server.http(
        "GET",
        &format!("/dicomweb/studies/{study}/instances?SOPInstanceUID={sop}"),
        &[("Accept", "application/dicom+json")],
        b"",
    );
    assert_eq!(qido.status, 200, "QIDO-RS finds {sop}");
    let found = qido.json();
    let series = found[0]["0020000E"]["Value"][0]
        .as_str()
        .expect("series UID in QIDO-RS answer")
        .to_string();
    let r = server.http(
        "GET",
        &format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}"),
        // As stored: no conversion stands between the object and the comparison.
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
        b"",
    );
    assert_eq!(r.status, 200, "WADO-RS {sop}");
    single_part_dataset(&r.body)
}

#[test]
fn what_c_store_and_stow_put_on_garage_comes_back_byte_exact_by_qido_wado_and_c_get() {
    if garage_or_skip().is_none() {
        return;
    }
    let (server, env) = server_on_garage("[triage]\nenabled = false\n");
    let samples: Vec<PathBuf> = samples()
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("ct_small") || name.starts_with("mr_small")
        })
        .collect();
    assert!(samples.len() >= 2, "CT and MR samples present");
    let (by_dimse, by_stow) = samples.split_at(samples.len() / 2);

    let dimse: Vec<&Path> = by_dimse.iter().map(PathBuf::as_path).collect();
    server.store_files(&dimse, "storescu to a Garage-backed tramy");
    let parts: Vec<Vec<u8>> = by_stow.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let (content_type, body) = stow_body(&parts);
    let r = server.http(
        "POST",
        "/dicomweb/studies",
        &[("Content-Type", &content_type)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    assert_eq!(server.indexed_instances(), samples.len() as i64);
    let listed = garage::list(&env);
    assert_eq!(
        listed.len(),
        samples.len(),
        "one object per instance in the bucket: {listed:?}"
    );
    assert!(listed.iter().all(|(key, ..)| key.starts_with("studies/")));
    assert!(
        !server.data_dir.join("objects").exists(),
        "nothing written to the local folder"
    );

    for sample in &samples {
        assert!(
            wado_dataset(&server, &study_of(sample), &sop_of(sample)) == dataset_bytes(sample),
            "{} differs after WADO-RS",
            sample.display()
        );
    }

    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "get-exact".to_string(),
        "--out".into(),
        out.path().display().to_string(),
    ];
    for study in samples.iter().map(|p| study_of(p)).collect::<BTreeSet<_>>() {
        args.extend(["--study".into(), study]);
    }
    for class in samples.iter().map(|p| class_of(p)).collect::<BTreeSet<_>>() {
        args.extend(["--sop-class".into(), class]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = dimse_client(server.dimse_port, &args);
    for sample in &samples {
        let got = std::fs::read(out.path().join(format!("{}.raw", sop_of(sample))))
            .unwrap_or_else(|_| panic!("{} not retrieved by C-GET: {result}", sample.display()));
        assert!(
            got == dataset_bytes(sample),
            "{} differs after C-GET",
            sample.display()
        );
    }

    // Verification reads every object back from Garage and finds it intact.
    let report = server.cli(&["verify", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&report).expect("verify JSON");
    assert_eq!(report["checked"], samples.len(), "{report}");
    assert_eq!(
        report["damaged"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(
        report["missing"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
}

#[test]
fn c_store_to_a_bucket_that_refuses_the_key_fails_and_indexes_nothing() {
    let Some(garage) = garage_or_skip() else {
        return;
    };
    let bucket = "tramy-revoked";
    for args in [
        &["bucket", "create", bucket][..],
        &[
            "bucket",
            "allow",
            "--read",
            "--write",
            bucket,
            "--key",
            garage::KEY_ID,
        ],
    ] {
        assert_success(&garage.cli(args), &format!("garage {}", args.join(" ")));
    }
    let env = garage.env(&format!("s3://{bucket}/archive"));
    let server = TramyServer::start_with_env("[triage]\nenabled = false\n", env);
    let sample = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    server.store_files(&[&sample], "storescu while the key may write");
    assert_eq!(server.indexed_instances(), 1);

    assert_success(
        &garage.cli(&[
            "bucket",
            "deny",
            "--read",
            "--write",
            bucket,
            "--key",
            garage::KEY_ID,
        ]),
        "garage bucket deny",
    );
    let other = repo_root().join("dicom-samples/mr_small_explicit_le.dcm");
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("dataset.raw");
    std::fs::write(&dataset, dataset_bytes(&other)).unwrap();
    let dataset = dataset.display().to_string();
    let sop = sop_of(&other);
    let class = class_of(&other);
    let result = dimse_client(
        server.dimse_port,
        &[
            "send-raw",
            "--sop-class",
            &class,
            "--sop-instance",
            &sop,
            "--ts",
            EXPLICIT_LE,
            "--dataset-file",
            &dataset,
        ],
    );
    assert_eq!(result["status"], 0xA700, "Out of Resources: {result}");
    let comment = result["error_comment"].as_str().unwrap_or_default();
    assert!(comment.contains("object store"), "{comment}");
    assert!(
        !comment.contains("127.0.0.1"),
        "no store address told to the client: {comment}"
    );
    assert_eq!(
        server.indexed_instances(),
        1,
        "the refused instance is not indexed"
    );
    assert!(
        !server.log().contains(garage::SECRET),
        "no credential in the log"
    );
}

#[test]
fn start_up_with_a_bucket_the_key_may_not_use_fails_saying_what_to_set() {
    let Some(garage) = garage_or_skip() else {
        return;
    };
    garage.bucket_without_access("tramy-not-granted");
    let mut env = garage.env("s3://tramy-not-granted/archive");
    let tmp = tempfile::tempdir().unwrap();
    env.push(("TRAMY_DATA_DIR".into(), tmp.path().display().to_string()));
    env.push(("TRAMY_DIMSE_ADDR".into(), "127.0.0.1:0".into()));
    env.push(("TRAMY_HTTP_ADDR".into(), "127.0.0.1:0".into()));
    let out = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("TRAMY_CONFIG")
        .output()
        .expect("tramy runs");
    assert!(!out.status.success(), "start-up must fail");
    let said = String::from_utf8_lossy(&out.stderr);
    for needed in [
        "s3://tramy-not-granted/archive",
        "AWS_ACCESS_KEY_ID",
        "AWS_ENDPOINT_URL",
    ] {
        assert!(said.contains(needed), "names {needed}: {said}");
    }
    assert!(
        !said.contains(garage::SECRET),
        "no credential in the message"
    );

    // A URL tramy cannot use is refused before anything is asked.
    let out = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("TRAMY_OBJECT_STORE_URL", "ftp://host/objects")
        .env_remove("TRAMY_CONFIG")
        .output()
        .expect("tramy runs");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("s3://bucket/prefix"), "{said}");
}

/// A Part 10 multi-frame instance of `frames` 1024 x 1024 8-bit frames.
fn large_instance(dir: &Path, sop: &str, frames: u32) -> PathBuf {
    const FRAME: u32 = 1024 * 1024;
    let ids = MultiframeIds {
        sop,
        study: STUDY,
        series: SERIES,
        patient_id: "S3LARGE",
    };
    let mut ds = multiframe_head(&ids, u64::from(frames));
    // Every byte differs from its neighbours' frames, so a misplaced part would show.
    ds.extend((0..frames * FRAME).map(|i| (i.wrapping_mul(0x9E37_79B1) >> 24) as u8));
    let mut file = tramy::dicom::ReceivedInstance::from_dataset(EXPLICIT_LE, Default::default())
        .file_header(MF_SC, sop, Some("S3TEST"))
        .expect("meta group");
    file.extend(ds);
    let path = dir.join(format!("{sop}.dcm"));
    std::fs::write(&path, file).unwrap();
    path
}

#[test]
fn instances_over_the_spool_threshold_go_up_in_parts_and_come_back_intact() {
    if garage_or_skip().is_none() {
        return;
    }
    let (server, env) =
        server_on_garage("[triage]\nenabled = false\n[ingest]\nspool_above_kb = 1024\n");
    let tmp = tempfile::tempdir().unwrap();
    // 20 MiB: three parts of the 8 MiB upload chunks.
    let by_dimse = large_instance(tmp.path(), &format!("{SERIES}.1"), 20);
    let by_stow = large_instance(tmp.path(), &format!("{SERIES}.2"), 20);

    server.store_files(&[&by_dimse], "storescu of a 20 MiB instance");
    let (content_type, body) = stow_body(&[std::fs::read(&by_stow).unwrap()]);
    let r = server.http(
        "POST",
        "/dicomweb/studies",
        &[("Content-Type", &content_type)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let listed = garage::list(&env);
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (key, size, etag) in &listed {
        assert!(*size > 20 << 20, "{key} holds the whole instance");
        // S3 gives a multipart upload's object the ETag "<md5 of part md5s>-<parts>".
        assert!(etag.trim_matches('"').ends_with("-3"), "{key}: ETag {etag}");
    }
    for file in [&by_dimse, &by_stow] {
        assert!(
            wado_dataset(&server, STUDY, &sop_of(file)) == dataset_bytes(file),
            "{} differs after WADO-RS",
            file.display()
        );
    }
}
