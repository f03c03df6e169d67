//! `tramy import DIR`: a folder of files goes through the ingest path with a summary people can act on.

mod common;

use std::process::Command;

use common::*;

fn import(data_dir: &std::path::Path, dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tramy"))
        .arg("import")
        .arg(dir)
        .env("TRAMY_DATA_DIR", data_dir)
        .env_remove("TRAMY_CONFIG")
        .output()
        .expect("tramy import runs")
}

#[test]
fn importing_a_folder_stores_instances_skips_other_files_and_reports_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The committed samples plus the files beside them that are not instances.
    let samples_dir = tmp.path().join("in");
    std::fs::create_dir_all(&samples_dir).unwrap();
    for file in samples().into_iter().chain(
        ["README.md", "fetch-chest-cr.sh", "prepare-from-pydicom.py"]
            .map(|f| repo_root().join("dicom-samples").join(f)),
    ) {
        std::fs::copy(&file, samples_dir.join(file.file_name().unwrap())).unwrap();
    }
    let committed = samples().len();

    let first = import(&data, &samples_dir);
    let summary = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "import failed:\n{summary}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        summary.contains(&format!("stored: {committed}")),
        "{summary}"
    );
    assert!(
        summary.contains("skipped (not DICOM instances): 3"),
        "README, scripts are skipped: {summary}"
    );

    let again = import(&data, &samples_dir);
    let summary = String::from_utf8_lossy(&again.stdout);
    assert!(
        summary.contains(&format!("duplicates: {committed}")),
        "{summary}"
    );
    assert!(summary.contains("stored: 0"), "{summary}");
}

#[test]
fn a_broken_file_is_listed_with_its_reason_and_fails_the_import() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("in");
    std::fs::create_dir_all(&folder).unwrap();
    let good = std::fs::read(repo_root().join("dicom-samples/ct_small_explicit_le.dcm")).unwrap();
    std::fs::write(folder.join("good.dcm"), &good).unwrap();
    std::fs::write(folder.join("truncated.dcm"), &good[..good.len() / 2]).unwrap();
    let out = import(&tmp.path().join("data"), &folder);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a failed file makes the exit status non-zero"
    );
    assert!(summary.contains("stored: 1"), "{summary}");
    assert!(summary.contains("failed: 1"), "{summary}");
    assert!(
        summary.contains("truncated.dcm"),
        "the failed file is named: {summary}"
    );
    assert!(
        summary.contains("cannot be decoded"),
        "with its reason: {summary}"
    );
}
