//! Several `tramy serve` nodes on one PostgreSQL index and one object store (issue #11 item 3):
//! what one node acknowledges the other finds and retrieves at once; the same SOP Instance UID
//! sent to both at once ends as one instance whose object is the one indexed; a node killed in
//! the middle of a stream loses nothing it acknowledged, as the other node shows without
//! waiting for it. The objects are on Garage when it is installed, else in one local folder
//! both nodes name by URL (nodes on one machine).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

/// Two nodes on a new PostgreSQL database and one object store; `None` (the test is skipped)
/// when PostgreSQL is not installed.
fn two_nodes(tmp: &Path) -> Option<(TramyServer, TramyServer)> {
    if !common::postgres::installed() {
        eprintln!("SKIPPED: PostgreSQL is not installed (Debian postgresql; .ci/run installs it)");
        return None;
    }
    let objects = match common::garage::shared() {
        Some(_) => common::garage::server_env(),
        None => vec![(
            "TRAMY_OBJECT_STORE_URL".to_string(),
            format!("file://{}", tmp.join("objects").display()),
        )],
    };
    let index = common::postgres::new_database();
    // The first node alone sets up the registry (facility LOCAL, the superadmin token).
    let first = TramyServer::start_node("", &[], objects, Some(index));
    let second = TramyServer::start_beside(&first);
    Some((first, second))
}

/// The Part 10 file of `sop` as WADO-URI serves it from `server`.
fn retrieve(server: &TramyServer, study: &str, series: &str, sop: &str) -> Vec<u8> {
    let path = format!(
        "/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}\
         &contentType=application%2Fdicom"
    );
    let r = server.http("GET", &path, &[], b"");
    assert_eq!(
        r.status,
        200,
        "WADO-URI of {sop}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.body
}

/// The data set bytes of a Part 10 file in memory.
fn dataset_of(file: &[u8], dir: &Path) -> Vec<u8> {
    let path = dir.join(format!("{:x}.dcm", Sha256::digest(file)));
    std::fs::write(&path, file).unwrap();
    dataset_bytes(&path)
}

/// Study, series and SOP Instance UIDs the index holds, in filing order.
fn filed(server: &TramyServer) -> Vec<(String, String, String, String)> {
    server
        .index_rows(
            "SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, i.sha256 \
             FROM instances i JOIN series se ON i.series_fk = se.id \
             JOIN studies st ON se.study_fk = st.id ORDER BY i.id",
            &[],
        )
        .into_iter()
        .map(|r| {
            let t = |i: usize| r[i].clone().expect("not null");
            (t(0), t(1), t(2), t(3))
        })
        .collect()
}

#[test]
fn an_instance_stored_on_one_node_is_found_and_retrieved_on_the_other_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((first, second)) = two_nodes(tmp.path()) else {
        return;
    };
    let (study, files) = make_study_with(&tmp.path().join("study"), 5, &["--modality", "CT"]);
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    first.store_files(&files, "storescu to the first node");

    // No wait: acknowledged by the first node means there on the second.
    let found = second
        .http(
            "GET",
            &format!("/dicomweb/studies?StudyInstanceUID={study}"),
            &[],
            b"",
        )
        .json();
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    let instances = filed(&second);
    assert_eq!(instances.len(), 5);
    for ((study, series, sop, _), sent) in instances.iter().zip(&files) {
        let body = retrieve(&second, study, series, sop);
        assert_eq!(
            dataset_of(&body, tmp.path()),
            dataset_bytes(sent),
            "the second node serves what the first stored"
        );
    }

    // And the other way: STOW-RS to the second, C-FIND on the first.
    let ct = std::fs::read(repo_root().join("dicom-samples/ct_small_explicit_le.dcm")).unwrap();
    let (content_type, body) = stow_body(&[ct]);
    let stored = second.http(
        "POST",
        "/dicomweb/studies",
        &[
            ("Content-Type", &content_type),
            ("Accept", "application/dicom+json"),
        ],
        &body,
    );
    assert_eq!(
        stored.status,
        200,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );
    let (ct_study, _, _) = ct_uids();
    let found = c_find_study(&first, &ct_study);
    assert!(
        found.contains(&ct_study),
        "C-FIND on the first node: {found}"
    );
}

/// Sends each node its files with pynetdicom's storescu, all at the same time.
fn send_at_once(sends: &[(&TramyServer, &Vec<PathBuf>)]) {
    let senders: Vec<_> = sends
        .iter()
        .map(|(node, files)| {
            Command::new(python())
                .args(["-m", "pynetdicom", "storescu", "-aec", "TRAMY", "127.0.0.1"])
                .arg(node.port())
                .args(files.iter())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("storescu starts")
        })
        .collect();
    for mut sender in senders {
        assert!(sender.wait().unwrap().success(), "storescu");
    }
}

/// A copy of each file with another StudyDescription: the same SOP Instance UID, another
/// data set.
fn changed_copies(files: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let out = dir.join(format!("{i}.dcm"));
            let status = Command::new(python())
                .args([
                    "-c",
                    "import sys, pydicom; d = pydicom.dcmread(sys.argv[1]); \
                     d.StudyDescription = 'CHANGED'; d.save_as(sys.argv[2])",
                ])
                .arg(f)
                .arg(&out)
                .status()
                .unwrap();
            assert!(status.success(), "pydicom copies {}", f.display());
            out
        })
        .collect()
}

#[test]
fn the_same_instance_sent_to_two_nodes_at_once_is_filed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((first, second)) = two_nodes(tmp.path()) else {
        return;
    };
    // The same 30 instances to both nodes at once.
    let (_, same) = make_study_with(&tmp.path().join("same"), 30, &["--modality", "CT"]);
    send_at_once(&[(&first, &same), (&second, &same)]);
    assert_eq!(filed(&first).len(), 30, "each SOP Instance UID filed once");

    // 30 new instances, each in two versions (same SOP Instance UID, different data sets),
    // one version to each node at once: a conflict, decided once.
    let (_, originals) = make_study_with(&tmp.path().join("new"), 30, &["--modality", "MR"]);
    let variants = changed_copies(&originals, &tmp.path().join("changed"));
    send_at_once(&[(&first, &originals), (&second, &variants)]);
    let after = filed(&second);
    assert_eq!(after.len(), 60, "a conflict adds no instance");
    // Whatever was kept, the object served is the data set the index describes.
    for (study, series, sop, sha) in after {
        let body = retrieve(&first, &study, &series, &sop);
        assert_eq!(
            hex::encode(Sha256::digest(dataset_of(&body, tmp.path()))),
            sha,
            "the object of {sop} is the one its index row names"
        );
    }
}

#[test]
fn a_node_killed_mid_stream_loses_nothing_it_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((mut first, second)) = two_nodes(tmp.path()) else {
        return;
    };
    let acks = tmp.path().join("acks.txt");
    let mut streamer = stream_with_acks(&first, 5000, &acks);
    let acknowledged = || acknowledged(&acks);
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged().len() < 200 {
        assert!(
            Instant::now() < deadline,
            "the stream did not get going:\n{}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill();
    let _ = streamer.wait();
    let acked = acknowledged();
    assert!(acked.len() < 5000, "the kill landed mid-stream");

    // The first node stays down: the second answers for everything it acknowledged.
    let rows: std::collections::HashMap<String, (String, String, String)> = filed(&second)
        .into_iter()
        .map(|(study, series, sop, sha)| (sop, (study, series, sha)))
        .collect();
    for (sop, sent_sha) in &acked {
        let (study, series, sha) = rows
            .get(sop)
            .unwrap_or_else(|| panic!("acknowledged {sop} is not in the index"));
        assert_eq!(sha, sent_sha, "the index records what was sent");
        let body = retrieve(&second, study, series, sop);
        assert_eq!(
            &hex::encode(Sha256::digest(dataset_of(&body, tmp.path()))),
            sent_sha,
            "the second node serves {sop} as sent"
        );
    }
}
