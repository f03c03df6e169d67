//! Backup and restore of an archive on PostgreSQL, as `docs/deploy.md` says to do it: `pg_dump`
//! of the index while tramy runs, then a copy of the objects; restored with `pg_restore` into a
//! new database and the copied objects, then `tramy reindex` for what arrived between the two
//! copies. The restored archive answers the same QIDO-RS and C-FIND queries and serves the same
//! objects.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// What a viewer and a modality would ask, and the answers, as comparable text.
fn answers(server: &TramyServer, study: &str) -> Vec<String> {
    let mut out = Vec::new();
    for path in [
        "/dicomweb/studies?includefield=all".to_string(),
        format!("/dicomweb/studies/{study}/series"),
        format!("/dicomweb/studies/{study}/instances?includefield=all"),
        "/dicomweb/studies?PatientName=*&ModalitiesInStudy=CT".to_string(),
    ] {
        let r = server.http("GET", &path, &[("Accept", "application/dicom+json")], b"");
        assert_eq!(r.status, 200, "{path}");
        let mut items: Vec<String> = r
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            // Retrieve URLs name the server that answers; the rest must be the same.
            .map(|v| v.to_string().replace(&server.dicomweb(), "{server}"))
            .collect();
        items.sort();
        out.push(format!("{path}: {}", items.join("\n")));
    }
    let found = c_find_study(server, study);
    let mut lines: Vec<&str> = found.lines().filter(|l| l.contains('(')).collect();
    lines.sort();
    out.push(format!("C-FIND: {}", lines.join("\n")));
    out
}

#[test]
fn pg_dump_and_an_object_copy_restore_an_archive_that_answers_the_same() {
    if !common::postgres::installed() {
        eprintln!("SKIPPED: PostgreSQL is not installed (Debian postgresql; .ci/run installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects");
    let objects_env = |dir: &Path| {
        vec![(
            "TRAMY_OBJECT_STORE_URL".to_string(),
            format!("file://{}", dir.display()),
        )]
    };
    let index = common::postgres::new_database();
    let original = TramyServer::start_node("", &[], objects_env(&objects), Some(index.clone()));
    let (study, files) = make_study_with(&tmp.path().join("study"), 10, &["--modality", "CT"]);
    let (before, after) = files.split_at(7);
    let paths = |f: &[PathBuf]| f.to_vec();
    let before = paths(before);
    original.store_files(
        &before.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        "storescu before the backup",
    );

    // The backup: the index first (while tramy runs), then what arrives meanwhile, then the
    // objects.
    let dump = tmp.path().join("tramy.dump");
    let out = Command::new(common::postgres::tool("pg_dump"))
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(&index)
        .output()
        .unwrap();
    assert_success(&out, "pg_dump");
    let after = paths(after);
    original.store_files(
        &after.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        "storescu between the index copy and the objects copy",
    );
    let copied = tmp.path().join("objects-copy");
    copy_dir(&objects, &copied);
    let expected = answers(&original, &study);

    // The restore: a new database from the dump, a node on it and on the copied objects.
    let restored_index = common::postgres::new_database();
    let out = Command::new(common::postgres::tool("pg_restore"))
        .args(["--no-owner", "-d"])
        .arg(&restored_index)
        .arg(&dump)
        .output()
        .unwrap();
    assert_success(&out, "pg_restore");
    let restored =
        TramyServer::start_beside_on(&original, objects_env(&copied), Some(restored_index));
    assert_eq!(
        restored.indexed_instances(),
        7,
        "the index as it was copied"
    );
    let said = restored.cli(&["reindex"]);
    assert!(
        said.contains("indexed now: 3"),
        "reindex says it indexed the three later instances: {said}"
    );
    assert_eq!(restored.indexed_instances(), 10);
    assert_eq!(
        answers(&restored, &study),
        expected,
        "the restored archive answers the same"
    );
}
