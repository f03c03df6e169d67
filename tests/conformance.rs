//! The conformance statement is written from the code's own tables, and the committed copy is
//! the one the code writes: it cannot drift.

use std::process::Command;

#[test]
fn the_committed_conformance_statement_is_what_the_code_writes() {
    let out = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .arg("conformance")
        .env_remove("TRAMY_CONFIG")
        .env_remove("TRAMY_AE_TITLE")
        .env_remove("TRAMY_DIMSE_ADDR")
        .output()
        .expect("tramy runs");
    assert!(out.status.success());
    let written = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/conformance-statement.md"),
    )
    .unwrap();
    assert!(
        written == committed,
        "docs/conformance-statement.md is stale: run `cargo run -- conformance > docs/conformance-statement.md`"
    );
    for row in [
        "| CT Image Storage | `1.2.840.10008.5.1.4.1.1.2` |",
        "| Comprehensive SR Storage | `1.2.840.10008.5.1.4.1.1.88.33` |",
        "| Study Root Query/Retrieve Information Model - GET | `1.2.840.10008.5.1.4.1.2.2.3` |",
        "| JPEG Baseline (Process 1) | `1.2.840.10008.1.2.4.50` | yes | yes |",
        "| STUDY | StudyDate | (0008,0020) | single value, range |",
    ] {
        assert!(written.contains(row), "the statement lists {row}");
    }
    assert!(
        written.contains("`ISO_IR 192`"),
        "UTF-8 is a supported character set"
    );
}

#[test]
fn every_subcommand_reads_the_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.toml");
    std::fs::write(
        &file,
        "[dimse]\nae_title = \"SITEPACS\"\nmax_associations = 12\n[triage]\nmodels_dir = \"/nowhere\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tramy"))
            .args(args)
            .arg("--config")
            .arg(&file)
            .env_remove("TRAMY_AE_TITLE")
            .output()
            .expect("tramy runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let statement = run(&["conformance"]);
    assert!(statement.contains("title `SITEPACS`"), "{statement}");
    assert!(
        statement.contains("| 12 (`max_associations`)"),
        "{statement}"
    );
    let listed = run(&["models", "list"]);
    assert!(
        listed.contains("no models in /nowhere"),
        "models list uses [triage] models_dir: {listed}"
    );
}
