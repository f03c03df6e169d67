//! The audit trail (issue #9 item 9): events appended in a hash chain by the index writer,
//! `tramy audit verify` naming the first edited or deleted event (run as a process with
//! `--config`, as beside a running server), the filters of `Index::audit_events` and who may
//! read which events.

mod common;

use common::TramyServer;

use std::path::PathBuf;
use std::process::{Command, Output};

use rusqlite::Connection;
use tramy::access::Principal;
use tramy::audit::{AuditAction, AuditFilter, AuditOutcome, ChainBreak, NewAuditEvent, PatientRef};
use tramy::auth::{Identity, Role};
use tramy::store::Index;

/// A data folder with its index and a config file naming it.
struct Trail {
    _tmp: tempfile::TempDir,
    data_dir: PathBuf,
    config: PathBuf,
    index: Index,
    runtime: tokio::runtime::Runtime,
}

impl Trail {
    fn new() -> Trail {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let config = tmp.path().join("tramy.toml");
        std::fs::write(
            &config,
            format!("data_dir = {:?}\n", data_dir.display().to_string()),
        )
        .expect("config");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let index = Index::open(&data_dir.join("index.sqlite"), false).expect("index");
        Trail {
            _tmp: tmp,
            data_dir,
            config,
            index,
            runtime,
        }
    }

    /// A separate connection to the index file, as a person with the file would open it.
    fn sqlite(&self) -> Connection {
        Connection::open(self.data_dir.join("index.sqlite")).expect("sqlite")
    }

    /// Records `events` without waiting, then one more that waits for its commit: the writer
    /// commits in queue order, so all are in the trail when this returns.
    fn record(&self, events: Vec<NewAuditEvent>) {
        self.runtime.block_on(async {
            for e in events {
                self.index.record_audit(e).await.expect("queued");
            }
            self.index
                .record_audit_committed(event(&system(), AuditAction::Administer, None, "flush"))
                .await
                .expect("committed");
        });
    }

    fn events(&self, who: &Principal, filter: AuditFilter) -> Vec<tramy::audit::AuditEvent> {
        self.runtime
            .block_on(self.index.audit_events(who, &filter))
            .expect("events")
    }

    fn details(&self, who: &Principal, filter: AuditFilter) -> Vec<String> {
        self.events(who, filter)
            .into_iter()
            .map(|e| e.detail)
            .collect()
    }

    fn verify(&self) -> tramy::audit::ChainReport {
        self.runtime
            .block_on(self.index.verify_audit_chain(&system()))
            .expect("verify")
    }

    /// `tramy audit verify --config CONFIG`, a process of its own.
    fn verify_command(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tramy"))
            .args(["audit", "verify", "--config"])
            .arg(&self.config)
            .env_remove("TRAMY_DATA_DIR")
            .env_remove("TRAMY_CONFIG")
            .output()
            .expect("tramy runs")
    }

    /// A study of patient `(id, issuer)` held by `facilities`.
    fn study(&self, uid: &str, patient: (&str, &str), facilities: &[&str]) {
        add_study(&self.sqlite(), uid, patient, facilities);
    }
}

/// A study of patient `(id, issuer)` held by `facilities`, as the ingest path writes its rows.
fn add_study(c: &Connection, uid: &str, patient: (&str, &str), facilities: &[&str]) {
    let key = if patient.0.is_empty() {
        format!("\u{1}unidentified\u{1}{uid}")
    } else {
        format!("{}\u{1}{}", patient.0, patient.1)
    };
    c.execute(
        "INSERT OR IGNORE INTO patients (patient_key, patient_id, issuer_of_patient_id, \
             patient_name, patient_name_norm, birth_date, sex) VALUES (?1, ?2, ?3, '', '', '', '')",
        rusqlite::params![key, patient.0, patient.1],
    )
    .expect("patient");
    let patient_fk: i64 = c
        .query_row(
            "SELECT id FROM patients WHERE patient_key = ?1",
            [&key],
            |r| r.get(0),
        )
        .expect("patient id");
    c.execute(
            "INSERT INTO studies (study_instance_uid, patient_fk, study_date, study_time, \
             accession_number, study_id, referring_physician_name, referring_physician_name_norm, \
             study_description, created_at) VALUES (?1, ?2, '20261130', '', '', '', '', '', '', '')",
            rusqlite::params![uid, patient_fk],
        )
        .expect("study");
    let study_fk = c.last_insert_rowid();
    for f in facilities {
        c.execute(
            "INSERT INTO study_facilities (study_fk, facility) VALUES (?1, ?2)",
            rusqlite::params![study_fk, f],
        )
        .expect("study facility");
    }
}

fn system() -> Principal {
    Principal::system()
}

fn user(subject: &str, facility: &str, role: Role) -> Principal {
    Principal::authenticated(Identity {
        subject: subject.into(),
        facility: (role != Role::Superadmin).then(|| facility.to_string()),
        roles: vec![role],
    })
    .from_address("127.0.0.1:40000")
}

fn event(who: &Principal, action: AuditAction, study: Option<&str>, detail: &str) -> NewAuditEvent {
    NewAuditEvent {
        actor: who.clone(),
        action,
        outcome: AuditOutcome::Success,
        study_instance_uid: study.map(str::to_string),
        patient: None,
        detail: detail.into(),
    }
}

fn numbered(n: usize) -> Vec<NewAuditEvent> {
    let who = user("token:a1", "A", Role::Clinician);
    (0..n)
        .map(|i| {
            event(
                &who,
                AuditAction::Query,
                None,
                &format!("GET /dicomweb/studies {i}"),
            )
        })
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn verify_fails_naming(trail: &Trail, words: &str) {
    let out = trail.verify_command();
    assert!(
        !out.status.success(),
        "verify passed a tampered trail: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(words),
        "expected {words:?} in: {}",
        text(&out)
    );
}

#[test]
fn events_are_chained_in_order_and_verify_counts_them() {
    let trail = Trail::new();
    trail.record(numbered(20));
    let report = trail.verify();
    assert_eq!(report.first_break, None);
    assert_eq!(report.verified, 21);
    let all = trail.events(&system(), AuditFilter::default());
    assert_eq!(all.len(), 21);
    // Newest first; each links to the one before it; the first to the genesis hash.
    for pair in all.windows(2) {
        assert_eq!(pair[0].id, pair[1].id + 1);
        assert_eq!(pair[0].prev_hash, pair[1].hash);
    }
    assert_eq!(all.last().unwrap().prev_hash, tramy::audit::chain::GENESIS);
    let out = trail.verify_command();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("21 audit event(s) verified"));
}

#[test]
fn the_archive_refuses_to_change_or_remove_an_event() {
    let trail = Trail::new();
    trail.record(numbered(2));
    let c = trail.sqlite();
    assert!(c
        .execute("UPDATE audit_events SET detail = 'x' WHERE id = 1", [])
        .is_err());
    assert!(c
        .execute("DELETE FROM audit_events WHERE id = 1", [])
        .is_err());
    assert_eq!(trail.verify().first_break, None);
}

/// Edits made by someone who has the file and removes the append-only triggers first.
fn tamper(trail: &Trail, sql: &str) {
    let c = trail.sqlite();
    c.execute_batch(&format!(
        "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete; \
         DROP TRIGGER audit_event_facilities_no_delete; {sql}"
    ))
    .expect("tampering");
}

#[test]
fn verify_names_an_edited_event() {
    let trail = Trail::new();
    trail.record(numbered(10));
    tamper(
        &trail,
        "UPDATE audit_events SET actor = 'token:someone-else' WHERE id = 4",
    );
    verify_fails_naming(&trail, "event 4 was changed");
    let report = trail.verify();
    assert_eq!(report.first_break, Some(ChainBreak::Edited { id: 4 }));
    assert_eq!(report.verified, 3);
}

#[test]
fn verify_names_a_deleted_event_and_a_deleted_newest_event() {
    let trail = Trail::new();
    trail.record(numbered(10));
    tamper(&trail, "DELETE FROM audit_events WHERE id = 5");
    verify_fails_naming(&trail, "event 5 is missing (deleted before event 6)");

    let trail = Trail::new();
    trail.record(numbered(10));
    tamper(&trail, "DELETE FROM audit_events WHERE id >= 10");
    verify_fails_naming(&trail, "events 10 to 11 are missing (deleted at the end");
}

#[test]
fn verify_names_the_event_after_a_replaced_one() {
    let trail = Trail::new();
    trail.record(numbered(6));
    // A forger who rewrites event 3 and recomputes its hash: event 3 holds, event 4's link not.
    let c = trail.sqlite();
    let (time, prev): (String, String) = c
        .query_row(
            "SELECT time, prev_hash FROM audit_events WHERE id = 3",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let forged = tramy::audit::chain::ChainedFields {
        id: 3,
        time: &time,
        actor: "token:a1",
        facility: Some("A"),
        roles: "clinician",
        address: Some("127.0.0.1:40000"),
        action: "query",
        outcome: "success",
        study_instance_uid: None,
        patient_id: None,
        patient_issuer: None,
        study_facilities: "",
        detail: "nothing to see",
    };
    let hash = tramy::audit::chain::event_hash(1, &prev, &forged).unwrap();
    tamper(
        &trail,
        &format!("UPDATE audit_events SET detail = 'nothing to see', hash = '{hash}' WHERE id = 3"),
    );
    assert_eq!(
        trail.verify().first_break,
        Some(ChainBreak::BrokenLink { id: 4 })
    );
    verify_fails_naming(&trail, "event 4 does not follow");
}

#[test]
fn an_event_names_the_patient_and_the_facilities_of_its_study() {
    let trail = Trail::new();
    trail.study("1.2.3.1", ("P1", "CCCD"), &["A", "B"]);
    trail.study("1.2.3.2", ("", ""), &["A"]);
    let who = user("token:b1", "B", Role::Clinician);
    let mut named = event(&who, AuditAction::Consent, None, "POST consents 201");
    named.patient = Some(PatientRef {
        id: "P9".into(),
        issuer: "CCCD".into(),
    });
    trail.record(vec![
        event(&who, AuditAction::Retrieve, Some("1.2.3.1"), "known"),
        event(
            &who,
            AuditAction::Retrieve,
            Some("1.2.3.2"),
            "no patient id",
        ),
        event(&who, AuditAction::Retrieve, Some("9.9.9"), "unknown study"),
        named,
    ]);
    let all = trail.events(&system(), AuditFilter::default());
    let by = |detail: &str| all.iter().find(|e| e.detail == detail).unwrap().clone();
    let known = by("known");
    assert_eq!(
        known.patient,
        Some(PatientRef {
            id: "P1".into(),
            issuer: "CCCD".into()
        })
    );
    assert_eq!(known.study_facilities, vec!["A", "B"]);
    assert_eq!(known.facility.as_deref(), Some("B"));
    assert_eq!(known.actor, "token:b1");
    assert_eq!(known.roles, vec!["clinician"]);
    assert_eq!(known.address.as_deref(), Some("127.0.0.1:40000"));
    assert_eq!(by("no patient id").patient, None);
    assert_eq!(by("unknown study").study_facilities, Vec::<String>::new());
    assert_eq!(by("POST consents 201").patient.unwrap().id, "P9");
    assert_eq!(trail.verify().first_break, None);
}

#[test]
fn filters_select_by_study_patient_facility_actor_and_time() {
    let trail = Trail::new();
    trail.study("1.2.3.1", ("P1", "CCCD"), &["A"]);
    trail.study("1.2.3.2", ("P2", "CCCD"), &["A"]);
    trail.study("1.2.3.3", ("", ""), &["B"]); // provisional, linked to P1 below
    let c = trail.sqlite();
    c.execute(
        "INSERT INTO patient_links (id, provisional_fk, patient_fk, linked_by, linked_at) \
         SELECT 'l1', (SELECT patient_fk FROM studies WHERE study_instance_uid = '1.2.3.3'), \
                (SELECT id FROM patients WHERE patient_id = 'P1'), 'x', '2026-11-30T00:00:00.000Z'",
        [],
    )
    .unwrap();
    let (a, b) = (
        user("token:a1", "A", Role::Clinician),
        user("token:b1", "B", Role::Clinician),
    );
    let mut consent = event(&a, AuditAction::Consent, None, "a consent for P1");
    consent.patient = Some(PatientRef {
        id: "P1".into(),
        issuer: "CCCD".into(),
    });
    trail.record(vec![
        event(&a, AuditAction::Query, None, "a query"),
        event(&b, AuditAction::Retrieve, Some("1.2.3.1"), "b reads P1"),
        event(&a, AuditAction::ReadMetadata, Some("1.2.3.2"), "a reads P2"),
        event(
            &b,
            AuditAction::Retrieve,
            Some("1.2.3.3"),
            "b reads the linked study",
        ),
        consent,
    ]);
    let s = system();
    let p1 = PatientRef::parse("CCCD|P1").unwrap();
    // "Who looked at my images": one query, including the study linked to the patient.
    assert_eq!(
        trail.details(
            &s,
            AuditFilter {
                patient: Some(p1),
                ..Default::default()
            }
        ),
        vec!["a consent for P1", "b reads the linked study", "b reads P1"]
    );
    assert_eq!(
        trail.details(
            &s,
            AuditFilter {
                study: Some("1.2.3.2".into()),
                ..Default::default()
            }
        ),
        vec!["a reads P2"]
    );
    assert_eq!(
        trail.details(
            &s,
            AuditFilter {
                facility: Some("B".into()),
                ..Default::default()
            }
        ),
        vec!["b reads the linked study", "b reads P1"]
    );
    assert_eq!(
        trail.details(
            &s,
            AuditFilter {
                actor: Some("token:a1".into()),
                limit: Some(2),
                ..Default::default()
            }
        ),
        vec!["a consent for P1", "a reads P2"]
    );
    let everything = trail.events(&s, AuditFilter::default());
    let last_time = everything[0].time.clone();
    assert!(trail
        .events(
            &s,
            AuditFilter {
                since: Some("2999-01-01T00:00:00.000Z".into()),
                ..Default::default()
            }
        )
        .is_empty());
    assert_eq!(
        trail
            .events(
                &s,
                AuditFilter {
                    until: Some("2000-01-01T00:00:00.000Z".into()),
                    ..Default::default()
                }
            )
            .len(),
        0
    );
    let since = tramy::audit::normalise_time_bound(&last_time, false);
    assert!(!trail
        .events(
            &s,
            AuditFilter {
                since,
                ..Default::default()
            }
        )
        .is_empty());
    // Paging: older than the newest.
    let page = trail.events(
        &s,
        AuditFilter {
            before_id: Some(everything[0].id),
            limit: Some(1),
            ..Default::default()
        },
    );
    assert_eq!(page[0].id, everything[1].id);
}

#[test]
fn a_facility_admin_reads_its_own_acts_and_events_about_its_studies_only() {
    let trail = Trail::new();
    trail.study("1.2.3.1", ("P1", "CCCD"), &["A"]);
    trail.study("1.2.3.2", ("P2", "CCCD"), &["B"]);
    let (a, b) = (
        user("token:a1", "A", Role::Clinician),
        user("token:b1", "B", Role::Clinician),
    );
    trail.record(vec![
        event(&a, AuditAction::Query, None, "a queries"),
        event(
            &b,
            AuditAction::Retrieve,
            Some("1.2.3.1"),
            "b reads A's study",
        ),
        event(
            &b,
            AuditAction::Retrieve,
            Some("1.2.3.2"),
            "b reads its own study",
        ),
        event(&b, AuditAction::Query, None, "b queries"),
    ]);
    let admin_a = user("token:adm", "A", Role::Admin);
    assert_eq!(
        trail.details(&admin_a, AuditFilter::default()),
        vec!["b reads A's study", "a queries"]
    );
    // A filter never widens the scope.
    assert!(trail
        .details(
            &admin_a,
            AuditFilter {
                study: Some("1.2.3.2".into()),
                ..Default::default()
            }
        )
        .is_empty());
    // A's staff probing B's study: A's admin sees the attempt, not B's patient or that B holds
    // it, and cannot find it by B's patient either; the hashes are the system's alone.
    let mut probe = event(
        &a,
        AuditAction::Retrieve,
        Some("1.2.3.2"),
        "a probes B's study",
    );
    probe.outcome = AuditOutcome::NotFound;
    trail.record(vec![probe]);
    let seen = trail.events(&admin_a, AuditFilter::default());
    let probe = seen
        .iter()
        .find(|e| e.detail == "a probes B's study")
        .unwrap();
    assert_eq!(probe.study_instance_uid.as_deref(), Some("1.2.3.2"));
    assert_eq!((&probe.patient, probe.study_facilities.len()), (&None, 0));
    assert!(seen
        .iter()
        .all(|e| e.hash.is_empty() && e.prev_hash.is_empty()));
    let p2 = PatientRef::parse("CCCD|P2").unwrap();
    assert!(trail
        .details(
            &admin_a,
            AuditFilter {
                patient: Some(p2.clone()),
                ..Default::default()
            }
        )
        .is_empty());
    let as_root = trail.events(
        &system(),
        AuditFilter {
            patient: Some(p2),
            ..Default::default()
        },
    );
    assert_eq!(as_root.len(), 2);
    assert!(as_root
        .iter()
        .all(|e| e.patient.is_some() && !e.hash.is_empty()));

    // Roles without ReadAudit are refused; a superadmin reads all.
    for refused in [a, Principal::anonymous()] {
        let answer = trail
            .runtime
            .block_on(trail.index.audit_events(&refused, &AuditFilter::default()));
        assert!(
            matches!(answer, Err(tramy::store::IndexError::Forbidden { .. })),
            "{answer:?}"
        );
    }
    let root = user("token:root", "", Role::Superadmin);
    assert_eq!(trail.details(&root, AuditFilter::default()).len(), 7);
}

#[test]
fn a_reopened_index_continues_the_chain() {
    let trail = Trail::new();
    trail.record(numbered(3));
    let again = Index::open(&trail.data_dir.join("index.sqlite"), false).expect("reopen");
    trail.runtime.block_on(async {
        again
            .record_audit_committed(event(&system(), AuditAction::Administer, None, "later"))
            .await
            .unwrap();
    });
    let report = trail.verify();
    assert_eq!((report.verified, report.first_break), (5, None));
}

/// A GET with `token` as its Bearer credential (`None`: no credential): status, content type,
/// body.
fn get(
    server: &TramyServer,
    path: &str,
    token: Option<&str>,
    accept: &str,
) -> (u16, String, Vec<u8>) {
    let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
    let r = server.http(
        "GET",
        path,
        &[("Authorization", auth.as_str()), ("Accept", accept)],
        b"",
    );
    let content_type = r.header("content-type").unwrap_or_default().to_string();
    (r.status, content_type, r.body)
}

fn json_of(answer: &(u16, String, Vec<u8>)) -> serde_json::Value {
    assert_eq!(answer.0, 200, "{}", String::from_utf8_lossy(&answer.2));
    serde_json::from_slice(&answer.2).expect("JSON body")
}

/// `tramy ARGS` on the running server's data folder.
fn tramy_beside(server: &TramyServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tramy"))
        .args(args)
        .env("TRAMY_DATA_DIR", &server.data_dir)
        .envs(server.process_env())
        .env_remove("TRAMY_CONFIG")
        .output()
        .expect("tramy runs")
}

fn token_for(server: &TramyServer, facility: &str, role: &str) -> String {
    let out = tramy_beside(
        server,
        &["token", "create", "--facility", facility, "--role", role],
    );
    common::assert_success(&out, "token create");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Checks the parts of an R4 AuditEvent that BALP and FHIR require.
fn assert_balp_shape(resource: &serde_json::Value) {
    assert_eq!(resource["resourceType"], "AuditEvent");
    assert!(resource["type"]["system"].is_string() && resource["type"]["code"].is_string());
    assert!(chrono::DateTime::parse_from_rfc3339(resource["recorded"].as_str().unwrap()).is_ok());
    let agents = resource["agent"].as_array().expect("agent");
    let requestor = agents
        .iter()
        .find(|a| a["requestor"] == true)
        .expect("a requestor agent");
    assert!(requestor["who"]["identifier"]["value"].is_string());
    assert!(requestor["type"]["coding"][0]["code"].is_string());
    assert!(agents.iter().all(|a| a["requestor"].is_boolean()));
    assert!(resource["source"]["observer"].is_object());
    assert!(["0", "4", "8", "12"].contains(&resource["outcome"].as_str().unwrap()));
}

#[test]
fn the_trail_is_read_over_http_as_json_and_as_a_fhir_bundle() {
    if common::postgres::skipped_as_sqlite_only(
        "writes studies and events beside the server with SQLite's own SQL; the trail over \
         HTTP on PostgreSQL is read by tests/access.rs",
    ) {
        return;
    }
    let server = TramyServer::start();
    let root = std::fs::read_to_string(server.data_dir.join("admin-token"))
        .expect("the first start's admin-token")
        .trim()
        .to_string();
    for code in ["A", "B"] {
        common::assert_success(
            &tramy_beside(&server, &["facility", "add", code, "--name", code]),
            "facility add",
        );
    }
    let (admin_a, clinician_a) = (
        token_for(&server, "A", "admin"),
        token_for(&server, "A", "clinician"),
    );
    // Events as the listeners record them, written beside the running server: its writer and
    // this one share the chain through the index file.
    add_study(
        &Connection::open(server.data_dir.join("index.sqlite")).unwrap(),
        "1.2.826.1.1",
        ("P1", "CCCD"),
        &["A"],
    );
    add_study(
        &Connection::open(server.data_dir.join("index.sqlite")).unwrap(),
        "1.2.826.1.2",
        ("P2", "CCCD"),
        &["B"],
    );
    let (seed_a, seed_b) = (
        user("token:seed-a", "A", Role::Clinician),
        user("token:seed-b", "B", Role::Clinician),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let index = Index::open(&server.data_dir.join("index.sqlite"), false).unwrap();
        for e in [
            event(
                &seed_a,
                AuditAction::Query,
                None,
                "GET /dicomweb/studies 200",
            ),
            event(
                &seed_b,
                AuditAction::Retrieve,
                Some("1.2.826.1.1"),
                "GET /dicomweb/studies/{study} 200",
            ),
            event(
                &seed_b,
                AuditAction::ReadMetadata,
                Some("1.2.826.1.2"),
                "GET /dicomweb/studies/{study}/metadata 200",
            ),
        ] {
            index.record_audit_committed(e).await.unwrap();
        }
    });

    // Credentials: none is 401, a role without the audit trail 403.
    assert_eq!(
        get(&server, "/api/v1/audit", None, "application/json").0,
        401
    );
    assert_eq!(
        get(
            &server,
            "/api/v1/audit",
            Some(&clinician_a),
            "application/json"
        )
        .0,
        403
    );

    // JSON: newest first, each naming its acting facility by code.
    let list = json_of(&get(
        &server,
        "/api/v1/audit?actor=token:seed-b",
        Some(&root),
        "application/json",
    ));
    let list = list.as_array().expect("a JSON list");
    assert_eq!(list.len(), 2);
    assert!(list[0]["id"].as_i64() > list[1]["id"].as_i64());
    assert!(list
        .iter()
        .all(|e| e["facility"] == "B" && e["actor"] == "token:seed-b"));
    assert_eq!(list[0]["action"], "read_metadata");
    assert_eq!(list[1]["patient"]["id"], "P1");
    assert_eq!(list[1]["study_facilities"][0], "A");

    // Who looked at P1's images: one query.
    let p1 = json_of(&get(
        &server,
        "/api/v1/audit?patient=CCCD%7CP1",
        Some(&root),
        "application/json",
    ));
    let p1: Vec<&serde_json::Value> = p1.as_array().unwrap().iter().collect();
    assert_eq!(p1.len(), 1);
    assert_eq!(p1[0]["actor"], "token:seed-b");

    // A's admin reads A's acts and the events about A's studies, not B's reading of B's study.
    let seen = json_of(&get(
        &server,
        "/api/v1/audit?limit=1000",
        Some(&admin_a),
        "application/json",
    ));
    let details: Vec<(&str, &str)> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    assert!(details.contains(&("token:seed-a", "GET /dicomweb/studies 200")));
    assert!(details.contains(&("token:seed-b", "GET /dicomweb/studies/{study} 200")));
    assert!(
        !details.iter().any(|(_, d)| d.contains("metadata")),
        "{details:?}"
    );

    // FHIR: a searchset Bundle of BALP AuditEvents, by `_format` or by Accept.
    let by_format = get(
        &server,
        "/api/v1/audit?patient=CCCD%7CP1&_format=fhir",
        Some(&root),
        "*/*",
    );
    assert_eq!(by_format.1, "application/fhir+json");
    let by_accept = get(
        &server,
        "/api/v1/audit?patient=CCCD%7CP1",
        Some(&root),
        "application/fhir+json",
    );
    assert_eq!(by_accept.1, "application/fhir+json");
    for bundle in [json_of(&by_format), json_of(&by_accept)] {
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "searchset");
        let entries = bundle["entry"].as_array().expect("entries");
        assert_eq!(entries.len(), 1);
        let resource = &entries[0]["resource"];
        assert_balp_shape(resource);
        assert_eq!(resource["type"]["code"], "rest");
        assert_eq!(resource["subtype"][0]["code"], "read");
        let entity = resource["entity"].as_array().expect("entities");
        assert!(entity.iter().any(|e| e["role"]["code"] == "1"
            && e["what"]["identifier"]["value"] == "P1"
            && e["what"]["identifier"]["system"] == "urn:tramy:issuer:CCCD"));
        assert!(entity
            .iter()
            .any(|e| e["what"]["identifier"]["system"] == "urn:dicom:uid"
                && e["what"]["identifier"]["value"] == "urn:oid:1.2.826.1.1"));
        assert_eq!(resource["agent"][0]["location"]["identifier"]["value"], "B");
    }

    // Malformed parameters are 400 with the reason.
    for bad in [
        "since=yesterday",
        "patient=%7C",
        "study=not-a-uid",
        "limit=0",
        "bogus=1",
        "_format=xml",
    ] {
        let answer = get(
            &server,
            &format!("/api/v1/audit?{bad}"),
            Some(&root),
            "application/json",
        );
        assert_eq!(
            answer.0,
            400,
            "{bad}: {}",
            String::from_utf8_lossy(&answer.2)
        );
    }

    // The chain holds beside the running server, with both writers' events in it.
    let verified = tramy_beside(&server, &["audit", "verify"]);
    common::assert_success(&verified, "audit verify");
}

#[test]
fn a_burst_beyond_the_writer_queue_waits_and_loses_no_event() {
    let trail = Trail::new();
    // The writer's queue holds 4096 requests: this burst fills it, and the rest must wait.
    trail.record(numbered(10_000));
    let report = trail.verify();
    assert_eq!((report.verified, report.first_break), (10_001, None));
}

#[test]
fn two_writers_on_one_index_keep_one_chain() {
    // `tramy` commands beside a running server each have a writer of their own: the chain is
    // continued from the file inside each transaction, never from a cached hash.
    let trail = Trail::new();
    let other = Index::open(&trail.data_dir.join("index.sqlite"), false).expect("second writer");
    trail.runtime.block_on(async {
        let (a, b) = (trail.index.clone(), other.clone());
        let write = |index: Index, tag: &'static str| {
            tokio::spawn(async move {
                for i in 0..300 {
                    let e = event(
                        &system(),
                        AuditAction::Administer,
                        None,
                        &format!("{tag} {i}"),
                    );
                    index.record_audit(e).await.expect("queued");
                }
                let last = event(&system(), AuditAction::Administer, None, "done");
                index.record_audit_committed(last).await.expect("committed");
            })
        };
        let (x, y) = (write(a, "a"), write(b, "b"));
        x.await.unwrap();
        y.await.unwrap();
    });
    let report = trail.verify();
    assert_eq!((report.verified, report.first_break), (602, None));
}
