//! The audit trail (issue #9 item 9): events appended in a hash chain by the index writer,
//! `tramy audit verify` naming the first edited or deleted event (run as a process with
//! `--config`, as beside a running server), the filters of `Index::audit_events` and who may
//! read which events.

mod common;

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

    /// A study of patient `(id, issuer)` held by `facilities`, written as the ingest path would.
    fn study(&self, uid: &str, patient: (&str, &str), facilities: &[&str]) {
        let c = self.sqlite();
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
    // Roles without ReadAudit read nothing; a superadmin reads all.
    assert!(trail.details(&a, AuditFilter::default()).is_empty());
    assert!(trail
        .details(&Principal::anonymous(), AuditFilter::default())
        .is_empty());
    let root = user("token:root", "", Role::Superadmin);
    assert_eq!(trail.details(&root, AuditFilter::default()).len(), 5);
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
