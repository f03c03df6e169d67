//! SIGKILL in the middle of a stream of C-STOREs: after a restart, every instance that got a
//! success status is present, indexed and byte-identical, and every object is indexed.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

#[test]
fn acknowledged_instances_survive_sigkill_and_every_object_is_indexed() {
    let mut server = TramyServer::start_with_local_objects("");
    let tmp = tempfile::tempdir().unwrap();
    let ack_file = tmp.path().join("acks.txt");
    let mut streamer = stream_with_acks(&server, 5000, &ack_file);

    // Let a few hundred through, then kill the server while C-STOREs are in flight.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged(&ack_file).len() < 300 {
        assert!(
            Instant::now() < deadline,
            "the stream did not get going:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let _ = streamer.wait();
    let acked = acknowledged(&ack_file);
    assert!(acked.len() < 5000, "the kill landed mid-stream");

    server.restart();

    let mut rows: HashMap<String, (String, String)> = HashMap::new();
    for row in server.index_rows(
        "SELECT sop_instance_uid, object_key, sha256 FROM instances",
        &[],
    ) {
        let [uid, key, sha] = [&row[0], &row[1], &row[2]].map(|c| c.clone().expect("not null"));
        rows.insert(uid, (key, sha));
    }
    for (uid, sent_sha) in &acked {
        let (key, indexed_sha) = rows
            .get(uid)
            .unwrap_or_else(|| panic!("acknowledged instance {uid} is missing from the index"));
        assert_eq!(
            indexed_sha, sent_sha,
            "index records what was sent for {uid}"
        );
        let object = server.data_dir.join("objects").join(key);
        let stored_sha = hex::encode(Sha256::digest(dataset_bytes(&object)));
        assert_eq!(
            &stored_sha, sent_sha,
            "stored object of {uid} is byte-identical to what was sent"
        );
    }

    // Every object has an index row (objects without rows are indexed at start-up) and vice versa.
    let objects = server.object_files();
    assert_eq!(
        objects.len(),
        rows.len(),
        "objects and index rows match one to one"
    );
    for object in objects {
        let key = object
            .strip_prefix(server.data_dir.join("objects"))
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(
            rows.values().any(|(k, _)| *k == key),
            "object {key} has no index row"
        );
    }

    // And the server still takes instances after the crash.
    let out = pynetdicom("echoscu", &["-aec", "TRAMY", "127.0.0.1", &server.port()]);
    assert_success(&out, "echoscu after restart");
}

#[test]
fn an_object_written_without_its_index_row_is_indexed_at_start_up_never_deleted() {
    let mut server = TramyServer::start_with_local_objects("");
    server.store_files(
        &[&repo_root().join("dicom-samples/ct_small_explicit_le.dcm")],
        "storescu",
    );
    server.kill();
    // What a crash between the object write and the index commit leaves behind: an object that
    // may already have been acknowledged (the commit can be lost with the WAL, too).
    let orphan = server
        .data_dir
        .join("objects/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.dcm");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    let file = std::fs::read(repo_root().join("dicom-samples/mr_small_explicit_le.dcm")).unwrap();
    let received = tramy::dicom::ReceivedInstance::from_part10(file.into()).unwrap();
    let ours = received
        .to_part10(
            "1.2.840.10008.5.1.4.1.1.4",
            "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457",
            Some("MR1"),
        )
        .unwrap();
    std::fs::write(&orphan, ours).unwrap();
    // The node's journal of writes in flight names it, as the crash left it (start-up on
    // PostgreSQL looks only there; on SQLite it lists every object).
    let key = "studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.dcm";
    let journal = server.data_dir.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join(hex::encode(Sha256::digest(key))), key).unwrap();
    // And what a crash in the middle of an object write leaves: a staging file, never
    // acknowledged.
    let staged = server
        .data_dir
        .join("objects/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.6.dcm#4711");
    std::fs::write(&staged, b"half an object").unwrap();
    server.restart();
    assert!(orphan.exists(), "the object without index rows is kept");
    assert!(!staged.exists(), "the interrupted write was cleaned up");
    assert_eq!(server.object_files().len(), 2);
    assert_eq!(server.indexed_instances(), 2, "the object was indexed");
    assert_eq!(
        std::fs::read_dir(&journal).unwrap().count(),
        0,
        "start-up settled the journal"
    );
}
