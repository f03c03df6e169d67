//! Archive integrity with real clients: an acknowledged instance is never deleted (an index
//! restored from an older copy, a lost WAL, a lost index), and an object that is damaged,
//! swapped or missing is never served as valid; `tramy verify` reports it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

const NO_TRIAGE: &str = "[triage]\nenabled = false\n";

/// Sends `count` fresh copies of the CT sample over DIMSE; returns (SOP UID, data set SHA-256).
fn stream_instances(server: &TramyServer, count: usize, tmp: &Path) -> Vec<(String, String)> {
    let acks = tmp.join(format!("acks-{}.txt", rand_suffix()));
    let json = dimse_client(
        server.dimse_port,
        &[
            "stream",
            "--count",
            &count.to_string(),
            "--template",
            repo_root()
                .join("dicom-samples/ct_small_explicit_le.dcm")
                .to_str()
                .unwrap(),
            "--ack-file",
            acks.to_str().unwrap(),
        ],
    );
    assert_eq!(json["acknowledged"], count, "every instance acknowledged");
    read_acks(&acks)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn read_acks(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, s)| (u.to_string(), s.to_string()))
        .collect()
}

fn index_files(data_dir: &Path) -> Vec<PathBuf> {
    ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"]
        .iter()
        .map(|f| data_dir.join(f))
        .collect()
}

/// Every acknowledged instance has an index row and an object whose data set is what was sent.
fn assert_all_present(server: &TramyServer, acked: &[(String, String)]) {
    for (uid, sent_sha) in acked {
        let rows = server.index_rows(
            "SELECT object_key, sha256 FROM instances WHERE sop_instance_uid = ?1",
            &[uid],
        );
        let row = rows
            .first()
            .unwrap_or_else(|| panic!("acknowledged instance {uid} is not indexed"));
        let [key, sha] = [&row[0], &row[1]].map(|c| c.clone().expect("not null"));
        assert_eq!(&sha, sent_sha, "index records what was sent for {uid}");
        let object = server.data_dir.join("objects").join(key);
        let stored = hex::encode(Sha256::digest(dataset_bytes(&object)));
        assert_eq!(&stored, sent_sha, "object of {uid} is byte-identical");
    }
}

fn qido_instance_count(server: &TramyServer) -> usize {
    let r = server.http(
        "GET",
        "/dicomweb/instances?limit=10000",
        &[("Accept", "application/dicom+json")],
        b"",
    );
    assert_eq!(r.status, 200);
    r.json().as_array().expect("QIDO JSON array").len()
}

fn tramy(server: &TramyServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tramy"))
        .args(args)
        .env("TRAMY_DATA_DIR", &server.data_dir)
        .envs(server.process_env())
        .env("RUST_LOG", "warn")
        .env_remove("TRAMY_CONFIG")
        .output()
        .expect("tramy runs")
}

#[test]
fn an_index_restored_from_an_older_copy_loses_no_instance() {
    if common::postgres::skipped_as_sqlite_only("restores an older copy of the SQLite file; PostgreSQL's backups are pg_dump's (docs/deploy.md)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = TramyServer::start_with_local_objects(NO_TRIAGE);
    let mut acked = stream_instances(&server, 10, tmp.path());
    server.kill();
    // The backup: the index as it stood then (WAL included, as a file-level copy must be).
    let backup = tmp.path().join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    for f in index_files(&server.data_dir).iter().filter(|f| f.exists()) {
        std::fs::copy(f, backup.join(f.file_name().unwrap())).unwrap();
    }
    server.restart();
    acked.extend(stream_instances(&server, 10, tmp.path()));
    server.kill();
    // Restore the older copy over the newer index.
    for f in index_files(&server.data_dir) {
        let _ = std::fs::remove_file(&f);
        let saved = backup.join(f.file_name().unwrap());
        if saved.exists() {
            std::fs::copy(saved, &f).unwrap();
        }
    }
    server.restart();
    assert_all_present(&server, &acked);
    assert_eq!(server.indexed_instances(), 20);
    assert_eq!(
        qido_instance_count(&server),
        20,
        "QIDO finds every instance"
    );
    assert!(
        server
            .log()
            .contains("indexed objects that had no index rows"),
        "start-up says what it re-indexed:\n{}",
        server.log()
    );
    assert_eq!(server.object_files().len(), 20, "no object was deleted");
}

#[test]
fn a_lost_wal_loses_no_instance() {
    if common::postgres::skipped_as_sqlite_only("removes SQLite's write-ahead log") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = TramyServer::start_with_local_objects(NO_TRIAGE);
    let acked = stream_instances(&server, 30, tmp.path());
    server.kill();
    let wal = server.data_dir.join("index.sqlite-wal");
    assert!(wal.exists(), "the commits are still in the WAL");
    std::fs::remove_file(&wal).unwrap();
    let _ = std::fs::remove_file(server.data_dir.join("index.sqlite-shm"));
    server.restart();
    assert_all_present(&server, &acked);
    assert_eq!(server.indexed_instances(), 30);
}

#[test]
fn reindex_rebuilds_a_lost_index_and_is_idempotent() {
    if common::postgres::skipped_as_sqlite_only("deletes the SQLite file to lose the index") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = TramyServer::start_with_local_objects(NO_TRIAGE);
    let acked = stream_instances(&server, 12, tmp.path());
    server.store_files(
        &[&repo_root().join("dicom-samples/mr_small_j2k_lossless.dcm")],
        "storescu",
    );
    server.kill();
    for f in index_files(&server.data_dir) {
        let _ = std::fs::remove_file(f);
    }
    let first = tramy(&server, &["reindex"]);
    assert_success(&first, "tramy reindex");
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.contains("indexed now: 13"), "{said}");
    let again = tramy(&server, &["reindex"]);
    assert_success(&again, "tramy reindex, again");
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        said.contains("indexed now: 0") && said.contains("already indexed: 13"),
        "{said}"
    );
    server.restart();
    assert_all_present(&server, &acked);
    assert_eq!(qido_instance_count(&server), 13);
    // The sender is kept: tramy's meta group names the calling AE title.
    let source = server.index_rows(
        "SELECT source FROM instances WHERE sop_instance_uid = ?1",
        &[&acked[0].0],
    );
    assert_eq!(source[0][0].as_deref(), Some("STREAMER"));
}

/// The object file of `uid`.
fn object_of(server: &TramyServer, uid: &str) -> PathBuf {
    let rows = server.index_rows(
        "SELECT object_key FROM instances WHERE sop_instance_uid = ?1",
        &[uid],
    );
    let key = rows[0][0].clone().expect("an object key");
    server.data_dir.join("objects").join(key)
}

fn wado_path(server: &TramyServer, uid: &str) -> String {
    let rows = server.index_rows(
        "SELECT st.study_instance_uid, se.series_instance_uid FROM instances i \
         JOIN series se ON i.series_fk = se.id JOIN studies st ON se.study_fk = st.id \
         WHERE i.sop_instance_uid = ?1",
        &[uid],
    );
    let [study, series] = [&rows[0][0], &rows[0][1]].map(|c| c.clone().expect("a UID"));
    format!("/dicomweb/studies/{study}/series/{series}/instances/{uid}")
}

/// Asserts a retrieval of `uid` is refused with a 5xx that names the problem and no path.
fn assert_refused(server: &TramyServer, uid: &str, problem: &str) {
    let path = wado_path(server, uid);
    for (what, suffix, accept) in [
        (
            "WADO-RS",
            "",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        ),
        ("rendered", "/rendered", "image/jpeg"),
        (
            "frames",
            "/frames/1",
            "multipart/related; type=\"application/octet-stream\"",
        ),
    ] {
        let r = server.http(
            "GET",
            &format!("{path}{suffix}"),
            &[("Accept", accept)],
            b"",
        );
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            (500..600).contains(&r.status),
            "{what} of a {problem} object: {} {body}",
            r.status
        );
        assert!(
            body.contains(problem),
            "{what} says it is {problem}: {body}"
        );
        let data_dir = server.data_dir.display().to_string();
        assert!(
            !body.contains(&data_dir) && !body.contains("/objects/") && !body.contains(".dcm"),
            "{what}: no file paths in the response: {body}"
        );
    }
}

#[test]
fn damaged_swapped_and_missing_objects_are_never_served_and_verify_reports_them() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TramyServer::start_with_local_objects(NO_TRIAGE);
    let acked = stream_instances(&server, 6, tmp.path());
    let uids: Vec<&str> = acked.iter().map(|(u, _)| u.as_str()).collect();
    let file = |i: usize| object_of(&server, uids[i]);
    let originals: Vec<Vec<u8>> = (0..6).map(|i| std::fs::read(file(i)).unwrap()).collect();

    // 0: a flipped pixel byte (the data set ends with Pixel Data).
    let mut flipped = originals[0].clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x40;
    std::fs::write(file(0), flipped).unwrap();
    // 1: truncated to half.
    std::fs::write(file(1), &originals[1][..originals[1].len() / 2]).unwrap();
    // 2: an altered PatientName, same length.
    let mut renamed = originals[2].clone();
    let at = renamed
        .windows(21)
        .position(|w| w == b"CompressedSamples^CT1")
        .expect("the CT sample's PatientName");
    renamed[at] = b'X';
    std::fs::write(file(2), renamed).unwrap();
    // 3: replaced by another instance's file.
    std::fs::write(file(3), &originals[5]).unwrap();
    // 4: deleted.
    std::fs::remove_file(file(4)).unwrap();

    for uid in &uids[0..4] {
        assert_refused(&server, uid, "damaged");
    }
    assert_refused(&server, uids[4], "missing");
    // The intact one is served, byte for byte.
    let r = server.http(
        "GET",
        &wado_path(&server, uids[5]),
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
        b"",
    );
    assert_eq!(r.status, 200);
    let sent_sha = &acked[5].1;
    let body_sha_found = r
        .body
        .windows(originals[5].len())
        .any(|w| w == originals[5].as_slice());
    assert!(
        body_sha_found,
        "the intact object is served as stored ({sent_sha})"
    );

    // Searches no longer offer what cannot be retrieved.
    let listed = server.http(
        "GET",
        &format!(
            "/dicomweb/studies/{}/instances",
            wado_path(&server, uids[5]).split('/').nth(3).unwrap()
        ),
        &[("Accept", "application/dicom+json")],
        b"",
    );
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "QIDO-RS lists only the intact instance"
    );

    // C-GET of the study: the intact instance is delivered, the others are failed
    // sub-operations (final status B000, "sub-operations complete, one or more failures").
    let study = wado_path(&server, uids[5])
        .split('/')
        .nth(3)
        .unwrap()
        .to_string();
    let got = dimse_client(
        server.dimse_port,
        &[
            "get-exact",
            "--out",
            tmp.path().join("got").to_str().unwrap(),
            "--study",
            &study,
            "--sop-class",
            "1.2.840.10008.5.1.4.1.1.2",
        ],
    );
    let received: Vec<&String> = got["received"].as_object().unwrap().keys().collect();
    assert_eq!(
        received,
        vec![uids[5]],
        "C-GET delivers only the intact instance: {got}"
    );
    let statuses = got["final_statuses"].as_array().unwrap();
    assert_eq!(statuses.last(), Some(&serde_json::json!(0xB000)), "{got}");

    let (_, metrics) = server.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("tramy_integrity_failures_total{problem=\"damaged\"}")
            && metrics.contains("tramy_integrity_failures_total{problem=\"missing\"}"),
        "failures are counted:\n{metrics}"
    );
    let log = server.log();
    assert!(log.contains("stored object failed verification"), "{log}");

    // tramy verify finds the same, beside the running server, and exits 1.
    let out = tramy(&server, &["verify", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify fails on damage: {out:?}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = |what: &str| -> Vec<String> {
        report[what]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["sop_instance_uid"].as_str().unwrap().to_string())
            .collect()
    };
    let mut damaged = listed("damaged");
    damaged.sort();
    let mut expected: Vec<String> = uids[0..4].iter().map(|u| u.to_string()).collect();
    expected.sort();
    assert_eq!(damaged, expected);
    assert_eq!(listed("missing"), vec![uids[4].to_string()]);
    assert_eq!(report["checked"], 6);

    // Restoring the objects from a backup clears the marks.
    for (i, original) in originals.iter().enumerate().take(5) {
        std::fs::write(file(i), original).unwrap();
    }
    let out = tramy(&server, &["verify", "--rate", "100"]);
    assert_success(&out, "tramy verify after the restore");
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact again (marks cleared): 5"));
    let r = server.http(
        "GET",
        &wado_path(&server, uids[0]),
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
        b"",
    );
    assert_eq!(r.status, 200, "a restored object is served again");
}

#[test]
fn the_background_scrub_finds_a_damaged_object_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TramyServer::start_with_local_objects(
        "[triage]\nenabled = false\n[integrity]\nscrub_interval_hours = 0.0003\n",
    );
    let acked = stream_instances(&server, 3, tmp.path());
    let object = object_of(&server, &acked[1].0);
    let mut bytes = std::fs::read(&object).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    std::fs::write(&object, bytes).unwrap();
    wait_for("the background scrub to report the damage", || {
        server
            .log()
            .contains("background scrub found stored objects that are not intact")
            .then_some(())
    });
    let (_, metrics) = server.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("tramy_integrity_scrub_damaged 1"),
        "the scrub's finding is a metric to alert on:\n{metrics}"
    );
}

/// Ten SIGKILLs while a DIMSE sender and a STOW-RS sender keep storing: afterwards every
/// acknowledged instance is indexed and byte-identical, every object is indexed, and `tramy
/// verify` finds the archive intact.
#[test]
fn acknowledged_instances_survive_ten_sigkills_under_mixed_load() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = TramyServer::start_with_local_objects(NO_TRIAGE);
    let ack_file = tmp.path().join("acks.txt");
    let stop_file = tmp.path().join("stop");
    let load = Command::new(python())
        .arg(repo_root().join("tests/clients/mixed_load.py"))
        .env("TRAMY_TOKEN", server.token())
        .args(["--dimse-port", &server.port()])
        .args(["--http-port", &server.http_port.to_string()])
        .arg("--template")
        .arg(repo_root().join("dicom-samples/ct_small_explicit_le.dcm"))
        .arg("--ack-file")
        .arg(&ack_file)
        .arg("--stop-file")
        .arg(&stop_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the load client starts");
    for kill in 0..10 {
        let before = read_acks(&ack_file).len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while read_acks(&ack_file).len() < before + 15 {
            assert!(
                Instant::now() < deadline,
                "the load stalled before kill {kill}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server.restart();
    }
    std::fs::write(&stop_file, b"").unwrap();
    let out = load.wait_with_output().unwrap();
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "load client output: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        counts["dimse"].as_u64().unwrap() > 0 && counts["stow"].as_u64().unwrap() > 0,
        "both protocols stored instances: {counts}"
    );
    let acked = read_acks(&ack_file);
    assert_all_present(&server, &acked);
    let objects = server.object_files().len() as i64;
    assert_eq!(
        objects,
        server.indexed_instances(),
        "every object is indexed"
    );
    let verify = tramy(&server, &["verify"]);
    assert_success(&verify, "tramy verify after ten SIGKILLs");
}
