//! Sharing between servers (issue #10): a station's tramy forwards what it receives to its
//! referral hospital's tramy per its rules, over DICOMweb with signed manifests and receipts,
//! and resumes after the hospital is killed mid-transfer without losing or duplicating anything.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use common::*;

/// The hospital: facility FB and a `node` token for the station to present. Its own triage is
/// off, so that what it holds is exactly what was forwarded.
fn hospital() -> (TramyServer, String) {
    let hospital = TramyServer::start_with_local_objects("[triage]\nenabled = false\n");
    hospital.cli(&["facility", "add", "FB", "--name", "Provincial hospital B"]);
    let node = hospital.cli(&["token", "create", "--facility", "FB", "--role", "node"]);
    (hospital, node)
}

/// The station, forwarding everything to `hospital` with `node`'s token (written in `dir`);
/// `peer` is added to the peer's settings.
fn station(dir: &Path, hospital: &TramyServer, node: &str, peer: &str) -> TramyServer {
    station_with_rules(dir, hospital, node, peer, "[[forward]]\nto = \"hospital\"")
}

/// The station with these `[[forward]]` `rules`.
fn station_with_rules(
    dir: &Path,
    hospital: &TramyServer,
    node: &str,
    peer: &str,
    rules: &str,
) -> TramyServer {
    let token_file = dir.join("hospital.token");
    std::fs::write(&token_file, node).unwrap();
    TramyServer::start_with_config(&format!(
        r#"
[[peers]]
name = "hospital"
dicomweb_url = "{}"
token_file = "{}"
facility = "FB"
{peer}

{rules}

[forwarding]
max_backoff = "2s"
batch_instances = 2
"#,
        hospital.dicomweb(),
        token_file.display()
    ))
}

/// A study of `n` instances (CT sample copies, `pad_kb` kB larger each) in `dir`; its UID and files.
fn make_study(dir: &Path, n: usize, pad_kb: usize) -> (String, Vec<PathBuf>) {
    make_study_with(dir, n, &["--pad-kb", &pad_kb.to_string()])
}

fn deliveries(server: &TramyServer, study: &str) -> serde_json::Value {
    let (code, body) = server
        .http_get(&format!("/api/v1/studies/{study}/deliveries"))
        .expect("deliveries answer");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until the study's delivery to the hospital is verified; returns that entry.
fn wait_verified(station: &TramyServer, study: &str, n: i64) -> serde_json::Value {
    wait_for("the study to be verified at the hospital", || {
        let d = deliveries(station, study);
        let entry = d
            .as_array()?
            .iter()
            .find(|e| e["peer"] == "hospital")?
            .clone();
        (entry["state"] == "verified" && entry["instances"]["verified"] == n).then_some(entry)
    })
}

fn post_manifest(hospital: &TramyServer, node: &str, jws: &str) -> HttpResponse {
    hospital.http(
        "POST",
        "/api/v1/deliveries",
        &[
            ("Authorization", &format!("Bearer {node}")),
            ("Content-Type", "application/jose"),
        ],
        jws.as_bytes(),
    )
}

fn receipt(jws: &str) -> tramy::forward::manifest::Receipt {
    let parsed = tramy::forward::jws::parse(jws, tramy::forward::manifest::RECEIPT_TYPE).unwrap();
    parsed
        .verify(&parsed.header.jwk.verifying_key().unwrap())
        .unwrap()
}

#[test]
fn a_station_forwards_to_its_hospital_with_a_verified_signed_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let (hospital, node) = hospital();
    let station = station(dir.path(), &hospital, &node, "");
    let (study, files) = make_study(&dir.path().join("study"), 5, 0);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    station.store_files(&refs, "five instances to the station");

    let entry = wait_verified(&station, &study, 5);
    assert_eq!(hospital.indexed_instances(), 5);
    let timeline: Vec<&str> = entry["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, ["queued", "sent", "stored", "verified"]);
    // A study that arrives over time may be delivered in several manifests, each receipted.
    let manifests: Vec<(String, String)> = entry["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["state"], "verified", "{m}");
            (
                m["manifest"].as_str().unwrap().to_string(),
                m["receipt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let receipts: Vec<_> = manifests.iter().map(|(_, r)| receipt(r)).collect();
    assert_eq!(receipts.iter().map(|r| r.stored.len()).sum::<usize>(), 5);
    assert!(receipts
        .iter()
        .all(|r| r.receiver == "FB" && r.failed.is_empty()));
    // The receipts are signed with the hospital's published key.
    let keys = hospital.http_get("/api/v1/facilities/FB/keys").unwrap().1;
    let kid = serde_json::from_str::<serde_json::Value>(&keys).unwrap()["keys"][0]["kid"].clone();
    for (_, r) in &manifests {
        let parsed = tramy::forward::jws::parse(r, tramy::forward::manifest::RECEIPT_TYPE).unwrap();
        assert_eq!(serde_json::Value::from(parsed.header.kid.clone()), kid);
    }
    let manifest = manifests[0].0.clone();

    // Sending the same instances again is harmless: nothing is queued or sent twice.
    station.store_files(&refs, "the same five again");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let again = deliveries(&station, &study);
    assert_eq!(again[0]["instances"]["verified"], 5);
    assert_eq!(
        again[0]["manifests"].as_array().unwrap().len(),
        manifests.len()
    );
    assert_eq!(hospital.indexed_instances(), 5);

    // A changed manifest is refused, never answered with a receipt.
    let parts: Vec<&str> = manifest.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    let changed = payload.replacen("\"size\":", "\"size\":1", 1);
    let forged = format!("{}.{}.{}", parts[0], b64.encode(changed), parts[2]);
    let refused = post_manifest(&hospital, &node, &forged);
    assert_eq!(
        refused.status,
        422,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );

    // A byte changed in an object stored at the hospital is reported in the next receipt.
    let objects = hospital.object_files();
    let victim = objects
        .iter()
        .max_by_key(|p| p.display().to_string())
        .unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0xFF;
    std::fs::write(victim, bytes).unwrap();
    let (mut stored, mut failed) = (0, Vec::new());
    for (m, _) in &manifests {
        let answer = post_manifest(&hospital, &node, m);
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let checked = receipt(&String::from_utf8(answer.body).unwrap());
        stored += checked.stored.len();
        failed.extend(checked.failed);
    }
    assert_eq!(stored, 4);
    assert_eq!(failed.len(), 1);
    assert!(failed[0].reason.contains("does not match"), "{failed:?}");
}

#[test]
fn killing_the_receiving_server_three_times_and_the_sender_once_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hospital, node) = hospital();
    // 2.7 MB at 400 kB/s: the transfer lasts long enough to be cut three times.
    let mut station = station(dir.path(), &hospital, &node, "max_bytes_per_sec = 400000");
    let (study, files) = make_study(&dir.path().join("study"), 40, 64);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    station.store_files(&refs, "forty instances to the station");
    for round in 1..=3 {
        let before = hospital.indexed_instances();
        // Kill it while the station is sending: once more has arrived since the last start.
        wait_for("the hospital to receive more", || {
            (hospital.indexed_instances() > before).then_some(())
        });
        assert!(
            hospital.indexed_instances() < 40,
            "round {round}: the transfer was over"
        );
        hospital.kill();
        std::thread::sleep(std::time::Duration::from_millis(300 * round));
        hospital.restart();
    }
    // The station too: its outbox survives, and sending resumes where it stopped.
    station.kill();
    station.restart();
    wait_verified(&station, &study, 40);
    assert_eq!(hospital.indexed_instances(), 40);
    assert_eq!(hospital.object_files().len(), 40);
}

#[test]
fn a_chest_xray_flagged_urgent_is_forwarded_by_its_ai_rule_with_findings_and_report() {
    let (_, images) = pneumonia_model();
    let dir = tempfile::tempdir().unwrap();
    let (hospital, node) = hospital();
    // Only what triage flags urgent goes to the hospital, ahead of anything else queued.
    let rules = "[[forward]]\nto = \"hospital\"\nmodalities = [\"DX\", \"CR\"]\nai_flag = \"urgent\"\npriority = \"urgent\"";
    let station = station_with_rules(dir.path(), &hospital, &node, "", rules);
    let wrap = |class: &str, jpeg: &str| {
        let out = dir.path().join(format!("{jpeg}.dcm"));
        wrap_jpeg_as_dx(&images.join(class).join(jpeg), &out);
        let obj = dicom_object::open_file(&out).unwrap();
        let study =
            tramy::dicom::attributes::text(&obj, dicom_dictionary_std::tags::STUDY_INSTANCE_UID);
        (out, study)
    };
    // Scored 0.86 and 0.03 by the model (keras-reference.json).
    let (flagged, flagged_study) = wrap("PNEUMONIA", "person1946_bacteria_4874.jpeg");
    let (normal, normal_study) = wrap("NORMAL", "NORMAL2-IM-1430-0001.jpeg");
    station.store_files(&[&flagged, &normal], "two chest X-rays");

    // The flagged image and tramy's findings report reach the hospital, verified.
    let entry = wait_verified(&station, &flagged_study, 2);
    assert_eq!(hospital.indexed_instances(), 2);
    let manifest = entry["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manifest"].as_str().unwrap().to_string())
        .find_map(|jws| {
            let parsed =
                tramy::forward::jws::parse(&jws, tramy::forward::manifest::MANIFEST_TYPE).unwrap();
            let m: tramy::forward::manifest::Manifest = parsed
                .verify(&parsed.header.jwk.verifying_key().unwrap())
                .unwrap();
            (!m.findings.is_empty()).then_some(m)
        })
        .expect("a manifest carries the findings");
    assert!(manifest
        .findings
        .iter()
        .any(|f| f.label == "pneumonia" && f.flagged));
    // The image it did not flag stays at the station.
    wait_for("the normal image to be triaged", || {
        let (_, body) = station.http_get(&format!("/api/v1/studies/{normal_study}/findings"))?;
        body.contains("pneumonia").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(deliveries(&station, &normal_study), serde_json::json!([]));
    assert_eq!(hospital.indexed_instances(), 2);
}

/// A study for patient `id` (issuer `issuer`, none when `None`) stored at `station` by calling
/// AE `ae`; its Study Instance UID.
fn store_patient_study(
    station: &TramyServer,
    dir: &Path,
    ae: &str,
    id: &str,
    issuer: Option<&str>,
) -> String {
    let mut args = vec!["--patient-id", id];
    if let Some(issuer) = issuer {
        args.extend(["--issuer", issuer]);
    }
    let (study, files) = make_study_with(dir, 1, &args);
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let port = station.port();
    let mut args = vec!["-aet", ae, "-aec", "TRAMY", "127.0.0.1", port.as_str()];
    args.extend(files.iter().map(String::as_str));
    assert_success(&pynetdicom("storescu", &args), "storescu");
    study
}

/// Patients at `server` with this PatientID: their IssuerOfPatientID, sorted.
fn issuers_of(server: &TramyServer, id: &str) -> Vec<String> {
    let mut issuers: Vec<String> = server
        .index_rows(
            "SELECT issuer_of_patient_id FROM patients WHERE patient_id = ?1",
            &[id],
        )
        .into_iter()
        .map(|row| row[0].clone().expect("not null"))
        .collect();
    issuers.sort();
    issuers
}

#[test]
fn forwarded_patients_keep_their_identity_local_ids_never_merge_and_links_travel() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, node) = hospital();
    // Two stations of their own facilities, both forwarding everything to the hub.
    let stations: Vec<TramyServer> = ["FA", "FC"]
        .iter()
        .map(|code| {
            std::fs::create_dir_all(dir.path().join(code)).unwrap();
            let s = station(&dir.path().join(code), &hub, &node, "");
            s.cli(&["facility", "add", code, "--name", "Commune station"]);
            s.cli(&["ae", "add", &format!("CR_{code}"), "--facility", code]);
            s
        })
        .collect();
    let mut studies = Vec::new();
    for (station, code) in stations.iter().zip(["FA", "FC"]) {
        let ae = format!("CR_{code}");
        // A local ID both stations happen to use, and one person's national citizen ID.
        studies.push(store_patient_study(
            station,
            &dir.path().join(format!("{code}-local")),
            &ae,
            "123",
            None,
        ));
        studies.push(store_patient_study(
            station,
            &dir.path().join(format!("{code}-citizen")),
            &ae,
            "079012345678",
            Some("CCCD"),
        ));
    }
    for (i, study) in studies.iter().enumerate() {
        wait_verified(&stations[i / 2], study, 1);
    }
    // The local IDs stay two patients (each station's facility stands as their issuer); the
    // citizen ID merges the person's studies from both stations into one patient.
    assert_eq!(issuers_of(&hub, "123"), ["FA", "FC"]);
    assert_eq!(issuers_of(&hub, "079012345678"), ["CCCD"]);

    // At station FA a patient arrives without an ID, is forwarded, and is then linked to the
    // citizen: the link reaches the hub with the next forward of that person's studies.
    let fa = &stations[0];
    let unknown = store_patient_study(fa, &dir.path().join("FA-unknown"), "CR_FA", "", None);
    wait_verified(fa, &unknown, 1);
    let link = fa.http(
        "POST",
        "/api/v1/patients/CCCD%7C079012345678/links",
        &[("Content-Type", "application/json")],
        serde_json::json!({ "study_instance_uid": unknown })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(link.status, 201, "{}", String::from_utf8_lossy(&link.body));
    let next = store_patient_study(
        fa,
        &dir.path().join("FA-citizen-2"),
        "CR_FA",
        "079012345678",
        Some("CCCD"),
    );
    wait_verified(fa, &next, 1);
    let links = hub
        .http(
            "GET",
            "/api/v1/patients/CCCD%7C079012345678/links",
            &[],
            b"",
        )
        .json();
    let linked = links.as_array().unwrap();
    assert_eq!(linked.len(), 1, "{links}");
    assert_eq!(
        linked[0]["study_instance_uids"],
        serde_json::json!([unknown])
    );
}

#[test]
fn outside_the_peers_time_window_only_urgent_instances_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (hospital, node) = hospital();
    // A window that opens in two hours (local time, as the server reads it).
    let opens = chrono::Local::now() + chrono::TimeDelta::hours(2);
    let window = format!(
        "windows = [\"{}-{}\"]",
        opens.format("%H:%M"),
        (opens + chrono::TimeDelta::hours(1)).format("%H:%M")
    );
    let rules = "[[forward]]\nto = \"hospital\"\n\n[[forward]]\nto = \"hospital\"\nmodalities = [\"CR\"]\npriority = \"urgent\"";
    let station = station_with_rules(dir.path(), &hospital, &node, &window, rules);
    let (ct_study, ct) = make_study(&dir.path().join("ct"), 2, 0);
    let (cr_study, cr) = make_study_with(&dir.path().join("cr"), 1, &["--modality", "CR"]);
    let mut files = ct.clone();
    files.extend(cr);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    station.store_files(&refs, "a CT study and an urgent CR");

    wait_verified(&station, &cr_study, 1);
    let waiting = deliveries(&station, &ct_study);
    assert_eq!(waiting[0]["state"], "queued", "{waiting}");
    assert_eq!(waiting[0]["instances"]["queued"], 2);
    assert_eq!(hospital.indexed_instances(), 1);
}

/// A stand-in for the station's OpenID Connect provider's token endpoint (RFC 6749 4.4): answers
/// the client credentials grant of client `station-fa` (secret `s3cret`, HTTP Basic) with an
/// access token for facility FB's node role; counts the tokens issued.
fn token_endpoint(issued: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            std::io::Read::read_exact(&mut reader, &mut body).unwrap();
            let basic = base64::engine::general_purpose::STANDARD.encode("station-fa:s3cret");
            let (status, answer) = if head.contains(&format!("Basic {basic}"))
                && body == b"grant_type=client_credentials"
            {
                issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let token = provider_token(&serde_json::json!({
                    "iss": "https://sso.station.example/realms/fa", "aud": "tramy", "sub": "service-account-station-fa",
                    "exp": chrono::Utc::now().timestamp() + 300,
                    "facility": "FB", "realm_access": { "roles": ["node"] },
                }));
                (
                    "200 OK",
                    serde_json::json!({ "access_token": token, "token_type": "Bearer", "expires_in": 300 }),
                )
            } else {
                (
                    "401 Unauthorized",
                    serde_json::json!({ "error": "invalid_client" }),
                )
            };
            let answer = answer.to_string();
            let mut out = stream;
            let _ = write!(
                out,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    port
}

#[test]
fn a_station_presents_an_openid_connect_client_credential_to_its_peer() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    write_provider_jwks(&jwks);
    let hospital = TramyServer::start_with_config(&format!(
        "[triage]\nenabled = false\n[auth.oidc]\nissuer = \"https://sso.station.example/realms/fa\"\n\
         audience = \"tramy\"\njwks_file = {:?}\n\
         claims = {{ facility = \"facility\", roles = \"realm_access.roles\" }}\n",
        jwks.display().to_string()
    ));
    hospital.cli(&["facility", "add", "FB", "--name", "Provincial hospital B"]);
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let port = token_endpoint(issued.clone());
    let secret = dir.path().join("client.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let station = TramyServer::start_with_config(&format!(
        r#"
[[peers]]
name = "hospital"
dicomweb_url = "{}"
facility = "FB"
oidc = {{ token_url = "http://127.0.0.1:{port}/token", client_id = "station-fa", client_secret_file = "{}" }}

[[forward]]
to = "hospital"
"#,
        hospital.dicomweb(),
        secret.display()
    ));
    let (study, files) = make_study(&dir.path().join("study"), 3, 0);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    station.store_files(&refs, "three instances to the station");
    wait_verified(&station, &study, 3);
    assert_eq!(hospital.indexed_instances(), 3);
    // One token served every request (presence checks, STOW-RS, keys, manifests).
    assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_station_forwards_to_a_dimse_peer_confirmed_by_storage_commitment() {
    let dir = tempfile::tempdir().unwrap();
    // The receiving tramy as a DIMSE peer: the station calls as TRAMY, registered there.
    let hospital = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let station = TramyServer::start_with_config(&format!(
        r#"
[[peers]]
name = "hospital-pacs"
dimse = "TRAMY@127.0.0.1:{}"
facility = "LOCAL"

[[forward]]
to = "hospital-pacs"

[forwarding]
max_backoff = "2s"
"#,
        hospital.dimse_port
    ));
    let (study, files) = make_study(&dir.path().join("study"), 3, 0);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    station.store_files(&refs, "three instances to the station");
    let entry = wait_for("the study committed by the DIMSE peer", || {
        let d = deliveries(&station, &study);
        let e = d.as_array()?.first()?.clone();
        (e["instances"]["stored"] == 3).then_some(e)
    });
    assert_eq!(entry["state"], "stored");
    let manifests = entry["manifests"].as_array().unwrap();
    assert!(
        manifests.iter().all(|m| m["state"] == "committed"),
        "{entry}"
    );
    assert!(manifests[0]["detail"]
        .as_str()
        .unwrap()
        .contains("Storage Commitment transaction"));
    assert_eq!(hospital.indexed_instances(), 3);
}
