//! De-identified research sets (issue #15 item 6): a researcher with a research grant exports
//! its studies as a ZIP (`POST /api/v1/research/exports`), de-identified per PS3.15 Annex E.
//! Read back with pydicom (`tests/clients/research_check.py`), no original identifier survives
//! anywhere in the set (every element value of every file, meta included, sequences recursed,
//! and labels.csv, manifest.json, README.txt); `dciodvfy` finds no error in an exported file
//! that it did not find in the original; UIDs map the same way in every export (API and CLI);
//! the burned-in image is left out and counted; a researcher without a grant gets an empty set;
//! a clinician is refused.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn study_of(path: &Path) -> String {
    let obj = dicom_object::open_file(path).unwrap();
    tramy::dicom::attributes::text(&obj, dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
}

/// The identifying instances (`research_prepare.py`) and the identifiers they hold.
struct Prepared {
    ct: PathBuf,
    burned: PathBuf,
    dx: PathBuf,
    identifiers: PathBuf,
}

fn prepare(dir: &Path) -> Prepared {
    let (_, images) = pneumonia_model();
    let wrapped = dir.join("wrapped-dx.dcm");
    // Scored 0.999 by the model (keras-reference.json): flagged.
    wrap_jpeg_as_dx(
        &images.join("PNEUMONIA/person1946_bacteria_4874.jpeg"),
        &wrapped,
    );
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/research_prepare.py"))
        .arg(dir)
        .arg(pydicom_test_file("CT_small.dcm"))
        .arg(&wrapped)
        .output()
        .unwrap();
    assert_success(&out, "research_prepare.py");
    let identifiers = dir.join("identifiers.json");
    std::fs::write(&identifiers, &out.stdout).unwrap();
    Prepared {
        ct: dir.join("ct.dcm"),
        burned: dir.join("burned.dcm"),
        dx: dir.join("dx.dcm"),
        identifiers,
    }
}

fn post(server: &TramyServer, token: &str, path: &str, body: serde_json::Value) -> HttpResponse {
    server.http(
        "POST",
        path,
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

/// A research grant of `patient`'s studies (or one study) at LOCAL to facility R, under the
/// patient's research consent; its id.
fn research_grant(server: &TramyServer, patient: &str, study: Option<&str>) -> String {
    let token = server.token().to_string();
    let consent = post(
        server,
        &token,
        &format!("/api/v1/patients/{}/consents", patient.replace('|', "%7C")),
        serde_json::json!({"purpose": "research", "recipient": "R", "source": "paper"}),
    );
    assert_eq!(
        consent.status,
        201,
        "{}",
        String::from_utf8_lossy(&consent.body)
    );
    let mut grant = serde_json::json!({
        "to_facility": "R", "from_facility": "LOCAL",
        "scope": ["metadata", "images", "findings"],
        "expires_at": (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339(),
        "consent_id": consent.json()["id"],
    });
    match study {
        Some(study) => grant["study_instance_uid"] = study.into(),
        None => grant["patient"] = patient.into(),
    }
    let granted = post(server, &token, "/api/v1/grants", grant);
    assert_eq!(
        granted.status,
        201,
        "{}",
        String::from_utf8_lossy(&granted.body)
    );
    granted.json()["id"].as_str().unwrap().to_string()
}

/// Exports as `token` with `body`, unzipped under `dir`.
fn export(server: &TramyServer, token: &str, body: serde_json::Value, dir: &Path) -> PathBuf {
    let r = post(server, token, "/api/v1/research/exports", body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/zip"));
    zip::ZipArchive::new(std::io::Cursor::new(r.body))
        .expect("a whole ZIP")
        .extract(dir)
        .unwrap();
    dir.to_path_buf()
}

/// What `research_check.py` reads back from a set.
fn check(set: &Path, identifiers: &Path) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/research_check.py"))
        .arg(set)
        .arg(identifiers)
        .output()
        .unwrap();
    assert_success(&out, "research_check.py");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `dciodvfy`'s error lines for a file (Debian dicom3tools, installed by `.ci/run`).
fn dciodvfy_errors(file: &Path) -> BTreeSet<String> {
    let out = Command::new("dciodvfy")
        .arg(file)
        .output()
        .expect("dciodvfy runs: install Debian dicom3tools (see .ci/run)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    said.lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_string)
        .collect()
}

/// The instance of `modality` in a set read back.
fn instance<'a>(set: &'a serde_json::Value, modality: &str) -> &'a serde_json::Value {
    set["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["modality"] == modality)
        .unwrap_or_else(|| panic!("no {modality} in {set}"))
}

/// The set is de-identified: no identifier, no private attribute, the marks PS3.15 E.1.1 asks
/// for, new UIDs in the meta group too.
fn assert_deidentified(set: &serde_json::Value) {
    assert_eq!(set["leaks"], serde_json::json!([]), "identifiers survived");
    assert_eq!(
        set["private"],
        serde_json::json!([]),
        "private attributes survived"
    );
    for i in set["instances"].as_array().unwrap() {
        assert_eq!(i["identity_removed"], "YES", "{i}");
        assert_eq!(i["longitudinal"], "MODIFIED", "{i}");
        assert_eq!(i["meta_sop"], i["sop"], "{i}");
        assert!(i["sop"].as_str().unwrap().starts_with("2.25."), "{i}");
        assert!(i["patient_id"].as_str().unwrap().starts_with("RS"), "{i}");
        assert_eq!(
            i["patient_name"].as_str().unwrap(),
            format!("{}^", i["patient_id"].as_str().unwrap()),
            "{i}"
        );
        let codes = i["codes"].to_string();
        assert!(codes.contains("113100") && codes.contains("113107"), "{i}");
        assert!(!codes.contains("113101"), "clean pixel is not claimed: {i}");
    }
}

#[test]
fn a_researcher_exports_a_deidentified_set_that_keeps_no_identifier() {
    let tmp = tempfile::tempdir().unwrap();
    let files = prepare(tmp.path());
    let server = TramyServer::start();
    server.store_files(
        &[&files.ct, &files.burned, &files.dx],
        "the identifying CT, its burned-in sibling and the chest DX",
    );
    let dx_study = study_of(&files.dx);
    wait_long("triage of the chest DX", 300, || {
        let list = server.http("GET", "/api/v1/worklist", &[], b"").json();
        list.as_array()?
            .iter()
            .find(|e| e["study_instance_uid"] == dx_study.as_str() && e["pending_jobs"] == 0)
            .cloned()
    });
    for (code, name) in [("R", "Research unit"), ("Q", "Other research unit")] {
        server.cli(&["facility", "add", code, "--name", name]);
    }
    let token = |facility: &str, role: &str| {
        server.cli(&["token", "create", "--facility", facility, "--role", role])
    };
    let (researcher, stranger, clinician) = (
        token("R", "researcher"),
        token("Q", "researcher"),
        token("LOCAL", "clinician"),
    );
    let ct_grant = research_grant(&server, "BVBACHMAI|VN778899", None);
    research_grant(&server, "BVCHORAY|VN112233", Some(&dx_study));

    // One grant: the CT patient's two studies; the burned-in one is left out and counted.
    let one = check(
        &export(
            &server,
            &researcher,
            serde_json::json!({ "grant": ct_grant }),
            &tmp.path().join("one"),
        ),
        &files.identifiers,
    );
    assert_deidentified(&one);
    assert_eq!(one["instances"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["manifest"]["studies"], 2, "{one}");
    assert_eq!(
        one["manifest"]["excluded"]["burned_in_annotation"], 1,
        "{one}"
    );
    assert_eq!(
        instance(&one, "CT")["transfer_syntax"],
        "1.2.840.10008.1.2.1",
        "the stored transfer syntax is kept"
    );

    // A doctor of the DX's facility agrees with its finding, in a comment that names the
    // institution: the verdict is counted in labels.csv, the comment (free text) never exported.
    let findings = server
        .http(
            "GET",
            &format!("/api/v1/studies/{dx_study}/findings"),
            &[],
            b"",
        )
        .json();
    let finding = findings.as_array().unwrap()[0]["id"].as_i64().unwrap();
    let agreed = post(
        &server,
        &clinician,
        &format!("/api/v1/studies/{dx_study}/findings/{finding}/feedback"),
        serde_json::json!({ "verdict": "agree", "comment": "Seen at JFK IMAGING CENTER too" }),
    );
    assert_eq!(
        agreed.status,
        201,
        "{}",
        String::from_utf8_lossy(&agreed.body)
    );

    // Every research study the researcher may see: the CT and the chest DX with its finding.
    let all_dir = export(
        &server,
        &researcher,
        serde_json::json!({}),
        &tmp.path().join("all"),
    );
    let all = check(&all_dir, &files.identifiers);
    assert_deidentified(&all);
    let ct = instance(&all, "CT");
    for level in ["study", "series", "sop"] {
        assert_eq!(ct[level], instance(&one, "CT")[level], "{level} maps alike");
    }
    let dx = instance(&all, "DX");
    assert_eq!(dx["transfer_syntax"], "1.2.840.10008.1.2.4.50");
    assert_ne!(
        dx["patient_id"], ct["patient_id"],
        "one subject per patient"
    );
    let dx_rows: Vec<&serde_json::Value> = all["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["sop_instance_uid"] == dx["sop"])
        .collect();
    let flagged = dx_rows
        .iter()
        .find(|r| r["label"] == "pneumonia")
        .unwrap_or_else(|| panic!("the DX's finding in labels.csv: {dx_rows:?}"));
    assert_eq!(flagged["flagged"], "true", "{flagged}");
    assert_eq!(flagged["sex"], "F");
    assert_eq!(flagged["age_group"], "0-9");
    assert_eq!(flagged["research_subject_id"], dx["patient_id"]);
    assert!(
        !flagged["threshold"].as_str().unwrap().is_empty(),
        "{flagged}"
    );
    assert!(
        !flagged["model_version"].as_str().unwrap().is_empty(),
        "{flagged}"
    );
    assert_eq!(flagged["feedback_agree"], "1", "{flagged}");
    assert_eq!(flagged["feedback_disagree"], "0", "{flagged}");
    assert_eq!(
        flagged["path"], dx["path"],
        "labels.csv names the file in the set"
    );
    // `tramy eval` takes the set's labels.csv as doctors' labels.
    let report = tmp.path().join("eval.json");
    server.cli(&[
        "eval",
        "--model",
        repo_root()
            .join("models/chest-xray-pneumonia")
            .to_str()
            .unwrap(),
        "--data",
        all_dir.join("labels.csv").to_str().unwrap(),
        "--labels-from",
        "feedback",
        "--out",
        report.to_str().unwrap(),
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report[0]["feedback"]["labelled"], 1, "{report}");

    // dciodvfy finds nothing wrong that was not wrong in the original.
    for (original, exported) in [(&files.ct, ct), (&files.dx, dx)] {
        let path = all_dir.join(exported["path"].as_str().unwrap());
        let before = dciodvfy_errors(original);
        let new: Vec<String> = dciodvfy_errors(&path)
            .difference(&before)
            .cloned()
            .collect();
        assert!(
            new.is_empty(),
            "{}: new dciodvfy errors {new:#?}",
            exported["path"]
        );
    }

    // The CLI, as tramy itself, maps the same UIDs.
    let cli_dir = tmp.path().join("cli");
    server.cli(&[
        "research",
        "export",
        "--grant",
        &ct_grant,
        "--out",
        cli_dir.to_str().unwrap(),
    ]);
    let cli = check(&cli_dir, &files.identifiers);
    assert_deidentified(&cli);
    assert_eq!(instance(&cli, "CT")["sop"], ct["sop"]);

    // The exports are audited with their counts.
    let audit = server.http("GET", "/api/v1/audit", &[], b"");
    let text = String::from_utf8_lossy(&audit.body);
    assert!(
        text.contains("research export: 2 studies, 1 instances, 1 left out"),
        "{text}"
    );

    // A researcher of a facility without a research grant: an empty set, not a refusal (what
    // it may not see is not found, never forbidden; the role does allow exports).
    let none = check(
        &export(
            &server,
            &stranger,
            serde_json::json!({}),
            &tmp.path().join("none"),
        ),
        &files.identifiers,
    );
    assert_eq!(none["instances"], serde_json::json!([]));
    assert_eq!(none["manifest"]["studies"], 0);
    // Another facility's grant is not found.
    let theirs = post(
        &server,
        &stranger,
        "/api/v1/research/exports",
        serde_json::json!({ "grant": ct_grant }),
    );
    assert_eq!(theirs.status, 404);
    // A clinician is refused: care access is not research access.
    let refused = post(
        &server,
        &clinician,
        "/api/v1/research/exports",
        serde_json::json!({}),
    );
    assert_eq!(refused.status, 403);
    assert!(!String::from_utf8_lossy(&refused.body).contains("VN778899"));

    // Filters narrow the set; a malformed one is refused with the reason.
    let dx_only = check(
        &export(
            &server,
            &researcher,
            serde_json::json!({ "modality": "DX" }),
            &tmp.path().join("dx-only"),
        ),
        &files.identifiers,
    );
    assert_eq!(dx_only["manifest"]["studies"], 1, "{dx_only}");
    assert_eq!(instance(&dx_only, "DX")["sop"], dx["sop"]);
    let bad = post(
        &server,
        &researcher,
        "/api/v1/research/exports",
        serde_json::json!({ "from": "yesterday" }),
    );
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("YYYY-MM-DD"));

    // More studies than one export may hold (the CT grant opens two): refused, never cut short
    // silently; nothing is written.
    let capped = tmp.path().join("capped");
    let out = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .args(["research", "export", "--grant", &ct_grant, "--out"])
        .arg(&capped)
        .env("TRAMY_DATA_DIR", &server.data_dir)
        .envs(server.process_env())
        .env_remove("TRAMY_CONFIG")
        .env("TRAMY_RESEARCH__MAX_STUDIES_PER_EXPORT", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_studies_per_export"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!capped.join("manifest.json").exists());
}
