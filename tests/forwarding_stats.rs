//! Counts a facility can check, and reconciliation (issue #10 item 4): a station's counts per
//! destination match what arrived at its hospital (the hospital's index and the deliveries
//! endpoint), `tramy stats` prints the API's numbers, and after the hospital's data folder is
//! restored from an older backup, `tramy reconcile` finds what the hospital lost, re-queues it,
//! and it arrives again.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// The hospital: facility FB and a `node` token for the station to present.
fn hospital() -> (TramyServer, String) {
    let hospital = TramyServer::start_with_local_objects("");
    hospital.cli(&["facility", "add", "FB", "--name", "Provincial hospital B"]);
    let node = hospital.cli(&["token", "create", "--facility", "FB", "--role", "node"]);
    (hospital, node)
}

/// The station's configuration, forwarding everything to `hospital` (a peer of `kind`) with
/// `node`'s token; written to `dir/station.toml` for the station's own commands.
fn station_config(dir: &Path, hospital: &TramyServer, node: &str, kind: &str) -> PathBuf {
    let token_file = dir.join("hospital.token");
    std::fs::write(&token_file, node).unwrap();
    let toml = format!(
        r#"
[[peers]]
name = "hospital"
kind = "{kind}"
dicomweb_url = "{}"
token_file = "{}"
facility = "FB"

[[forward]]
to = "hospital"

[forwarding]
max_backoff = "2s"
batch_instances = 2
"#,
        hospital.dicomweb(),
        token_file.display()
    );
    let path = dir.join("station.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn station(config: &Path) -> TramyServer {
    TramyServer::start_with_config(&std::fs::read_to_string(config).unwrap())
}

/// A study of `n` CT instances in `dir`; its UID and files.
fn make_study(dir: &Path, n: usize) -> (String, Vec<PathBuf>) {
    make_study_with(dir, n, &[])
}

fn store(station: &TramyServer, files: &[PathBuf], what: &str) {
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    station.store_files(&refs, what);
}

fn get_json(server: &TramyServer, path: &str) -> Value {
    let r = server.http("GET", path, &[("Accept", "application/json")], b"");
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The station's delivery of `study` to the hospital, once its instances are all `state`.
fn wait_delivered(station: &TramyServer, study: &str, n: i64, state: &str) -> Value {
    wait_for(&format!("the study to be {state} at the hospital"), || {
        let d = get_json(station, &format!("/api/v1/studies/{study}/deliveries"));
        let entry = d
            .as_array()?
            .iter()
            .find(|e| e["peer"] == "hospital")?
            .clone();
        (entry["state"] == state && entry["instances"][state] == n).then_some(entry)
    })
}

fn destination<'a>(counts: &'a Value, peer: &str) -> &'a Value {
    counts["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["peer"] == peer)
        .unwrap_or_else(|| panic!("no destination {peer} in {counts}"))
}

/// The sum over the days of `f` of each day's counts.
fn sum_days(stats: &Value, f: impl Fn(&Value) -> i64) -> i64 {
    stats["days"].as_array().unwrap().iter().map(f).sum()
}

/// `tramy ARGS` on the station's data folder with its configuration; stdout.
fn station_cli(station: &TramyServer, config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("TRAMY_DATA_DIR", &station.data_dir)
        .envs(station.process_env())
        .env_remove("TRAMY_CONFIG")
        .output()
        .unwrap();
    assert_success(&out, &args.join(" "));
    String::from_utf8(out.stdout).unwrap()
}

/// The SOP Instance UIDs of `study` at `server` (QIDO-RS).
fn sop_uids(server: &TramyServer, study: &str) -> Vec<String> {
    let r = server.http(
        "GET",
        &format!("/dicomweb/studies/{study}/instances"),
        &[("Accept", "application/dicom+json")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let found: Value = serde_json::from_slice(&r.body).unwrap();
    let mut uids: Vec<String> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["00080018"]["Value"][0].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    uids
}

/// Backs up a running server's data folder into `dir/backup` as the README says: the index
/// first (an SQLite online copy), then the objects and keys.
fn back_up(server: &TramyServer, dir: &Path) -> PathBuf {
    assert!(server.index_url.is_none(), "an SQLite index to copy");
    let index_copy = dir.join("index-backup.sqlite");
    let conn = rusqlite::Connection::open(server.data_dir.join("index.sqlite")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    conn.execute("VACUUM INTO ?1", [index_copy.display().to_string()])
        .unwrap();
    let backup = dir.join("backup");
    copy_dir(&server.data_dir, &backup);
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(backup.join(name));
    }
    std::fs::rename(index_copy, backup.join("index.sqlite")).unwrap();
    backup
}

#[test]
fn the_stations_counts_match_what_arrived_at_the_hospital_and_tramy_stats_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let (hospital, node) = hospital();
    let config = station_config(dir.path(), &hospital, &node, "tramy");
    let station = station(&config);
    let (study, files) = make_study(&dir.path().join("study"), 4);
    store(&station, &files, "four instances to the station");
    let delivery = wait_delivered(&station, &study, 4, "verified");

    let stats = get_json(&station, "/api/v1/facilities/LOCAL/stats");
    let totals = &stats["totals"];
    assert_eq!(totals["received"]["instances"], 4, "{stats}");
    assert_eq!(totals["received"]["studies"], 1);
    let to_hospital = destination(totals, "hospital");
    let arrived = hospital.indexed_instances();
    assert_eq!(arrived, 4);
    for step in ["queued", "sent", "stored", "verified"] {
        assert_eq!(to_hospital[step]["instances"], arrived, "{step}: {stats}");
        assert_eq!(to_hospital[step]["studies"], 1, "{step}");
    }
    assert_eq!(
        to_hospital["verified"]["instances"],
        delivery["instances"]["verified"]
    );
    for state in ["pending", "failed", "dead"] {
        assert_eq!(to_hospital[state]["instances"], 0, "{state}");
    }
    assert_eq!(to_hospital["reasons"], serde_json::json!([]));
    // The days add up to the period.
    assert_eq!(
        sum_days(&stats, |d| destination(d, "hospital")["verified"]
            ["instances"]
            .as_i64()
            .unwrap()),
        4
    );
    assert_eq!(
        sum_days(&stats, |d| d["received"]["instances"].as_i64().unwrap()),
        4
    );

    // The hospital counts the same instances as received, delivered by the station's facility.
    let at_hospital = get_json(&hospital, "/api/v1/facilities/FB/stats");
    assert_eq!(at_hospital["totals"]["received"]["instances"], 4);
    let from = &at_hospital["totals"]["from_peers"];
    assert_eq!(from.as_array().unwrap().len(), 1, "{at_hospital}");
    assert_eq!(from[0]["facility"], "LOCAL");
    assert_eq!(from[0]["stored"]["instances"], 4);
    assert_eq!(from[0]["failed"], 0);

    // `tramy stats` prints the same: the API's JSON, and a table with the same numbers.
    let printed: Value =
        serde_json::from_str(&station.cli(&["stats", "--facility", "LOCAL", "--json"])).unwrap();
    assert_eq!(printed, stats);
    let table = station.cli(&["stats", "--facility", "LOCAL"]);
    let total_line: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("total") && l.contains("hospital"))
        .unwrap_or_else(|| panic!("no total line for hospital:\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        total_line,
        ["total", "hospital", "4", "4", "4", "4", "0", "0", "0"],
        "{table}"
    );
}

#[test]
fn failures_are_counted_per_destination_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let (hospital, node) = hospital();
    let config = station_config(dir.path(), &hospital, &node, "tramy");
    // A second destination nobody answers at: every attempt fails, and is retried.
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        r#"
[[peers]]
name = "hub"
dicomweb_url = "http://127.0.0.1:{}/dicomweb"
facility = "HUB"

[[forward]]
to = "hub"
"#,
        free_port()
    ));
    std::fs::write(&config, &toml).unwrap();
    let station = station(&config);
    let (study, files) = make_study(&dir.path().join("study"), 3);
    store(&station, &files, "three instances to the station");
    wait_delivered(&station, &study, 3, "verified");
    let stats = wait_for("the hub's instances to have failed", || {
        let stats = get_json(&station, "/api/v1/facilities/LOCAL/stats");
        let hub = destination(&stats["totals"], "hub").clone();
        (hub["failed"]["instances"] == 3).then_some(stats)
    });
    let totals = &stats["totals"];
    let hub = destination(totals, "hub");
    assert_eq!(hub["queued"]["instances"], 3);
    assert_eq!(hub["sent"]["instances"], 0);
    assert_eq!(hub["verified"]["instances"], 0);
    assert_eq!(hub["pending"]["instances"], 0);
    assert_eq!(hub["failed"]["studies"], 1);
    let reasons = hub["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{hub}");
    assert_eq!(reasons[0]["state"], "failed");
    assert_eq!(reasons[0]["instances"], 3);
    assert!(
        reasons[0]["reason"].as_str().unwrap().contains("hub"),
        "the reason names the peer: {hub}"
    );
    // Reconciling with a peer that is not configured, or with nothing sent to it, says so.
    let unknown = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .arg("--config")
        .arg(&config)
        .args(["reconcile", "--peer", "nowhere"])
        .env("TRAMY_DATA_DIR", &station.data_dir)
        .envs(station.process_env())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no peer named nowhere"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let nothing = station_cli(&station, &config, &["reconcile", "--peer", "hub"]);
    assert!(nothing.contains("peer hub: 0 instance(s)"), "{nothing}");
    // The hospital is counted apart, all verified.
    assert_eq!(destination(totals, "hospital")["verified"]["instances"], 3);
    let table = station.cli(&["stats", "--facility", "LOCAL"]);
    assert!(table.contains("why instances failed"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("hub") && l.contains("failed") && l.contains(" 3 ")),
        "{table}"
    );
}

#[test]
fn ai_flags_raised_on_the_facilitys_instances_are_counted() {
    // The test model with a threshold every image passes.
    let (dir, _) =
        models_dir(&TEST_MODEL_MANIFEST.replace("threshold = 0.5", "threshold = 0.000001"));
    let server = TramyServer::start_with_config(&format!(
        "[triage]\nmodels_dir = \"{}\"\n",
        dir.path().join("models").display()
    ));
    let mr = repo_root().join("dicom-samples/mr_small_explicit_le.dcm");
    let ct = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    server.store_files(&[&mr, &ct], "an MR and a CT");
    let object = dicom_object::open_file(&mr).unwrap();
    let study =
        tramy::dicom::attributes::text(&object, dicom_dictionary_std::tags::STUDY_INSTANCE_UID);
    let flagged = wait_for("the MR's finding", || {
        let r = server.http(
            "GET",
            &format!("/api/v1/studies/{study}/findings"),
            &[],
            b"",
        );
        let v: Value = serde_json::from_slice(&r.body).ok()?;
        let all = v.as_array()?;
        (!all.is_empty()).then(|| all.iter().filter(|f| f["flagged"] == true).count())
    });
    assert_eq!(flagged, 1, "the test model flags every MR");
    let stats = get_json(&server, "/api/v1/facilities/LOCAL/stats");
    assert_eq!(
        stats["totals"]["ai_flags"],
        serde_json::json!({"instances": 1, "studies": 1}),
        "{stats}"
    );
    assert_eq!(stats["totals"]["received"]["instances"], 2);
    // Flags count for the facility whose instance it is, not for another.
    server.cli(&["facility", "add", "FB", "--name", "Provincial hospital B"]);
    let other = get_json(&server, "/api/v1/facilities/FB/stats");
    assert_eq!(other["totals"]["ai_flags"]["instances"], 0);
    assert_eq!(other["days"], serde_json::json!([]));
}

#[test]
fn the_period_is_checked_and_only_the_facilitys_own_staff_read_its_counts() {
    let (hospital, _node) = hospital();
    let bad = [
        "/api/v1/facilities/FB/stats?from=2025-01-01&to=2026-11-30",
        "/api/v1/facilities/FB/stats?from=30%2F11%2F2026",
        "/api/v1/facilities/FB/stats?from=2026-11-30&to=2026-11-01",
        "/api/v1/facilities/FB/stats?since=2026-11-01",
    ];
    for path in bad {
        let (code, body) = hospital.http_get(path).unwrap();
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains("detail"), "{path}: a reason: {body}");
    }
    let (code, body) = hospital
        .http_get("/api/v1/facilities/FB/stats?from=2025-01-01&to=2026-11-30")
        .unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("366"), "{body}");
    // An empty period is an answer with no days.
    let empty = get_json(
        &hospital,
        "/api/v1/facilities/FB/stats?from=2020-01-01&to=2020-12-31",
    );
    assert_eq!(empty["days"], serde_json::json!([]));
    assert_eq!(empty["from"], "2020-01-01");
    let (code, _) = hospital.http_get("/api/v1/facilities/NOPE/stats").unwrap();
    assert_eq!(code, 404);

    let ask = |token: &str, code: &str| {
        hospital
            .http(
                "GET",
                &format!("/api/v1/facilities/{code}/stats"),
                &[("Authorization", &format!("Bearer {token}"))],
                b"",
            )
            .status
    };
    let clinician = hospital.cli(&["token", "create", "--facility", "FB", "--role", "clinician"]);
    let node = hospital.cli(&["token", "create", "--facility", "FB", "--role", "node"]);
    // Without --facility, `tramy stats` prints every facility's.
    let all = hospital.cli(&["stats"]);
    assert!(
        all.contains("facility FB,") && all.contains("facility LOCAL,"),
        "{all}"
    );
    assert_eq!(ask(&clinician, "FB"), 200);
    assert_eq!(ask(&clinician, "LOCAL"), 403);
    assert_eq!(ask(&node, "FB"), 403);
}

/// The hospital's data folder is restored from a backup made (while it ran) after study A and
/// before study B: the station's outbox still says B was delivered. Reconciliation finds B missing,
/// re-queues it, and the station sends it again until it is confirmed (`confirmed`).
fn reconcile_after_a_restore(kind: &str, confirmed: &str) {
    if common::postgres::skipped_as_sqlite_only("backs the station up with an SQLite file copy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut hospital, node) = hospital();
    let config = station_config(dir.path(), &hospital, &node, kind);
    let station = station(&config);
    let (study_a, files_a) = make_study(&dir.path().join("a"), 3);
    store(&station, &files_a, "study A");
    wait_delivered(&station, &study_a, 3, confirmed);
    let backup = back_up(&hospital, dir.path());
    let (study_b, files_b) = make_study(&dir.path().join("b"), 3);
    store(&station, &files_b, "study B");
    wait_delivered(&station, &study_b, 3, confirmed);
    assert_eq!(hospital.indexed_instances(), 6);
    let lost = sop_uids(&station, &study_b);

    hospital.kill();
    std::fs::remove_dir_all(&hospital.data_dir).unwrap();
    copy_dir(&backup, &hospital.data_dir);
    hospital.restart();
    assert_eq!(hospital.indexed_instances(), 3);

    let report = |args: &[&str]| -> Value {
        let mut all = vec!["reconcile", "--peer", "hospital", "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&station_cli(&station, &config, &all)).unwrap()
    };
    let dry = report(&["--dry-run"]);
    assert_eq!(
        (
            &dry["checked"],
            &dry["held"],
            &dry["missing"],
            &dry["requeued"]
        ),
        (&6.into(), &3.into(), &3.into(), &0.into()),
        "{dry}"
    );
    let mut listed: Vec<String> = dry["missing_uids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, lost);
    // The dry run changed nothing.
    assert_eq!(
        wait_delivered(&station, &study_b, 3, confirmed)["instances"][confirmed],
        3
    );
    // --since after everything was sent: nothing to check.
    let tomorrow = (chrono::Utc::now() + chrono::TimeDelta::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(report(&["--since", &tomorrow, "--dry-run"])["checked"], 0);

    let done = report(&[]);
    assert_eq!(
        (&done["missing"], &done["requeued"]),
        (&3.into(), &3.into()),
        "{done}"
    );
    wait_delivered(&station, &study_b, 3, confirmed);
    assert_eq!(hospital.indexed_instances(), 6);
    assert_eq!(sop_uids(&hospital, &study_b), lost);
    let again = report(&[]);
    assert_eq!(
        (&again["held"], &again["missing"]),
        (&6.into(), &0.into()),
        "{again}"
    );
    // The table says it in words, without patient data.
    let text = station_cli(
        &station,
        &config,
        &["reconcile", "--peer", "hospital", "--dry-run"],
    );
    assert!(text.contains("6 held, 0 missing"), "{text}");
}

#[test]
fn reconcile_requeues_what_a_tramy_peer_restored_from_an_older_backup_lacks() {
    reconcile_after_a_restore("tramy", "verified");
}

#[test]
fn reconcile_asks_a_plain_dicomweb_peer_over_qido_rs() {
    reconcile_after_a_restore("dicomweb", "stored");
}
