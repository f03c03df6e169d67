//! Storage Commitment (PS3.4 Annex J) and sending to DIMSE peers (issue #10), with real peers:
//! pynetdicom as the modality asking tramy to commit (report on the same association, and after
//! release on a new association to the AE's registered port); tramy's `peer_scu` sending and
//! asking another tramy and a real Orthanc (whose report comes on a new association to tramy's
//! listener); and a peer that refuses or never answers, which must end in a `PeerError` that
//! says what to do, not a hang.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tramy::access::Principal;
use tramy::dimse::peer_scu::{self, DimsePeer, PeerError, SendOutcome};
use tramy::store::StoredInstance;

const CT: &str = "dicom-samples/ct_small_explicit_le.dcm";
const MR: &str = "dicom-samples/mr_small_explicit_le.dcm";
const NM: &str = "dicom-samples/nm_jpeg_extended.dcm";
const SR: &str = "dicom-samples/sr_comprehensive.dcm";
const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.4";

/// The filed instances of a server, read beside tramy as an admin's tool would.
fn filed(server: &TramyServer) -> Vec<StoredInstance> {
    server
        .index_rows(
            "SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, \
             i.sop_class_uid, i.transfer_syntax_uid, i.object_key, i.size_bytes, i.sha256 \
             FROM instances i JOIN series se ON i.series_fk = se.id \
             JOIN studies st ON se.study_fk = st.id ORDER BY i.id",
            &[],
        )
        .into_iter()
        .map(|row| {
            let text = |i: usize| row[i].clone().expect("not null");
            StoredInstance {
                study_instance_uid: text(0),
                series_instance_uid: text(1),
                sop_instance_uid: text(2),
                sop_class_uid: text(3),
                transfer_syntax_uid: text(4),
                object_key: text(5),
                size_bytes: text(6).parse().expect("a size"),
                sha256: text(7),
            }
        })
        .collect()
}

fn by_sop<'a>(all: &'a [StoredInstance], class: &str) -> &'a StoredInstance {
    all.iter()
        .find(|i| i.sop_class_uid == class)
        .unwrap_or_else(|| panic!("an instance of {class} is filed"))
}

/// Runs `tests/clients/commitment_scu.py` against `server` and parses its JSON.
fn commit(server: &TramyServer, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/commitment_scu.py"))
        .args(["--port", &server.port()])
        .args(args)
        .output()
        .expect("commitment_scu.py runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "commitment_scu.py printed no JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn reference(i: &StoredInstance) -> String {
    format!("{}:{}", i.sop_class_uid, i.sop_instance_uid)
}

fn failed_reason(report: &Value, sop: &str) -> Option<u64> {
    report["failed"]
        .as_array()?
        .iter()
        .find(|f| f[0] == sop)
        .and_then(|f| f[1].as_u64())
}

/// Changes one byte near the end of `instance`'s stored object (its pixel data).
fn damage(server: &TramyServer, instance: &StoredInstance) {
    let path = server.data_dir.join("objects").join(&instance.object_key);
    let mut bytes = std::fs::read(&path).expect("the stored object");
    let at = bytes.len() - 10;
    bytes[at] ^= 0xFF;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn tramy_commits_what_it_holds_intact_and_reports_on_the_same_association() {
    let server = TramyServer::start_with_local_objects("");
    let files = [CT, MR, NM].map(|f| repo_root().join(f));
    server.store_files(
        &files.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
        "samples",
    );
    let all = filed(&server);
    let (ct, mr) = (by_sop(&all, CT_IMAGE), by_sop(&all, MR_IMAGE));
    let nm = all
        .iter()
        .find(|i| {
            i.sop_instance_uid != ct.sop_instance_uid && i.sop_instance_uid != mr.sop_instance_uid
        })
        .unwrap();
    damage(&server, nm);
    let unknown = format!("{CT_IMAGE}:1.2.3.999.42");
    let mismatch = format!("{MR_IMAGE}:{}", ct.sop_instance_uid);
    let out = commit(
        &server,
        &[
            "--ref",
            &reference(ct),
            "--ref",
            &reference(mr),
            "--ref",
            &reference(nm),
            "--ref",
            &unknown,
            "--ref",
            &mismatch,
        ],
    );
    assert_eq!(out["action_status"], 0, "{out}");
    let report = &out["reports"][0];
    assert_eq!(report["where"], "same", "{out}");
    assert_eq!(report["transaction_uid"], out["transaction_uid"]);
    assert_eq!(report["event_type"], 2, "some failed: {out}");
    assert_eq!(
        report["committed"],
        serde_json::json!([ct.sop_instance_uid, mr.sop_instance_uid]),
        "{out}"
    );
    assert_eq!(
        failed_reason(report, &nm.sop_instance_uid),
        Some(0x0110),
        "damaged: {out}"
    );
    assert_eq!(
        failed_reason(report, "1.2.3.999.42"),
        Some(0x0112),
        "unknown: {out}"
    );
    assert_eq!(report["failed"].as_array().unwrap().len(), 3, "{out}");
    assert!(
        report["failed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f[0] == ct.sop_instance_uid.as_str() && f[1] == 0x0119),
        "class/instance mismatch: {out}"
    );

    // All intact: Event Type 1, no Failed SOP Sequence; the request is in the audit trail.
    let out = commit(&server, &["--ref", &reference(ct)]);
    assert_eq!(out["reports"][0]["event_type"], 1, "{out}");
    assert_eq!(out["reports"][0]["failed"], serde_json::json!([]), "{out}");
    let (code, trail) = server
        .http_get("/api/v1/audit?limit=100")
        .expect("audit answers");
    assert_eq!(code, 200, "{trail}");
    assert!(trail.contains("Storage Commitment transaction"), "{trail}");
}

#[test]
fn another_facilitys_instance_is_no_such_object_and_bad_requests_are_refused() {
    let server = TramyServer::start();
    server.cli(&["facility", "add", "OTHER", "--name", "Other facility"]);
    server.cli(&["ae", "add", "OTHERMOD", "--facility", "OTHER"]);
    let port = server.port();
    let ct = repo_root().join(CT);
    let ct = ct.to_str().unwrap();
    let out = pynetdicom(
        "storescu",
        &["-aet", "OTHERMOD", "-aec", "TRAMY", "127.0.0.1", &port, ct],
    );
    assert_success(&out, "storescu as OTHERMOD");
    let theirs = filed(&server).remove(0);

    let out = commit(&server, &["--ref", &reference(&theirs)]);
    assert_eq!(out["action_status"], 0, "{out}");
    assert_eq!(
        failed_reason(&out["reports"][0], &theirs.sop_instance_uid),
        Some(0x0112),
        "{out}"
    );
    let out = commit(
        &server,
        &["--aet", "OTHERMOD", "--ref", &reference(&theirs)],
    );
    assert_eq!(
        out["reports"][0]["event_type"], 1,
        "its own facility's: {out}"
    );

    // No references: refused at once with a reason, and no report follows.
    let out = commit(&server, &[]);
    assert_eq!(out["action_status"], 0x0115, "{out}");
    assert!(
        out["error_comment"]
            .as_str()
            .unwrap()
            .contains("Referenced SOP Sequence"),
        "{out}"
    );
    assert_eq!(out["reports"], serde_json::json!([]), "{out}");

    // A report nobody asked for is refused (0110), never taken for another's.
    let out = commit(&server, &["--mode", "stray-report"]);
    assert_eq!(out["report_status"], 0x0110, "{out}");
    assert!(
        out["error_comment"]
            .as_str()
            .unwrap()
            .contains("no request"),
        "{out}"
    );
}

#[test]
fn more_references_than_the_limit_are_refused_naming_it() {
    let server = TramyServer::start();
    let refs: Vec<String> = (0..10_001)
        .flat_map(|n| ["--ref".to_string(), format!("{CT_IMAGE}:1.2.3.{n}")])
        .collect();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let out = commit(&server, &refs);
    assert_eq!(out["action_status"], 0x0213, "{}", out["error_comment"]);
    assert!(
        out["error_comment"]
            .as_str()
            .unwrap()
            .contains("at most 10000"),
        "{out}"
    );
}

#[test]
fn a_report_after_release_goes_to_the_registered_port_on_a_new_association() {
    let server = TramyServer::start();
    let listen = free_port().to_string();
    server.cli(&[
        "ae",
        "add",
        "COMMITSCU",
        "--facility",
        "LOCAL",
        "--host",
        "127.0.0.1",
        "--port",
        &listen,
    ]);
    let ct = repo_root().join(CT);
    server.store_files(&[ct.as_path()], "CT");
    let ct = filed(&server).remove(0);
    let out = commit(
        &server,
        &[
            "--aet",
            "COMMITSCU",
            "--mode",
            "release",
            "--listen",
            &listen,
            "--ref",
            &reference(&ct),
        ],
    );
    assert_eq!(out["action_status"], 0, "{out}");
    let report = &out["reports"][0];
    assert_eq!(report["where"], "new", "{out}\n{}", server.log());
    assert_eq!(report["calling_ae_title"], "TRAMY", "{out}");
    assert_eq!(report["transaction_uid"], out["transaction_uid"]);
    assert_eq!(
        report["committed"],
        serde_json::json!([ct.sop_instance_uid]),
        "{out}"
    );

    // The port over HTTP too; a port needs a host.
    let post = |body: &str| {
        server.http(
            "POST",
            "/api/v1/ae-titles",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    let made = post(r#"{"ae_title":"HTTPSCU","facility":"LOCAL","host":"127.0.0.1","port":11113}"#);
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    assert_eq!(made.json()["port"], 11113);
    let refused = post(r#"{"ae_title":"NOHOST","facility":"LOCAL","port":11113}"#);
    assert_eq!(
        refused.status,
        400,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert!(String::from_utf8_lossy(&refused.body).contains("comes with a host"));
}

/// A tokio runtime for the in-process sender.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A sender: a tramy data folder with the samples filed (by a server, then stopped), opened in
/// this process. Returns its server (keeping the folder), its archive and its instances.
fn sender(
    rt: &tokio::runtime::Runtime,
) -> (TramyServer, tramy::ingest::Archive, Vec<StoredInstance>) {
    let mut server = TramyServer::start_with_local_objects("");
    let files = [CT, MR, NM, SR].map(|f| repo_root().join(f));
    server.store_files(
        &files.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
        "samples",
    );
    server.kill();
    let instances = filed(&server);
    let config = tramy::config::Config {
        data_dir: server.data_dir.clone(),
        index_url: server.index_url.clone(),
        ..Default::default()
    };
    let archive = rt
        .block_on(async { tramy::ingest::Archive::open(&config) })
        .expect("archive opens");
    (server, archive, instances)
}

#[test]
fn peer_scu_sends_to_another_tramy_and_it_commits_them() {
    let rt = runtime();
    let (_sender, archive, instances) = sender(&rt);
    let receiver = TramyServer::start();
    let peer = DimsePeer {
        ae_title: "TRAMY".into(),
        host: "127.0.0.1".into(),
        port: receiver.dimse_port,
        calling_ae_title: "MODALITY".into(),
    };
    let sent = rt
        .block_on(peer_scu::store_instances(
            &archive,
            &Principal::system(),
            &peer,
            &instances,
        ))
        .expect("sent");
    assert_eq!(sent.len(), instances.len());
    assert!(
        sent.iter().all(|(_, o)| *o == SendOutcome::Stored),
        "{sent:?}"
    );
    assert_eq!(receiver.indexed_instances(), instances.len() as i64);
    assert_eq!(
        filed(&receiver)
            .iter()
            .map(|i| &i.sha256)
            .collect::<Vec<_>>(),
        instances.iter().map(|i| &i.sha256).collect::<Vec<_>>(),
        "stored as sent"
    );

    // Sending again is a duplicate the receiver recognises (warning or success, never a copy).
    let again = rt
        .block_on(peer_scu::store_instances(
            &archive,
            &Principal::system(),
            &peer,
            &instances[..1],
        ))
        .unwrap();
    assert!(
        matches!(again[0].1, SendOutcome::Stored | SendOutcome::Warning(_)),
        "{again:?}"
    );
    assert_eq!(receiver.indexed_instances(), instances.len() as i64);

    let mut refs: Vec<(String, String)> = instances
        .iter()
        .map(|i| (i.sop_class_uid.clone(), i.sop_instance_uid.clone()))
        .collect();
    refs.push((CT_IMAGE.into(), "1.2.3.999.7".into()));
    let result = rt
        .block_on(peer_scu::request_commitment(
            &peer,
            &refs,
            Duration::from_secs(60),
        ))
        .expect("a report");
    let uids: Vec<String> = instances
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(result.committed, uids);
    assert_eq!(result.failed, vec![("1.2.3.999.7".to_string(), 0x0112)]);
}

#[test]
fn an_unreachable_refusing_or_silent_peer_is_a_peer_error_saying_what_to_do() {
    let rt = runtime();
    let (_sender, archive, instances) = sender(&rt);
    let who = Principal::system();
    let refs = vec![(CT_IMAGE.to_string(), "1.2.3".to_string())];

    // Nothing listens.
    let closed = DimsePeer {
        ae_title: "NOBODY".into(),
        host: "127.0.0.1".into(),
        port: free_port(),
        calling_ae_title: "TRAMY".into(),
    };
    let e = rt
        .block_on(peer_scu::store_instances(
            &archive, &who, &closed, &instances,
        ))
        .unwrap_err();
    assert!(matches!(e, PeerError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("check that it runs"), "{e}");

    // A tramy that does not know the calling AE title rejects the association.
    let receiver = TramyServer::start();
    let stranger = DimsePeer {
        ae_title: "TRAMY".into(),
        host: "127.0.0.1".into(),
        port: receiver.dimse_port,
        calling_ae_title: "UNKNOWNAE".into(),
    };
    let e = rt
        .block_on(peer_scu::store_instances(
            &archive, &who, &stranger, &instances,
        ))
        .unwrap_err();
    assert!(matches!(e, PeerError::Rejected { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("register AE title UNKNOWNAE at the peer"),
        "{e}"
    );
    let e = rt
        .block_on(peer_scu::request_commitment(
            &stranger,
            &refs,
            Duration::from_secs(5),
        ))
        .unwrap_err();
    assert!(matches!(e, PeerError::Rejected { .. }), "{e}");

    // A peer that accepts the connection and never answers: a timeout, not a hang.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_peer = DimsePeer {
        ae_title: "SILENT".into(),
        host: "127.0.0.1".into(),
        port: silent.local_addr().unwrap().port(),
        calling_ae_title: "TRAMY".into(),
    };
    let short = Duration::from_secs(2);
    let e = rt
        .block_on(peer_scu::store_instances_with(
            &archive,
            &who,
            &silent_peer,
            &instances,
            short,
        ))
        .unwrap_err();
    assert!(matches!(e, PeerError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("retry later"), "{e}");
    let e = rt
        .block_on(peer_scu::request_commitment_with(
            &silent_peer,
            &refs,
            short,
            short,
        ))
        .unwrap_err();
    assert!(matches!(e, PeerError::Timeout { .. }), "{e}");
    drop(silent);
}

/// A private Orthanc (Debian `orthanc`) that knows tramy's AE title at `tramy_port`.
struct Orthanc {
    child: Child,
    dicom_port: u16,
    http_port: u16,
    _dir: tempfile::TempDir,
}

impl Orthanc {
    /// Starts it on free ports; an Orthanc that exits at once (a port taken meanwhile by
    /// another test's server) is started again on others.
    fn start(tramy_port: u16) -> Orthanc {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(tramy_port) {
                Ok(orthanc) => return orthanc,
                Err(log) => last_log = log,
            }
        }
        panic!("Orthanc did not start on three pairs of ports; its log:\n{last_log}");
    }

    fn try_start(tramy_port: u16) -> Result<Orthanc, String> {
        let dir = tempfile::tempdir().unwrap();
        let (dicom_port, http_port) = (free_port(), free_port());
        let config = serde_json::json!({
            "Name": "peer", "StorageDirectory": dir.path().join("db"), "IndexDirectory": dir.path().join("db"),
            "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
            "DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true, "DicomCheckCalledAet": false,
            "DicomModalities": { "tramy": ["TRAMY", "127.0.0.1", tramy_port] }
        });
        let path = dir.path().join("orthanc.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let log_path = dir.path().join("orthanc.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("Orthanc")
            .arg(&path)
            .env("TCP_NODELAY", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("Orthanc (Debian package orthanc) is installed; .ci/run installs it");
        let mut orthanc = Orthanc {
            child,
            dicom_port,
            http_port,
            _dir: dir,
        };
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        // Generous: Orthanc creates its database first, and the CI machine is busy.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if orthanc.child.try_wait().ok().flatten().is_some() {
                return Err(log());
            }
            let listening = std::net::TcpStream::connect(("127.0.0.1", orthanc.http_port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", orthanc.dicom_port)).is_ok();
            if listening {
                return Ok(orthanc);
            }
            if std::time::Instant::now() > deadline {
                let _ = orthanc.child.kill();
                return Err(log());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Orthanc's REST API: `method path` with a JSON `body`; its JSON answer.
    fn rest(&self, method: &str, path: &str, body: &str) -> Value {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let answer = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {buf}"))
    }

    fn instance_count(&self) -> u64 {
        self.rest("GET", "/statistics", "")["CountInstances"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn peer_scu_sends_to_orthanc_and_its_report_on_a_new_association_reaches_the_request() {
    let rt = runtime();
    let (sender_server, archive, instances) = sender(&rt);
    // Orthanc reports from its own AE title on a new association: tramy's listener must know it.
    let register = "INSERT INTO application_entities (ae_title, facility, host, created_at) \
         VALUES ('ORTHANC', 'LOCAL', NULL, '2026-01-01T00:00:00.000Z');";
    sender_server.index_execute(register, register);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let tramy_port = listener.local_addr().unwrap().port();
    let mut config = tramy::config::Config {
        data_dir: sender_server.data_dir.clone(),
        index_url: sender_server.index_url.clone(),
        ..Default::default()
    };
    config.dimse.ae_title = "TRAMY".into();
    let service = rt
        .block_on(async { tramy::dimse::DimseService::new(archive.clone(), Arc::new(config)) })
        .unwrap();
    rt.spawn(tramy::dimse::serve(listener, Arc::new(service), None));

    let orthanc = Orthanc::start(tramy_port);
    let peer = DimsePeer {
        ae_title: "ORTHANC".into(),
        host: "127.0.0.1".into(),
        port: orthanc.dicom_port,
        calling_ae_title: "TRAMY".into(),
    };
    let sent = rt
        .block_on(peer_scu::store_instances(
            &archive,
            &Principal::system(),
            &peer,
            &instances,
        ))
        .expect("sent to Orthanc");
    assert!(
        sent.iter().all(|(_, o)| *o == SendOutcome::Stored),
        "{sent:?}"
    );
    assert_eq!(orthanc.instance_count(), instances.len() as u64);

    let mut refs: Vec<(String, String)> = instances
        .iter()
        .map(|i| (i.sop_class_uid.clone(), i.sop_instance_uid.clone()))
        .collect();
    refs.push((CT_IMAGE.into(), "1.2.3.999.8".into()));
    let result = rt
        .block_on(peer_scu::request_commitment(
            &peer,
            &refs,
            Duration::from_secs(60),
        ))
        .expect("Orthanc's report");
    let uids: Vec<String> = instances
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(result.committed, uids);
    assert_eq!(result.failed.len(), 1);
    assert_eq!(result.failed[0].0, "1.2.3.999.8");
}

#[test]
fn orthanc_asks_tramy_to_commit_and_gets_the_report_on_a_new_association() {
    let server = TramyServer::start();
    let ct = repo_root().join(CT);
    server.store_files(&[ct.as_path()], "CT");
    let ct = filed(&server).remove(0);
    let orthanc = Orthanc::start(server.dimse_port);
    // Orthanc releases its association after the N-ACTION-RSP and listens for the report.
    let port = orthanc.dicom_port.to_string();
    server.cli(&[
        "ae",
        "add",
        "ORTHANC",
        "--facility",
        "LOCAL",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ]);
    let body = serde_json::json!({
        "DicomInstances": [[CT_IMAGE, ct.sop_instance_uid], [CT_IMAGE, "1.2.3.999.9"]],
        "Timeout": 60
    });
    let asked = orthanc.rest(
        "POST",
        "/modalities/tramy/storage-commitment",
        &body.to_string(),
    );
    let path = asked["Path"].as_str().unwrap_or_else(|| panic!("{asked}"));
    let result = wait_for("Orthanc to receive tramy's report", || {
        let r = orthanc.rest("GET", path, "");
        (r["Status"] != "Pending").then_some(r)
    });
    assert_eq!(result["Status"], "Failure", "one was unknown: {result}");
    assert_eq!(
        result["Success"][0]["SOPInstanceUID"],
        ct.sop_instance_uid.as_str(),
        "{result}"
    );
    assert_eq!(
        result["Failures"][0]["SOPInstanceUID"], "1.2.3.999.9",
        "{result}"
    );
    assert_eq!(result["Failures"][0]["FailureReason"], 0x0112, "{result}");
}
