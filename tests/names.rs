//! Vietnamese names (issue #12), with real clients: patients stored in UTF-8 (ISO_IR 192),
//! Latin-1 (ISO_IR 100) and with no Specific Character Set are found however the name is typed
//! (`Nguyen*`, `NGUYEN*`, `nguyen`, `van an`, `Văn An`) over QIDO-RS `fuzzymatching=true`,
//! pynetdicom's and dcmtk's C-FIND and the worklist; exact QIDO-RS matching keeps the standard's
//! rules; a provisional patient who matches an identified one is suggested for linking, one
//! with another birth date is not.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The test's patients, stored: label → Study Instance UID.
struct Names {
    server: TramyServer,
    studies: BTreeMap<String, String>,
    _dir: tempfile::TempDir,
}

fn names_check(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/names_check.py"))
        .args(args)
        .output()
        .expect("names_check.py runs");
    assert_success(&out, &format!("names_check.py {args:?}"));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn stored() -> Names {
    let server = TramyServer::start();
    let dir = tempfile::tempdir().unwrap();
    let made = names_check(&["make", dir.path().to_str().unwrap()]);
    let studies: BTreeMap<String, String> = serde_json::from_str(made.trim()).unwrap();
    let files: Vec<PathBuf> = studies
        .keys()
        .map(|label| dir.path().join(format!("{label}.dcm")))
        .collect();
    let paths: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    server.store_files(&paths, "the names");
    Names {
        server,
        studies,
        _dir: dir,
    }
}

impl Names {
    /// The labels of the studies whose UIDs are in `uids`.
    fn labels<'a>(&self, uids: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let uids: BTreeSet<&str> = uids.into_iter().collect();
        self.studies
            .iter()
            .filter(|(_, uid)| uids.contains(uid.as_str()))
            .map(|(label, _)| label.clone())
            .collect()
    }

    /// QIDO-RS `/studies?PatientName=…`, fuzzy or not: the labels found.
    fn qido(&self, name: &str, fuzzy: bool) -> BTreeSet<String> {
        let encoded: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let path = format!("/dicomweb/studies?PatientName={encoded}&fuzzymatching={fuzzy}");
        let r = self.server.http("GET", &path, &[], b"");
        match r.status {
            204 => BTreeSet::new(),
            200 => {
                let found = r.json();
                let uids: Vec<String> = found
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["0020000D"]["Value"][0].as_str().unwrap().to_string())
                    .collect();
                self.labels(uids.iter().map(String::as_str))
            }
            other => panic!("{path}: {other} {}", String::from_utf8_lossy(&r.body)),
        }
    }

    /// pynetdicom C-FIND at STUDY level with the identifier in `charset`: label → (name as
    /// decoded, declared character set).
    fn c_find(&self, charset: &str, name: &str) -> BTreeMap<String, (String, String)> {
        let said = names_check(&["find", &self.server.port(), charset, name]);
        let found: Vec<serde_json::Value> = serde_json::from_str(said.trim()).unwrap();
        found
            .iter()
            .map(|m| {
                let uid = m["study"].as_str().unwrap();
                let label = self
                    .labels([uid])
                    .into_iter()
                    .next()
                    .expect("a stored study");
                let name = m["name"].as_str().unwrap().to_string();
                (label, (name, m["charset"].to_string()))
            })
            .collect()
    }
}

fn set(labels: &[&str]) -> BTreeSet<String> {
    labels.iter().map(|l| l.to_string()).collect()
}

/// Everyone called Nguyễn Văn An, however stored.
const VAN_AN: &[&str] = &[
    "latin1",
    "provisional_match",
    "provisional_other_birth",
    "utf8",
];

#[test]
fn a_name_is_found_however_it_is_typed_over_qido_c_find_and_the_worklist() {
    let n = stored();
    let mut nguyen = VAN_AN.to_vec();
    nguyen.push("provisional_national_id");
    let expected = [
        ("Nguyen*", set(&nguyen)),
        ("NGUYEN*", set(&nguyen)),
        ("nguyen", set(&nguyen)),
        ("van an", set(VAN_AN)),
        ("Văn An", set(VAN_AN)),
        ("an^nguyen", set(VAN_AN)),
        ("muller", set(&["latin1_accented"])),
        ("JOSÉ", set(&["latin1_accented"])),
        ("binh", set(&["ascii"])),
        ("tran^thi binh", set(&["ascii"])),
        ("nguyen binh", set(&[])),
    ];
    for (typed, want) in &expected {
        assert_eq!(&n.qido(typed, true), want, "QIDO-RS fuzzy {typed:?}");
    }
    // C-FIND, with the identifier in UTF-8, Latin-1 and the default repertoire: the matching is
    // the same, and every answer is UTF-8, declared as such, decoded right.
    for (typed, want) in &expected {
        let found = n.c_find("ISO_IR 192", typed);
        assert_eq!(
            &found.keys().cloned().collect::<BTreeSet<_>>(),
            want,
            "C-FIND {typed:?}"
        );
        for (name, charset) in found.values() {
            assert_eq!(charset, "\"ISO_IR 192\"", "C-FIND {typed:?} declares UTF-8");
            assert!(!name.contains('\u{FFFD}'), "{name:?} decoded");
        }
    }
    let latin1 = n.c_find("ISO_IR 100", "Müller");
    assert_eq!(
        latin1.keys().cloned().collect::<BTreeSet<_>>(),
        set(&["latin1_accented"])
    );
    assert_eq!(latin1["latin1_accented"].0, "Müller^José");
    let plain = n.c_find("", "NGUYEN*");
    assert_eq!(plain.keys().cloned().collect::<BTreeSet<_>>(), set(&nguyen));
    assert_eq!(
        plain["utf8"].0, "Nguyễn^Văn An",
        "stored UTF-8, answered UTF-8"
    );
    assert_eq!(plain["latin1"].0, "NGUYEN^VAN AN");

    // DICOM JSON is UTF-8 whatever the stored character set: QIDO-RS and WADO-RS metadata.
    for (label, name) in [
        ("latin1_accented", "Müller^José"),
        ("utf8", "Nguyễn^Văn An"),
        ("ascii", "TRAN^THI BINH"),
    ] {
        let uid = &n.studies[label];
        let qido = n
            .server
            .http(
                "GET",
                &format!("/dicomweb/studies?StudyInstanceUID={uid}"),
                &[],
                b"",
            )
            .json();
        assert_eq!(
            qido[0]["00100010"]["Value"][0]["Alphabetic"], name,
            "QIDO-RS {label}"
        );
        let metadata = n
            .server
            .http(
                "GET",
                &format!("/dicomweb/studies/{uid}/metadata"),
                &[],
                b"",
            )
            .json();
        assert_eq!(
            metadata[0]["00100010"]["Value"][0]["Alphabetic"], name,
            "metadata {label}"
        );
    }

    // The worklist's patient-name filter matches the same way.
    for typed in ["van an", "Văn An"] {
        let encoded: String = form_urlencoded::byte_serialize(typed.as_bytes()).collect();
        let r = n.server.http(
            "GET",
            &format!("/api/v1/worklist?patient_name={encoded}"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let list = r.json();
        let uids = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["study_instance_uid"].as_str().unwrap());
        assert_eq!(n.labels(uids), set(VAN_AN), "worklist {typed:?}");
    }
}

#[test]
fn exact_matching_keeps_the_standards_rules() {
    let n = stored();
    // Non-fuzzy QIDO-RS: single value and wildcard matching of the whole name, case aside (as
    // before): no word order, no accent folding.
    assert_eq!(n.qido("NGUYEN^VAN AN", false), set(&["latin1"]));
    assert_eq!(
        n.qido("nguyễn^văn an", false),
        set(&["provisional_other_birth", "utf8"])
    );
    assert_eq!(n.qido("van an", false), set(&[]));
    assert_eq!(
        n.qido("NGUYEN*", false),
        set(&["latin1", "provisional_match"])
    );
    // A wildcard across words still matches as the standard says when fuzzy.
    assert_eq!(n.qido("TRAN*BINH", true), set(&["ascii"]));
}

#[test]
fn dcmtk_findscu_finds_a_utf8_name_from_a_latin1_or_utf8_identifier() {
    if !dcmtk_available() {
        panic!("dcmtk (findscu) is needed: .ci/run installs it");
    }
    let n = stored();
    let port = n.server.port();
    let find = |charset: &str, name: &str| {
        let out = dcmtk(
            "findscu",
            &[
                "-S",
                "-aec",
                "TRAMY",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &format!("SpecificCharacterSet={charset}"),
                "-k",
                &format!("PatientName={name}"),
                "-k",
                "StudyInstanceUID",
                "127.0.0.1",
                &port,
            ],
            None,
        );
        assert_success(&out, "dcmtk findscu");
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        let uids: Vec<String> = said
            .lines()
            .filter_map(|l| l.split("(0020,000d) UI [").nth(1))
            // An odd-length UID shows its padding byte.
            .map(|rest| {
                rest.split(']')
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(['\0', ' '])
                    .to_string()
            })
            .collect();
        (n.labels(uids.iter().map(String::as_str)), said)
    };
    let (found, said) = find("ISO_IR 192", "Văn An");
    assert_eq!(found, set(VAN_AN), "{said}");
    assert!(said.contains("Nguyễn^Văn An"), "answered in UTF-8:\n{said}");
    assert!(said.contains("ISO_IR 192"), "declared:\n{said}");
    let (found, said) = find("ISO_IR 100", "nguyen van an");
    assert_eq!(found, set(VAN_AN), "{said}");
}

#[test]
fn a_provisional_patient_is_suggested_for_linking_with_its_evidence() {
    let n = stored();
    let r = n
        .server
        .http("GET", "/api/v1/patients/VN001/link-suggestions", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let suggestions = r.json();
    let by_label: BTreeMap<String, serde_json::Value> = suggestions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let uid = s["study_instance_uids"][0].as_str().unwrap();
            (n.labels([uid]).into_iter().next().unwrap(), s.clone())
        })
        .collect();
    // The same name typed in one component, same birth date and sex; and one known by the
    // national ID. Not the one with another birth date, nor the identified Latin-1 record.
    assert_eq!(
        by_label.keys().cloned().collect::<BTreeSet<_>>(),
        set(&["provisional_match", "provisional_national_id"]),
        "{suggestions:#}"
    );
    assert_eq!(
        by_label["provisional_match"]["evidence"],
        serde_json::json!(["PatientName", "PatientBirthDate", "PatientSex"])
    );
    assert_eq!(
        by_label["provisional_national_id"]["evidence"],
        serde_json::json!(["OtherPatientIDs"])
    );
    // Nothing was linked: the suggestion is only that.
    let links = n
        .server
        .http("GET", "/api/v1/patients/VN001/links", &[], b"");
    assert_eq!(links.json(), serde_json::json!([]));

    // A clinician confirms through the linking API; the suggestion is gone, the link answers.
    let study = n.studies["provisional_match"].clone();
    let body = serde_json::json!({ "study_instance_uid": study }).to_string();
    let made = n.server.http(
        "POST",
        "/api/v1/patients/VN001/links",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let after = n
        .server
        .http("GET", "/api/v1/patients/VN001/link-suggestions", &[], b"")
        .json();
    let left: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["study_instance_uids"][0].as_str().unwrap())
        .collect();
    assert_eq!(n.labels(left), set(&["provisional_national_id"]));

    // Once linked, a provisional record answers a name search with its patient, whatever
    // name it arrived with, with or without wildcards.
    let second = serde_json::json!({ "study_instance_uid": n.studies["provisional_national_id"] })
        .to_string();
    let made = n.server.http(
        "POST",
        "/api/v1/patients/VN001/links",
        &[("Content-Type", "application/json")],
        second.as_bytes(),
    );
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let mut linked = VAN_AN.to_vec();
    linked.push("provisional_national_id");
    assert_eq!(n.qido("van an", true), set(&linked));
    assert_eq!(n.qido("Văn*", true), set(&linked));

    // Another facility's clinician does not see the patient at all.
    n.server
        .cli(&["facility", "add", "B", "--name", "Provincial B"]);
    let token = n
        .server
        .cli(&["token", "create", "--facility", "B", "--role", "clinician"]);
    let other = n.server.http(
        "GET",
        "/api/v1/patients/VN001/link-suggestions",
        &[("Authorization", &format!("Bearer {}", token.trim()))],
        b"",
    );
    assert_eq!(other.status, 404);
}

#[test]
fn a_name_query_of_too_many_words_is_refused() {
    let server = TramyServer::start();
    let many = vec!["an"; 17].join("%20");
    let qido = server.http(
        "GET",
        &format!("/dicomweb/studies?PatientName={many}&fuzzymatching=true"),
        &[],
        b"",
    );
    assert_eq!(qido.status, 400, "{}", String::from_utf8_lossy(&qido.body));
    let worklist = server.http(
        "GET",
        &format!("/api/v1/worklist?patient_name={many}"),
        &[],
        b"",
    );
    assert_eq!(worklist.status, 400);
    let sixteen = vec!["an"; 16].join("%20");
    let fine = server.http(
        "GET",
        &format!("/dicomweb/studies?PatientName={sixteen}&fuzzymatching=true"),
        &[],
        b"",
    );
    assert!(matches!(fine.status, 200 | 204), "{}", fine.status);
}

#[test]
fn patients_indexed_before_the_name_words_get_them_at_the_next_start() {
    let mut n = stored();
    // As an index written before migration 10 holds them: no words, no key, no other IDs.
    let forget = "UPDATE patients SET name_key = NULL; DELETE FROM patient_name_words; \
                  DELETE FROM patient_other_ids;";
    n.server.kill();
    n.server.index_execute(forget, forget);
    assert_eq!(
        n.server
            .index_rows("SELECT COUNT(*) FROM patient_name_words", &[])[0][0]
            .as_deref(),
        Some("0")
    );
    n.server.restart();
    assert_eq!(n.qido("van an", true), set(VAN_AN));
    // The other IDs come back from the stored metadata: the national ID still suggests a link.
    let r = n
        .server
        .http("GET", "/api/v1/patients/VN001/link-suggestions", &[], b"");
    let uids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["study_instance_uids"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        n.labels(uids.iter().map(String::as_str)),
        set(&["provisional_match", "provisional_national_id"])
    );
}
