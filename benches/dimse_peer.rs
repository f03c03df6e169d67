//! Sending to a DIMSE peer (`dimse::peer_scu`, issue #10): N copies of the CT sample (fresh UIDs,
//! `benches/make_instances.py`) sent by `store_instances` from an archive opened in this process
//! to a second tramy, against dcmtk's `storescu` sending the same files to a third (the plain
//! C-STORE baseline); then Storage Commitment of all N, where the peer reads and verifies each.
//! Prints one line per figure. Run: `cargo bench --bench dimse_peer` (N: `BENCH_INSTANCES`,
//! default 500); dcmtk must be installed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use tramy::access::Principal;
use tramy::dimse::peer_scu::{self, DimsePeer, SendOutcome};

fn main() {
    let n: usize = std::env::var("BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    let out = std::process::Command::new("python3")
        .arg(repo_root().join("benches/make_instances.py"))
        .arg(repo_root().join("dicom-samples/ct_small_explicit_le.dcm"))
        .arg(&files)
        .args([&n.to_string(), "1"])
        .output()
        .unwrap();
    assert_success(&out, "make_instances.py");
    let part = files.join("part0");
    let bytes: u64 = walk(&part)
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    let mb = bytes as f64 / 1e6;

    // Baseline: dcmtk storescu to a fresh tramy.
    let baseline = TramyServer::start();
    let t = Instant::now();
    let port = baseline.port();
    let out = dcmtk(
        "storescu",
        &[
            "-aec",
            "TRAMY",
            "+sd",
            "127.0.0.1",
            &port,
            part.to_str().unwrap(),
        ],
        None,
    );
    assert_success(&out, "storescu");
    report("storescu -> tramy", n, mb, t.elapsed());

    // The sender: the same files filed by a tramy, then opened here.
    let mut sender = TramyServer::start();
    let port = sender.port();
    let out = dcmtk(
        "storescu",
        &[
            "-aec",
            "TRAMY",
            "+sd",
            "127.0.0.1",
            &port,
            part.to_str().unwrap(),
        ],
        None,
    );
    assert_success(&out, "storescu");
    sender.kill();
    let instances = filed(&sender.data_dir);
    assert_eq!(instances.len(), n);
    let config = tramy::config::Config {
        data_dir: sender.data_dir.clone(),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let archive = rt
        .block_on(async { tramy::ingest::Archive::open(&config) })
        .unwrap();

    let receiver = TramyServer::start();
    let peer = DimsePeer {
        ae_title: "TRAMY".into(),
        host: "127.0.0.1".into(),
        port: receiver.dimse_port,
        calling_ae_title: "BENCH".into(),
    };
    let t = Instant::now();
    let sent = rt
        .block_on(peer_scu::store_instances(
            &archive,
            &Principal::system(),
            &peer,
            &instances,
        ))
        .unwrap();
    report("peer_scu::store_instances -> tramy", n, mb, t.elapsed());
    assert!(sent.iter().all(|(_, o)| *o == SendOutcome::Stored));

    let refs: Vec<(String, String)> = instances
        .iter()
        .map(|i| (i.sop_class_uid.clone(), i.sop_instance_uid.clone()))
        .collect();
    let t = Instant::now();
    let result = rt
        .block_on(peer_scu::request_commitment(
            &peer,
            &refs,
            Duration::from_secs(600),
        ))
        .unwrap();
    report(
        "request_commitment (peer verifies each)",
        n,
        mb,
        t.elapsed(),
    );
    assert_eq!(result.committed.len(), n);
}

fn report(what: &str, n: usize, mb: f64, took: Duration) {
    let s = took.as_secs_f64();
    println!(
        "{what}: {n} instances, {mb:.1} MB in {s:.2} s = {:.0} instances/s, {:.1} MB/s",
        n as f64 / s,
        mb / s
    );
}

/// The filed instances of a data folder, read beside tramy.
fn filed(data_dir: &std::path::Path) -> Vec<tramy::store::StoredInstance> {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("index.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, \
             i.sop_class_uid, i.transfer_syntax_uid, i.object_key, i.size_bytes, i.sha256 \
             FROM instances i JOIN series se ON i.series_fk = se.id \
             JOIN studies st ON se.study_fk = st.id ORDER BY i.id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(tramy::store::StoredInstance {
            study_instance_uid: r.get(0)?,
            series_instance_uid: r.get(1)?,
            sop_instance_uid: r.get(2)?,
            sop_class_uid: r.get(3)?,
            transfer_syntax_uid: r.get(4)?,
            object_key: r.get(5)?,
            size_bytes: r.get(6)?,
            sha256: r.get(7)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}
