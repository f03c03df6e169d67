//! Sharing between servers end to end (issue #10 "Done when"): three tramy servers, a commune
//! health station forwarding per its rules to its referral hospital and to the national hub, and
//! an Orthanc (Debian `orthanc` + `orthanc-dicomweb`, run as a plain process) as a foreign
//! PS3.18 peer, both as a destination (STOW-RS, PS3.18 §10.5) and as a sender pushing to tramy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use tramy::forward::jws::{self, JwkParams};
use tramy::forward::manifest::{Receipt, RECEIPT_TYPE};

const ORTHANC: &str = "/usr/sbin/Orthanc";
const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// A receiving tramy with facility `code` and a `node` token, issued there for that facility,
/// for the station to present.
fn receiver(code: &str, name: &str) -> (TramyServer, String) {
    let server = TramyServer::start();
    server.cli(&["facility", "add", code, "--name", name]);
    let node = server.cli(&["token", "create", "--facility", code, "--role", "node"]);
    (server, node)
}

/// An Orthanc with its DICOMweb plugin on private ports, whose DICOMweb client knows `tramy`
/// (a tramy's service root) with a bearer token; killed when dropped.
struct Orthanc {
    child: Child,
    http: u16,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

impl Orthanc {
    /// Starts it on free ports; one that exits at once (a port taken meanwhile by another
    /// test's server) is started again on others.
    fn start(tramy_root: &str, token: &str) -> Orthanc {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(tramy_root, token) {
                Ok(orthanc) => return orthanc,
                Err(log) => last_log = log,
            }
        }
        panic!("Orthanc did not start on three pairs of ports; its log:\n{last_log}");
    }

    fn try_start(tramy_root: &str, token: &str) -> Result<Orthanc, String> {
        let dir = tempfile::tempdir().unwrap();
        let (http, dimse) = (free_port(), free_port());
        let config = serde_json::json!({
            "Name": "foreign-peer",
            "StorageDirectory": dir.path().join("db"),
            "IndexDirectory": dir.path().join("db"),
            "Plugins": [DICOMWEB_PLUGIN],
            "HttpPort": http,
            "DicomPort": dimse,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomWeb": {
                "Enable": true,
                "Root": "/dicom-web/",
                "Servers": {
                    "tramy": {
                        "Url": format!("{tramy_root}/"),
                        "HttpHeaders": { "Authorization": format!("Bearer {token}") }
                    }
                }
            }
        });
        let path = dir.path().join("orthanc.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let log_path = dir.path().join("orthanc.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(ORTHANC)
            .arg(&path)
            .env("TCP_NODELAY", "1")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("Orthanc starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut orthanc = Orthanc {
            child,
            http,
            agent,
            _dir: dir,
        };
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        // Generous: Orthanc creates its database first, and the CI machine is busy.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if orthanc.child.try_wait().ok().flatten().is_some() {
                return Err(log());
            }
            if orthanc.get("/system").0 == 200 {
                return Ok(orthanc);
            }
            if std::time::Instant::now() > deadline {
                let _ = orthanc.child.kill();
                return Err(log());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn get(&self, path: &str) -> (u16, String) {
        match self.agent.get(self.url(path)).call() {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let mut r = self
            .agent
            .post(self.url(path))
            .header("Content-Type", content_type)
            .send(body)
            .expect("Orthanc answers");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// SOP Instance UIDs Orthanc holds in `study`, asked through its own QIDO-RS.
    fn instances_of(&self, study: &str) -> Vec<String> {
        let (code, body) = self.get(&format!("/dicom-web/studies/{study}/instances"));
        if code != 200 {
            return Vec::new();
        }
        let found: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let mut uids: Vec<String> = found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["00080018"]["Value"][0].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        uids.sort();
        uids
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A study of `n` instances of `modality` in `dir` (CT sample copies); its UID and files.
fn make_study(dir: &Path, n: usize, modality: &str) -> (String, Vec<PathBuf>) {
    make_study_with(dir, n, &["--modality", modality])
}

/// The SOP Instance UIDs of `files`, sorted.
fn sop_uids(files: &[PathBuf]) -> Vec<String> {
    let mut uids: Vec<String> = files
        .iter()
        .map(|f| {
            let obj = dicom_object::open_file(f).unwrap();
            obj.meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string()
        })
        .collect();
    uids.sort();
    uids
}

/// The station's delivery entry for `peer` of `study`, once its state is `state` with `n`
/// instances counted in that state.
fn wait_delivered(
    station: &TramyServer,
    study: &str,
    peer: &str,
    state: &str,
    n: i64,
) -> serde_json::Value {
    wait_for(&format!("{study} to be {state} at {peer}"), || {
        let (code, body) = station.http_get(&format!("/api/v1/studies/{study}/deliveries"))?;
        assert_eq!(code, 200, "{body}");
        let all: serde_json::Value = serde_json::from_str(&body).ok()?;
        let entry = all.as_array()?.iter().find(|e| e["peer"] == peer)?.clone();
        (entry["state"] == state && entry["instances"][state] == n).then_some(entry)
    })
}

/// The receipts of a verified delivery, each checked against the receiving facility's key as
/// published at `GET /api/v1/facilities/{code}/keys`.
fn verified_receipts(
    entry: &serde_json::Value,
    receiver: &TramyServer,
    code: &str,
) -> Vec<Receipt> {
    let (status, keys) = receiver
        .http_get(&format!("/api/v1/facilities/{code}/keys"))
        .unwrap();
    assert_eq!(status, 200, "{keys}");
    let keys: serde_json::Value = serde_json::from_str(&keys).unwrap();
    let jwk = &keys["keys"][0];
    let published: JwkParams = serde_json::from_value(jwk.clone()).unwrap();
    let key = published.verifying_key().unwrap();
    entry["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["state"], "verified", "{m}");
            let parsed = jws::parse(m["receipt"].as_str().unwrap(), RECEIPT_TYPE).unwrap();
            assert_eq!(
                serde_json::Value::from(parsed.header.kid.clone()),
                jwk["kid"]
            );
            let receipt: Receipt = parsed.verify(&key).expect("signed by the receiver's key");
            assert_eq!(receipt.receiver, code);
            assert!(receipt.failed.is_empty(), "{:?}", receipt.failed);
            receipt
        })
        .collect()
}

/// Instances the station sent to `peer` (its `tramy_forward_instances_total` counter).
fn forwarded_instances(station: &TramyServer, peer: &str) -> u64 {
    let metrics = station.http("GET", "/metrics", &[], b"");
    let text = String::from_utf8(metrics.body).unwrap();
    let series = format!("tramy_forward_instances_total{{peer=\"{peer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

fn stored_uids(receipts: &[Receipt]) -> Vec<String> {
    let mut uids: Vec<String> = receipts
        .iter()
        .flat_map(|r| r.stored.iter().map(|s| s.sop_instance_uid.clone()))
        .collect();
    uids.sort();
    uids
}

#[test]
fn station_forwards_to_hospital_hub_and_orthanc_per_its_rules_and_orthanc_pushes_to_tramy() {
    if !Path::new(ORTHANC).exists() || !Path::new(DICOMWEB_PLUGIN).exists() {
        eprintln!("SKIPPED: Orthanc or its DICOMweb plugin is not installed (Debian orthanc, orthanc-dicomweb; .ci/run installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (hospital, hospital_node) = receiver("FB", "Provincial hospital B");
    let (hub, hub_node) = receiver("NH", "National hub");
    // What Orthanc presents to the hub: a modality credential of a facility registered there.
    hub.cli(&["facility", "add", "OR", "--name", "Orthanc-run clinic"]);
    let orthanc_token = hub.cli(&["token", "create", "--facility", "OR", "--role", "modality"]);
    let orthanc = Orthanc::start(&hub.dicomweb(), &orthanc_token);

    for (name, token) in [("hospital", &hospital_node), ("hub", &hub_node)] {
        std::fs::write(dir.path().join(format!("{name}.token")), token).unwrap();
    }
    // Chest X-rays to the referral hospital, everything to the hub, CT to the Orthanc peer.
    let station = TramyServer::start_with_config(&format!(
        r#"
[[peers]]
name = "hospital"
dicomweb_url = "{hospital}"
token_file = "{dir}/hospital.token"
facility = "FB"

[[peers]]
name = "hub"
dicomweb_url = "{hub}"
token_file = "{dir}/hub.token"
facility = "NH"

[[peers]]
name = "orthanc"
kind = "dicomweb"
dicomweb_url = "{orthanc}"
facility = "OR"

[[forward]]
to = "hospital"
modalities = ["CR", "DX"]

[[forward]]
to = "hub"

[[forward]]
to = "orthanc"
modalities = ["CT"]

[forwarding]
max_backoff = "2s"
"#,
        hospital = hospital.dicomweb(),
        hub = hub.dicomweb(),
        orthanc = orthanc.url("/dicom-web"),
        dir = dir.path().display(),
    ));

    let (cr, cr_files) = make_study(&dir.path().join("cr"), 3, "CR");
    let (ct, ct_files) = make_study(&dir.path().join("ct"), 4, "CT");
    // A CT study Orthanc holds already (sent there by someone else): found by the station's
    // presence check (Orthanc's QIDO-RS) and not sent again.
    let (held, held_files) = make_study(&dir.path().join("held"), 2, "CT");
    for f in &held_files {
        let (code, body) = orthanc.post(
            "/instances",
            "application/dicom",
            &std::fs::read(f).unwrap(),
        );
        assert_eq!(code, 200, "Orthanc took the file: {body}");
    }
    let all: Vec<&Path> = cr_files
        .iter()
        .chain(&ct_files)
        .chain(&held_files)
        .map(PathBuf::as_path)
        .collect();
    station.store_files(&all, "a CR and two CT studies to the station");

    // The chest X-ray study reaches the hospital and the hub, each with receipts signed by the
    // receiving facility's published key that list every instance stored intact.
    for (peer, server, code) in [("hospital", &hospital, "FB"), ("hub", &hub, "NH")] {
        let entry = wait_delivered(&station, &cr, peer, "verified", 3);
        let receipts = verified_receipts(&entry, server, code);
        assert_eq!(stored_uids(&receipts), sop_uids(&cr_files), "{peer}");
    }
    // The CT study reaches the hub (verified) and Orthanc, where the STOW-RS answer stands in
    // for a receipt: the delivery ends at `stored`.
    let entry = wait_delivered(&station, &ct, "hub", "verified", 4);
    assert_eq!(
        stored_uids(&verified_receipts(&entry, &hub, "NH")),
        sop_uids(&ct_files)
    );
    wait_delivered(&station, &ct, "orthanc", "stored", 4);
    assert_eq!(orthanc.instances_of(&ct), sop_uids(&ct_files));
    wait_delivered(&station, &held, "orthanc", "stored", 2);
    wait_delivered(&station, &held, "hub", "verified", 2);
    assert_eq!(
        forwarded_instances(&station, "orthanc"),
        4,
        "only the CT study's bytes went to Orthanc"
    );

    // Nothing went where no rule sends it.
    let (_, body) = station
        .http_get(&format!("/api/v1/studies/{ct}/deliveries"))
        .unwrap();
    assert!(
        !body.contains("\"hospital\""),
        "CT went to the hospital: {body}"
    );
    let (_, body) = station
        .http_get(&format!("/api/v1/studies/{cr}/deliveries"))
        .unwrap();
    assert!(!body.contains("\"orthanc\""), "CR went to Orthanc: {body}");
    assert!(orthanc.instances_of(&cr).is_empty());
    assert_eq!(hospital.indexed_instances(), 3);
    assert_eq!(hub.indexed_instances(), 9);

    // Orthanc pushes a study of its own to the hub with its DICOMweb client (STOW-RS with the
    // configured bearer token); the hub then holds it and answers for it over QIDO-RS.
    let (own, own_files) = make_study(&dir.path().join("own"), 2, "DX");
    for f in &own_files {
        let (code, body) = orthanc.post(
            "/instances",
            "application/dicom",
            &std::fs::read(f).unwrap(),
        );
        assert_eq!(code, 200, "Orthanc took the file: {body}");
    }
    let (code, body) = orthanc.post("/tools/lookup", "text/plain", own.as_bytes());
    assert_eq!(code, 200, "{body}");
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    let orthanc_study = found[0]["ID"]
        .as_str()
        .expect("Orthanc's study id")
        .to_string();
    let request = serde_json::json!({ "Resources": [orthanc_study] }).to_string();
    let (code, body) = orthanc.post(
        "/dicom-web/servers/tramy/stow",
        "application/json",
        request.as_bytes(),
    );
    assert_eq!(code, 200, "Orthanc's STOW-RS to tramy: {body}");
    assert_eq!(hub.indexed_instances(), 11);
    let answer = hub.http(
        "GET",
        &format!("/dicomweb/studies/{own}/instances"),
        &[("Accept", "application/dicom+json")],
        b"",
    );
    assert_eq!(answer.status, 200);
    let listed = answer.json();
    let mut uids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["00080018"]["Value"][0].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    assert_eq!(uids, sop_uids(&own_files));
}
