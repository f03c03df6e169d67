//! Schema upgrades: a data folder written before the index schema was versioned opens with this
//! tramy, is migrated to the latest schema version, and its instances are intact: queried,
//! retrieved and still the rows that were written (not rebuilt from the objects by start-up
//! reconciliation).
//!
//! The fixture, `tests/fixtures/pre-migrations-data` (180 kB), is what tramy wrote before
//! migrations (commit 9a6e629, after issue #7): `tramy serve`, then dcmtk's
//! `storescu -aet FIXTURE -aec TRAMY 127.0.0.1 PORT dicom-samples/ct_small_explicit_le.dcm
//! dicom-samples/mr_small_explicit_le.dcm`, the WAL checkpointed into `index.sqlite`, and
//! `index.sqlite` with `objects/` copied.

mod common;

use std::path::Path;

use common::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("fixture folder") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// A server running on a copy of the pre-migration data folder.
fn start_on_fixture() -> TramyServer {
    let mut server = TramyServer::start_with_local_objects("");
    server.kill();
    std::fs::remove_dir_all(&server.data_dir).expect("fresh data folder removed");
    copy_dir(
        &repo_root().join("tests/fixtures/pre-migrations-data"),
        &server.data_dir,
    );
    server.restart();
    server
}

fn index(server: &TramyServer) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        server.data_dir.join("index.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("index opens")
}

#[test]
fn a_pre_migration_data_folder_is_migrated_and_served_intact() {
    if common::postgres::skipped_as_sqlite_only(
        "upgrades an SQLite data folder written by earlier tramy",
    ) {
        return;
    }
    let server = start_on_fixture();

    let version: usize = index(&server)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(
        version,
        tramy::store::SCHEMA_VERSION,
        "migrated to the latest"
    );

    // The rows written before the upgrade, with their delivery records: not re-indexed.
    let sources: Vec<String> = index(&server)
        .prepare("SELECT source FROM instances ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sources, ["FIXTURE", "FIXTURE"], "{}", server.log());

    let json = [("Accept", "application/dicom+json")];
    let studies = server.http("GET", "/dicomweb/studies", &json, b"");
    assert_eq!(studies.status, 200);
    assert_eq!(studies.json().as_array().map(Vec::len), Some(2));

    let (study, series, sop) = ct_uids();
    let found = server.http(
        "GET",
        &format!("/dicomweb/studies?StudyInstanceUID={study}"),
        &json,
        b"",
    );
    assert_eq!(found.json()[0]["0020000D"]["Value"][0], study.as_str());
    // Patients filed before migration 10 get their name words at the first open after it, so
    // an accent- and word-insensitive search finds them too.
    let by_word = server.http(
        "GET",
        "/dicomweb/studies?PatientName=ct1&fuzzymatching=true",
        &json,
        b"",
    );
    assert_eq!(by_word.status, 200, "{}", server.log());
    assert_eq!(by_word.json()[0]["0020000D"]["Value"][0], study.as_str());

    let instance = format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}");
    let metadata = server.http("GET", &format!("{instance}/metadata"), &json, b"");
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.json()[0]["00080018"]["Value"][0], sop.as_str());

    let wado = server.http(
        "GET",
        &instance,
        &[("Accept", "multipart/related; type=\"application/dicom\"")],
        b"",
    );
    assert_eq!(wado.status, 200, "{}", server.log());
    // The data set as the fixture's object holds it (dcmtk's storescu re-wrote the sample's).
    let object = walk(&repo_root().join("tests/fixtures/pre-migrations-data/objects"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&format!("{sop}.dcm")))
        .expect("the CT's object in the fixture");
    let dataset = dataset_bytes(&object);
    assert!(
        wado.body.windows(dataset.len()).any(|w| w == dataset),
        "WADO-RS returns the stored data set unchanged"
    );
}

#[test]
fn a_migrated_data_folder_takes_new_instances() {
    if common::postgres::skipped_as_sqlite_only(
        "upgrades an SQLite data folder written by earlier tramy",
    ) {
        return;
    }
    let server = start_on_fixture();
    let mr = repo_root().join("dicom-samples/mr_small_implicit_le.dcm");
    server.store_files(&[mr.as_path()], "an MR after the upgrade");
    assert_eq!(server.indexed_instances(), 3);
}

#[test]
fn an_index_from_a_newer_tramy_is_refused_and_left_as_it_is() {
    if common::postgres::skipped_as_sqlite_only(
        "upgrades an SQLite data folder written by earlier tramy",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    copy_dir(
        &repo_root().join("tests/fixtures/pre-migrations-data"),
        &data,
    );
    let newer = tramy::store::SCHEMA_VERSION + 1;
    rusqlite::Connection::open(data.join("index.sqlite"))
        .and_then(|c| c.pragma_update(None, "user_version", newer))
        .expect("index marked as newer");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tramy"))
        .arg("serve")
        .env("TRAMY_DATA_DIR", &data)
        .env("TRAMY_DIMSE_ADDR", "127.0.0.1:0")
        .env("TRAMY_HTTP_ADDR", "127.0.0.1:0")
        .env_remove("TRAMY_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tramy starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        status.is_some_and(|s| !s.success()),
        "tramy served a newer index: {said}"
    );
    assert!(
        said.contains("written by a newer tramy"),
        "the reason is given: {said}"
    );
    let version: usize = rusqlite::Connection::open(data.join("index.sqlite"))
        .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .expect("user_version");
    assert_eq!(version, newer, "the index is not touched");
}
