//! Priors from peers (issue #10 item 5): a hospital's clinician fetches a referred patient's
//! earlier studies from the station's tramy with `POST /api/v1/peers/station/retrieve`. The
//! station's grants decide what comes: nothing without one, the patient's studies with one;
//! they are filed at the hospital as its facility's, queryable at once, fetched once, and both
//! servers audit the exchange.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

const PATIENT: &str = "CCCD|079012345678";
const PATIENT_ID: &str = "079012345678";

/// The station: facilities FA (its own) and FB (the hospital), an FA clinician who stores the
/// patient's studies and manages consent, and the `clinician` token for FB that the station
/// issues to the hospital.
struct Station {
    server: TramyServer,
    fa_clinician: String,
    token_for_fb: String,
}

fn station() -> Station {
    station_with("[triage]\nenabled = false\n")
}

/// The same with `config`.
fn station_with(config: &str) -> Station {
    let server = TramyServer::start_with_config(config);
    server.cli(&["facility", "add", "FA", "--name", "Commune station A"]);
    server.cli(&["facility", "add", "FB", "--name", "Provincial hospital B"]);
    let token = |facility: &str| {
        server.cli(&[
            "token",
            "create",
            "--facility",
            facility,
            "--role",
            "clinician",
        ])
    };
    let (fa_clinician, token_for_fb) = (token("FA"), token("FB"));
    Station {
        server,
        fa_clinician,
        token_for_fb,
    }
}

/// The hospital (facility FB), with the station as peer "station" presenting the station's token
/// for FB; `settings` go into `[forwarding]`.
fn hospital(dir: &Path, station: &Station, settings: &str) -> TramyServer {
    let token_file = dir.join("station.token");
    std::fs::write(&token_file, &station.token_for_fb).unwrap();
    let server = TramyServer::start_with_config(&format!(
        r#"
[triage]
enabled = false

[[peers]]
name = "station"
dicomweb_url = "{}"
token_file = "{}"
facility = "FA"

[forwarding]
{settings}
"#,
        station.server.dicomweb(),
        token_file.display()
    ));
    server.cli(&["facility", "add", "FB", "--name", "Provincial hospital B"]);
    server.cli(&["facility", "add", "FC", "--name", "Another hospital"]);
    server
}

fn token(server: &TramyServer, facility: &str, role: &str) -> String {
    server.cli(&["token", "create", "--facility", facility, "--role", role])
}

/// A study of `n` instances of `patient_id` stored at the station by FA over STOW-RS; its UID.
fn store_study(station: &Station, dir: &Path, n: usize, patient_id: &str) -> String {
    let out = std::process::Command::new(python())
        .arg(repo_root().join("tests/clients/make_study.py"))
        .arg(dir)
        .arg(n.to_string())
        .args(["--patient-id", patient_id, "--issuer", "CCCD"])
        .output()
        .unwrap();
    assert_success(&out, "make_study.py");
    let study = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let parts: Vec<Vec<u8>> = walk(dir)
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let (content_type, body) = stow_body(&parts);
    let r = station.server.http(
        "POST",
        "/dicomweb/studies",
        &[
            ("Authorization", &format!("Bearer {}", station.fa_clinician)),
            ("Content-Type", &content_type),
            ("Accept", "application/dicom+json"),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    study
}

fn post_json(server: &TramyServer, token: &str, path: &str, body: &Value) -> HttpResponse {
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

fn retrieve(hospital: &TramyServer, token: &str, body: Value) -> HttpResponse {
    post_json(hospital, token, "/api/v1/peers/station/retrieve", &body)
}

/// A retrieval that must succeed: its answer.
fn retrieved(hospital: &TramyServer, token: &str, body: Value) -> Value {
    let r = retrieve(hospital, token, body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// The station's FA clinician records the patient's consent to a referral to FB and grants FB
/// the patient's studies.
fn grant_patient_to_fb(station: &Station) {
    let r = post_json(
        &station.server,
        &station.fa_clinician,
        "/api/v1/patients/CCCD%7C079012345678/consents",
        &json!({"purpose": "referral", "recipient": "FB", "source": "vneid", "evidence": "VNeID tx 7"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let consent = r.json()["id"].as_str().unwrap().to_string();
    let r = post_json(
        &station.server,
        &station.fa_clinician,
        "/api/v1/grants",
        &json!({
            "to_facility": "FB", "patient": PATIENT,
            "scope": ["metadata", "images", "findings"],
            "expires_at": (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339(),
            "consent_id": consent
        }),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

/// Study UIDs of the patient that `token` finds at `server` over QIDO-RS.
fn qido_studies(server: &TramyServer, token: &str) -> Vec<String> {
    let r = server.http(
        "GET",
        &format!("/dicomweb/studies?PatientID={PATIENT_ID}"),
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Accept", "application/dicom+json"),
        ],
        b"",
    );
    if r.status == 204 {
        return Vec::new();
    }
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut uids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["0020000D"]["Value"][0].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    uids
}

/// (study, retrieved, already_here, failed) of each study in an answer, sorted.
fn counts(answer: &Value) -> Vec<(String, u64, u64, usize)> {
    let mut c: Vec<_> = answer["studies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["study_instance_uid"].as_str().unwrap().to_string(),
                s["retrieved"].as_u64().unwrap(),
                s["already_here"].as_u64().unwrap(),
                s["failed"].as_array().unwrap().len(),
            )
        })
        .collect();
    c.sort();
    c
}

fn audit(server: &TramyServer, query: &str) -> Vec<Value> {
    let (code, body) = server
        .http_get(&format!("/api/v1/audit?limit=1000&{query}"))
        .expect("audit answers");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .cloned()
        .or_else(|| v["events"].as_array().cloned())
        .expect("a list of events")
}

#[test]
fn a_hospital_fetches_a_patients_priors_from_the_station_only_under_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let station = station();
    let mut sizes = [
        (
            store_study(&station, &dir.path().join("s1"), 3, PATIENT_ID),
            3,
        ),
        (
            store_study(&station, &dir.path().join("s2"), 2, PATIENT_ID),
            2,
        ),
    ];
    sizes.sort();
    let studies: Vec<String> = sizes.iter().map(|(s, _)| s.clone()).collect();
    // Another patient of the station's: never part of this patient's priors.
    let other = store_study(&station, &dir.path().join("s3"), 1, "OTHER-1");
    let hospital = hospital(dir.path(), &station, "");
    let fb = token(&hospital, "FB", "clinician");
    let fc = token(&hospital, "FC", "clinician");

    // Without a grant the station shows FB nothing: 200 with no studies, nothing stored.
    let none = retrieved(&hospital, &fb, json!({"patient": PATIENT}));
    assert_eq!(none["studies"], json!([]), "{none}");
    assert_eq!(none["retrieved"], 0);
    let none = retrieved(&hospital, &fb, json!({"study": studies[0]}));
    assert_eq!(none["studies"], json!([]), "{none}");
    assert_eq!(hospital.indexed_instances(), 0);

    grant_patient_to_fb(&station);

    // A period without studies brings nothing; the patient's studies come with the grant.
    let later = retrieved(
        &hospital,
        &fb,
        json!({"patient": PATIENT, "since": "20300101"}),
    );
    assert_eq!(later["studies"], json!([]), "{later}");
    let first = retrieved(
        &hospital,
        &fb,
        json!({"patient": PATIENT, "since": "19000101", "until": "20991231"}),
    );
    let expected: Vec<_> = sizes.iter().map(|(s, n)| (s.clone(), *n, 0, 0)).collect();
    assert_eq!(counts(&first), expected, "{first}");
    assert_eq!(first["retrieved"], 5, "{first}");
    assert_eq!(first["incomplete"], false);
    assert_eq!(hospital.indexed_instances(), 5);
    assert!(!first.to_string().contains(&other));

    // Queryable at once, as FB's: FB finds them, another facility of the hospital does not.
    assert_eq!(qido_studies(&hospital, &fb), studies);
    assert_eq!(qido_studies(&hospital, &fc), Vec::<String>::new());

    // Asking again fetches nothing: everything is here already.
    let again = retrieved(&hospital, &fb, json!({"patient": PATIENT}));
    assert_eq!(again["retrieved"], 0, "{again}");
    assert_eq!(again["already_here"], 5);
    let one = retrieved(&hospital, &fb, json!({"study": studies[0]}));
    assert_eq!(one["studies"].as_array().unwrap().len(), 1);
    assert_eq!(hospital.indexed_instances(), 5);

    // Both sides audited it: here one `forward` event per study and call, by FB's clinician,
    // on record before the answer; at the station, FB's retrievals of the study's instances.
    for study in &studies {
        let here = audit(&hospital, &format!("study={study}&facility=FB"));
        let details: Vec<&str> = here
            .iter()
            .filter(|e| e["action"] == "forward" && e["outcome"] == "success")
            .map(|e| e["detail"].as_str().unwrap())
            .collect();
        let n = sizes.iter().find(|(s, _)| s == study).unwrap().1;
        assert!(
            details.contains(
                &format!("retrieve from peer:station: {n} retrieved, 0 already here, 0 failed")
                    .as_str()
            ) && details.contains(
                &format!("retrieve from peer:station: 0 retrieved, {n} already here, 0 failed")
                    .as_str()
            ),
            "{here:?}"
        );
        wait_for("the station's record of FB's retrievals", || {
            let there = audit(&station.server, &format!("study={study}&facility=FB"));
            (there
                .iter()
                .filter(|e| e["action"] == "retrieve" && e["outcome"] == "success")
                .count() as u64
                >= n)
                .then_some(())
        });
    }
}

#[test]
fn a_call_fetches_at_most_its_limit_and_the_next_continues() {
    let dir = tempfile::tempdir().unwrap();
    let station = station();
    store_study(&station, &dir.path().join("s1"), 3, PATIENT_ID);
    store_study(&station, &dir.path().join("s2"), 3, PATIENT_ID);
    grant_patient_to_fb(&station);
    let hospital = hospital(dir.path(), &station, "retrieve_max_instances = 4");
    let fb = token(&hospital, "FB", "clinician");

    let first = retrieved(&hospital, &fb, json!({"patient": PATIENT}));
    assert_eq!(first["retrieved"], 4, "{first}");
    assert_eq!(first["failed"], 2);
    assert_eq!(first["incomplete"], true);
    let second = retrieved(&hospital, &fb, json!({"patient": PATIENT}));
    assert_eq!(second["retrieved"], 2, "{second}");
    assert_eq!(second["already_here"], 4);
    assert_eq!(second["failed"], 0);
    assert_eq!(second["incomplete"], false);
    assert_eq!(hospital.indexed_instances(), 6);
}

#[test]
fn bad_requests_and_callers_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let station = station();
    let dimse_peer =
        "\n[[peers]]\nname = \"modality\"\ndimse = \"CT1@127.0.0.1:104\"\nfacility = \"FA\"";
    let hospital = hospital(dir.path(), &station, dimse_peer);
    let fb = token(&hospital, "FB", "clinician");
    let modality = token(&hospital, "FB", "modality");
    let node = token(&hospital, "FB", "node");

    for body in [
        json!({}),
        json!({"study": "1.2.3", "patient": PATIENT}),
        json!({"study": "not a uid"}),
        json!({"patient": PATIENT, "since": "2024-01-01"}),
        json!({"patient": "0790*"}),
        json!({"patient": PATIENT, "color": "blue"}),
    ] {
        let r = retrieve(&hospital, &fb, body.clone());
        assert_eq!(
            r.status,
            400,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.header("content-type").unwrap().contains("problem+json"));
    }
    for who in [&modality, &node] {
        assert_eq!(
            retrieve(&hospital, who, json!({"patient": PATIENT})).status,
            403
        );
    }
    let r = post_json(
        &hospital,
        &fb,
        "/api/v1/peers/modality/retrieve",
        &json!({"patient": PATIENT}),
    );
    assert_eq!(r.status, 501, "{}", String::from_utf8_lossy(&r.body));
    let r = post_json(
        &hospital,
        &fb,
        "/api/v1/peers/nowhere/retrieve",
        &json!({"patient": PATIENT}),
    );
    assert_eq!(r.status, 404);

    // A peer that does not know the credential: the peer's refusal, as a bad gateway.
    std::fs::write(dir.path().join("station.token"), "tramy_not_a_token").unwrap();
    let r = retrieve(&hospital, &fb, json!({"patient": PATIENT}));
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(!String::from_utf8_lossy(&r.body).contains(PATIENT_ID));
}

/// A `/proc/PID/status` value in bytes (VmHWM: peak RSS).
fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("kB value");
    kb * 1024
}

#[test]
fn a_large_instance_is_retrieved_through_the_staging_area_not_memory() {
    const MB: u64 = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let station = station();
    // 128 MB of Pixel Data (8192 × 8192 × 16 bits): ingest parses around it, never through it.
    let big = dir.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    let script = format!(
        r#"
import os
from pydicom import dcmread
from pydicom.uid import generate_uid
ds = dcmread({template:?})
ds.StudyInstanceUID = generate_uid()
ds.SeriesInstanceUID = generate_uid()
ds.SOPInstanceUID = generate_uid()
ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
ds.PatientID = {PATIENT_ID:?}
ds.IssuerOfPatientID = "CCCD"
ds.Rows = ds.Columns = 8192
ds.PixelData = os.urandom(8192 * 8192 * 2)
ds.save_as({out:?}, enforce_file_format=True)
print(ds.StudyInstanceUID)
"#,
        template = repo_root()
            .join("dicom-samples/ct_small_explicit_le.dcm")
            .display()
            .to_string(),
        out = big.join("big.dcm").display().to_string(),
    );
    let out = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_success(&out, "a 128 MB instance");
    let study = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (content_type, body) = stow_body(&[std::fs::read(big.join("big.dcm")).unwrap()]);
    let r = station.server.http(
        "POST",
        "/dicomweb/studies",
        &[
            ("Authorization", &format!("Bearer {}", station.fa_clinician)),
            ("Content-Type", &content_type),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    drop(body);
    grant_patient_to_fb(&station);
    let hospital = hospital(dir.path(), &station, "");
    let fb = token(&hospital, "FB", "clinician");
    let before = proc_status(hospital.pid(), "VmHWM");

    let started = std::time::Instant::now();
    let answer = retrieved(&hospital, &fb, json!({"study": study}));
    let took = started.elapsed();
    assert_eq!(answer["retrieved"], 1, "{answer}");
    let peak = proc_status(hospital.pid(), "VmHWM");
    eprintln!(
        "hospital peak RSS: {} MB before, {} MB after retrieving a 128 MB instance in {:.1} s ({:.0} MB/s)",
        before / MB,
        peak / MB,
        took.as_secs_f64(),
        128.0 / took.as_secs_f64()
    );
    assert!(peak < before + 64 * MB, "peak RSS {} MB", peak / MB);
    // What was stored is what the station holds, byte for byte.
    let object = hospital
        .object_files()
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap();
    assert!(dataset_bytes(&object) == dataset_bytes(&big.join("big.dcm")));
}

#[test]
fn a_peer_that_stalls_costs_the_call_its_time_limit_and_no_more() {
    // A peer that accepts connections and never answers (fault injection).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for s in silent.incoming().take(16) {
            open.push(s);
        }
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    let hospital = TramyServer::start_with_config(&format!(
        r#"
[triage]
enabled = false

[[peers]]
name = "station"
dicomweb_url = "http://127.0.0.1:{port}/dicomweb"
facility = "FA"

[forwarding]
retrieve_timeout = "5s"
"#
    ));
    hospital.cli(&["facility", "add", "FB", "--name", "Provincial hospital B"]);
    let fb = token(&hospital, "FB", "clinician");
    let started = std::time::Instant::now();
    let r = retrieve(&hospital, &fb, json!({"patient": PATIENT}));
    let took = started.elapsed();
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("in time"));
    // A liveness bound: the 5 s limit, with room for a busy machine.
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");

    // Four retrievals run at once; more are refused at once rather than piled up.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| retrieve(&hospital, &fb, json!({"patient": PATIENT})).status))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let count = |code| statuses.iter().filter(|s| **s == code).count();
    assert!(
        count(503) >= 2 && count(502) + count(503) == 6,
        "{statuses:?}"
    );
    drop(held);
}

/// The number of instances `token` finds in `study` at `server` (QIDO-RS), with `filter`.
fn qido_count(server: &TramyServer, token: &str, study: &str, filter: &str) -> usize {
    let r = server.http(
        "GET",
        &format!("/dicomweb/studies/{study}/instances?{filter}"),
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Accept", "application/dicom+json"),
        ],
        b"",
    );
    match r.status {
        200 => r.json().as_array().map_or(0, Vec::len),
        _ => 0,
    }
}

#[test]
fn the_findings_sr_travels_with_its_study() {
    let (_, images) = pneumonia_model();
    let dir = tempfile::tempdir().unwrap();
    // The station runs the pneumonia model (default models_dir); its SR joins the study.
    let station = station_with("");
    let dx = dir.path().join("dx.dcm");
    wrap_jpeg_as_dx(
        &images
            .join("PNEUMONIA")
            .join("person1946_bacteria_4874.jpeg"),
        &dx,
    );
    let study = tramy::dicom::attributes::text(
        &dicom_object::open_file(&dx).unwrap(),
        dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
    );
    let (content_type, body) = stow_body(&[std::fs::read(&dx).unwrap()]);
    let r = station.server.http(
        "POST",
        "/dicomweb/studies",
        &[
            ("Authorization", &format!("Bearer {}", station.fa_clinician)),
            ("Content-Type", &content_type),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let fa = station.fa_clinician.clone();
    wait_for("the findings SR at the station", || {
        (qido_count(&station.server, &fa, &study, "Modality=SR") == 1).then_some(())
    });
    let r = post_json(
        &station.server,
        &station.fa_clinician,
        "/api/v1/grants",
        &json!({
            "to_facility": "FB", "study_instance_uid": study,
            "scope": ["metadata", "images", "findings"],
            "expires_at": (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339(),
            "break_glass_reason": "referral without consent on record (test)"
        }),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    let hospital = hospital(dir.path(), &station, "");
    let fb = token(&hospital, "FB", "clinician");
    let answer = retrieved(&hospital, &fb, json!({"study": study}));
    assert_eq!(answer["retrieved"], 2, "{answer}");
    assert_eq!(qido_count(&hospital, &fb, &study, ""), 2);
    assert_eq!(qido_count(&hospital, &fb, &study, "Modality=SR"), 1);
}
