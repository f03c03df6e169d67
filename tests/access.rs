//! Facilities, credentials, consent and referral grants (issue #9), end to end with real
//! clients: two facilities A and B, each with its own tokens and AE title. A's study is invisible
//! to B on QIDO-RS, WADO-RS, metadata, findings and C-FIND (pynetdicom's findscu); once A grants
//! it under the patient's consent B sees exactly that study, at once, and loses it again at
//! expiry, at the grant's revocation and at the consent's revocation.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const CT: &str = "dicom-samples/ct_small_explicit_le.dcm";
const NM: &str = "dicom-samples/nm_jpeg_extended.dcm";
const MR: &str = "dicom-samples/mr_small_implicit_le.dcm";
const CT_STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
const NM_STUDY: &str = "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457";
const CT_PATIENT: &str = "1CT1";

/// Facilities A and B, registered as an admin would.
struct Facilities {
    a_clinician: String,
    b_clinician: String,
}

fn two_facilities(server: &TramyServer) -> Facilities {
    server.cli(&["facility", "add", "A", "--name", "District A"]);
    server.cli(&["facility", "add", "B", "--name", "Provincial B"]);
    server.cli(&["ae", "add", "AE_B", "--facility", "B"]);
    let token = |facility: &str| {
        server.cli(&[
            "token",
            "create",
            "--facility",
            facility,
            "--role",
            "clinician",
        ])
    };
    Facilities {
        a_clinician: token("A"),
        b_clinician: token("B"),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get(server: &TramyServer, token: &str, path: &str, accept: &str) -> HttpResponse {
    server.http(
        "GET",
        path,
        &[("Authorization", &bearer(token)), ("Accept", accept)],
        b"",
    )
}

fn post_json(
    server: &TramyServer,
    token: &str,
    path: &str,
    body: &serde_json::Value,
) -> HttpResponse {
    server.http(
        "POST",
        path,
        &[
            ("Authorization", &bearer(token)),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

fn stow(server: &TramyServer, token: &str, file: &str) {
    let (ct, body) = stow_body(&[dataset_part10(file)]);
    let r = server.http(
        "POST",
        "/dicomweb/studies",
        &[("Authorization", &bearer(token)), ("Content-Type", &ct)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn dataset_part10(file: &str) -> Vec<u8> {
    std::fs::read(repo_root().join(file)).expect("sample")
}

/// Studies `token` finds with QIDO-RS.
fn qido_studies(server: &TramyServer, token: &str) -> Vec<String> {
    let r = get(server, token, "/dicomweb/studies", "application/dicom+json");
    assert_eq!(r.status, 200);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["0020000D"]["Value"][0].as_str().unwrap().to_string())
        .collect()
}

/// The status of each reading route for `study`, in a fixed order.
fn reads(server: &TramyServer, token: &str, study: &str) -> Vec<u16> {
    let first = |path: &str| get(server, token, path, "application/dicom+json");
    let instances = first(&format!("/dicomweb/studies/{study}/instances"));
    let (series, sop) = if instances.status == 200 {
        let i = &instances.json()[0];
        (
            i["0020000E"]["Value"][0]
                .as_str()
                .unwrap_or("1")
                .to_string(),
            i["00080018"]["Value"][0]
                .as_str()
                .unwrap_or("1")
                .to_string(),
        )
    } else {
        ("1.2.3".to_string(), "1.2.3.4".to_string())
    };
    vec![
        first(&format!("/dicomweb/studies/{study}/metadata")).status,
        get(
            server,
            token,
            &format!("/dicomweb/studies/{study}"),
            "multipart/related; type=\"application/dicom\"",
        )
        .status,
        get(
            server,
            token,
            &format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered"),
            "image/png",
        )
        .status,
        get(
            server,
            token,
            &format!("/api/v1/studies/{study}/findings"),
            "application/json",
        )
        .status,
    ]
}

/// Study Instance UIDs C-FIND finds when calling as `calling_ae`.
fn c_find_studies(server: &TramyServer, calling_ae: &str) -> String {
    let out = pynetdicom_find(
        server,
        Some(calling_ae),
        &["QueryRetrieveLevel=STUDY", "StudyInstanceUID="],
    );
    assert_success(&out, "findscu");
    output_text(&out)
}

fn in_an_hour() -> String {
    (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339()
}

fn consent_for_b(server: &TramyServer, f: &Facilities) -> String {
    let r = post_json(
        server,
        &f.a_clinician,
        &format!("/api/v1/patients/{CT_PATIENT}/consents"),
        &serde_json::json!({"purpose": "referral", "recipient": "B", "source": "vneid", "evidence": "VNeID tx 42"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_str().unwrap().to_string()
}

fn grant_ct_to_b(server: &TramyServer, f: &Facilities, consent: &str, expires_at: &str) -> String {
    let r = post_json(
        server,
        &f.a_clinician,
        "/api/v1/grants",
        &serde_json::json!({
            "to_facility": "B", "study_instance_uid": CT_STUDY,
            "scope": ["metadata", "images", "findings"], "expires_at": expires_at,
            "consent_id": consent
        }),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_str().unwrap().to_string()
}

/// Polls until B's reads of the CT study are all 404 (a grant that ran out ends within the
/// second it expires; the bound only keeps a broken build from hanging).
fn until_b_loses_the_ct(server: &TramyServer, f: &Facilities) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reads(server, &f.b_clinician, CT_STUDY) != [404; 4] {
        assert!(Instant::now() < deadline, "B still reads A's study");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!qido_studies(server, &f.b_clinician).contains(&CT_STUDY.to_string()));
}

#[test]
fn a_study_is_seen_by_another_facility_only_while_a_grant_under_consent_is_in_force() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let f = two_facilities(&server);
    stow(&server, &f.a_clinician, CT);
    stow(&server, &f.a_clinician, NM);
    stow(&server, &f.b_clinician, MR);

    // Without a credential: 401 everywhere but /healthz.
    let anonymous = server.http(
        "GET",
        "/dicomweb/studies",
        &[("Authorization", ""), ("Accept", "application/dicom+json")],
        b"",
    );
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").is_some());
    let bad = get(
        &server,
        "tramy_0000_not-a-token",
        "/dicomweb/studies",
        "application/dicom+json",
    );
    assert_eq!(bad.status, 401);

    // Each facility sees its own studies only, on every protocol.
    let mut a_sees = qido_studies(&server, &f.a_clinician);
    a_sees.sort();
    assert_eq!(a_sees, [CT_STUDY, NM_STUDY]);
    assert_eq!(qido_studies(&server, &f.b_clinician).len(), 1);
    assert_eq!(reads(&server, &f.a_clinician, CT_STUDY), [200; 4]);
    assert_eq!(reads(&server, &f.b_clinician, CT_STUDY), [404; 4]);
    let b_find = c_find_studies(&server, "AE_B");
    assert!(
        !b_find.contains(CT_STUDY),
        "C-FIND from B's AE found A's study:\n{b_find}"
    );
    assert_eq!(b_find.matches("0xFF00 (Pending)").count(), 1, "{b_find}");

    // A grants the CT study to B under the patient's consent: B sees it at once, nothing else of A's.
    let consent = consent_for_b(&server, &f);
    let grant = grant_ct_to_b(&server, &f, &consent, &in_an_hour());
    assert_eq!(reads(&server, &f.b_clinician, CT_STUDY), [200; 4]);
    assert_eq!(reads(&server, &f.b_clinician, NM_STUDY), [404; 4]);
    let b_sees = qido_studies(&server, &f.b_clinician);
    assert!(b_sees.contains(&CT_STUDY.to_string()) && !b_sees.contains(&NM_STUDY.to_string()));
    assert!(c_find_studies(&server, "AE_B").contains(CT_STUDY));
    let listed = get(
        &server,
        &f.b_clinician,
        "/api/v1/grants",
        "application/json",
    );
    assert_eq!(listed.json()[0]["id"], grant.as_str());

    // B cannot revoke A's grant; A can, and B loses the study at once.
    let by_b = server.http(
        "DELETE",
        &format!("/api/v1/grants/{grant}"),
        &[("Authorization", &bearer(&f.b_clinician))],
        b"",
    );
    assert_eq!(by_b.status, 404);
    let by_a = server.http(
        "DELETE",
        &format!("/api/v1/grants/{grant}"),
        &[("Authorization", &bearer(&f.a_clinician))],
        b"",
    );
    assert_eq!(by_a.status, 204);
    assert_eq!(reads(&server, &f.b_clinician, CT_STUDY), [404; 4]);

    // A grant whose consent is revoked stops at once.
    grant_ct_to_b(&server, &f, &consent, &in_an_hour());
    assert_eq!(reads(&server, &f.b_clinician, CT_STUDY), [200; 4]);
    let revoked = post_json(
        &server,
        &f.a_clinician,
        &format!("/api/v1/patients/{CT_PATIENT}/consents/{consent}/revoke"),
        &serde_json::json!({}),
    );
    assert_eq!(revoked.status, 200);
    assert!(revoked.json()["revoked_at"].is_string());
    until_b_loses_the_ct(&server, &f);

    // A grant ends at its expiry (a fresh consent; two seconds from now).
    let consent = consent_for_b(&server, &f);
    let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(2)).to_rfc3339();
    grant_ct_to_b(&server, &f, &consent, &soon);
    assert_eq!(reads(&server, &f.b_clinician, CT_STUDY), [200; 4]);
    until_b_loses_the_ct(&server, &f);

    every_access_is_in_the_audit_trail_and_an_edit_is_detected(&server);
}

/// The accesses above, read back from the trail; then `tramy audit verify` passes, and fails
/// naming the event once one is edited.
fn every_access_is_in_the_audit_trail_and_an_edit_is_detected(server: &TramyServer) {
    let events_of = |query: &str| -> Vec<serde_json::Value> {
        let r = get(
            server,
            server.token(),
            &format!("/api/v1/audit?limit=1000&{query}"),
            "application/json",
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json().as_array().unwrap().clone()
    };
    let has = |events: &[serde_json::Value], action: &str, outcome: &str| {
        events
            .iter()
            .any(|e| e["action"] == action && e["outcome"] == outcome)
    };
    // B's reads of A's study: refused while not granted, served while granted, each with B's code.
    let by_b = wait_for("B's accesses in the trail", || {
        let events = events_of(&format!("study={CT_STUDY}&facility=B"));
        (has(&events, "read_metadata", "not_found")
            && has(&events, "read_metadata", "success")
            && has(&events, "retrieve", "success")
            && has(&events, "read_findings", "not_found"))
        .then_some(events)
    });
    assert!(by_b.iter().all(|e| e["facility"] == "B"));
    // A's grants and consents, B's C-FIND from its AE title, and the refused credentials.
    let everything = wait_for("grants, C-FIND and refusals in the trail", || {
        let events = events_of("");
        (has(&events, "grant", "success")
            && has(&events, "consent", "success")
            && has(&events, "login_failure", "denied")
            && events
                .iter()
                .any(|e| e["actor"] == "ae:AE_B" && e["action"] == "query"))
        .then_some(events)
    });
    // "Who looked at my images": one query by patient.
    let patient = events_of(&format!("patient={CT_PATIENT}"));
    assert!(patient.iter().any(|e| e["facility"] == "B"));
    assert!(everything.len() >= patient.len());

    let verify = |expect_ok: bool| {
        let out = Command::new(env!("CARGO_BIN_EXE_tramy"))
            .args(["audit", "verify"])
            .env("TRAMY_DATA_DIR", &server.data_dir)
            .envs(server.process_env())
            .env_remove("TRAMY_CONFIG")
            .output()
            .expect("tramy audit verify runs");
        assert_eq!(out.status.success(), expect_ok, "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    verify(true);
    // Someone with the database file changes what an event says.
    let change = "UPDATE audit_events SET actor = 'someone-else' \
         WHERE id = (SELECT MIN(id) FROM audit_events WHERE actor LIKE 'token:%');";
    server.index_execute(
        &format!("DROP TRIGGER audit_events_no_update; {change}"),
        &format!("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change; {change}"),
    );
    let said = verify(false);
    assert!(
        said.contains("tampered") && said.contains("was changed"),
        "{said}"
    );
}

#[test]
fn grants_that_name_what_the_facility_does_not_hold_or_rest_on_nothing_are_refused() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let f = two_facilities(&server);
    stow(&server, &f.a_clinician, CT);
    stow(&server, &f.b_clinician, MR);
    let consent = consent_for_b(&server, &f);
    let grant = |token: &str, body: serde_json::Value| {
        post_json(&server, token, "/api/v1/grants", &body).status
    };
    let base = serde_json::json!({"to_facility": "B", "study_instance_uid": CT_STUDY,
        "scope": ["images"], "expires_at": in_an_hour(), "consent_id": consent});
    let with = |key: &str, value: serde_json::Value| {
        let mut b = base.clone();
        b[key] = value;
        b
    };
    // B cannot grant A's study; nor can anyone grant without consent or a reason.
    assert_eq!(grant(&f.b_clinician, with("to_facility", "A".into())), 404);
    let mut bare = base.clone();
    bare.as_object_mut().unwrap().remove("consent_id");
    assert_eq!(grant(&f.a_clinician, bare.clone()), 400);
    assert_eq!(
        grant(&f.a_clinician, with("scope", serde_json::json!([]))),
        400
    );
    assert_eq!(
        grant(
            &f.a_clinician,
            with("expires_at", "2001-01-01T00:00:00Z".into())
        ),
        400
    );
    assert_eq!(
        grant(&f.a_clinician, with("to_facility", "NOWHERE".into())),
        404
    );
    // A consent for another facility does not cover B.
    server.cli(&["facility", "add", "C", "--name", "Hub C"]);
    assert_eq!(grant(&f.a_clinician, with("to_facility", "C".into())), 400);
    // B cannot record consents for A's patient (not among B's studies).
    let r = post_json(
        &server,
        &f.b_clinician,
        &format!("/api/v1/patients/{CT_PATIENT}/consents"),
        &serde_json::json!({"purpose": "referral", "source": "paper"}),
    );
    assert_eq!(r.status, 404);
    // Break-glass with a reason is allowed, and listed for review.
    bare["break_glass_reason"] = "unconscious patient, suspected pneumothorax".into();
    assert_eq!(grant(&f.a_clinician, bare), 201);
    let listed = get(
        &server,
        &f.a_clinician,
        "/api/v1/grants",
        "application/json",
    )
    .json();
    assert_eq!(listed[0]["purpose"], "emergency");
}

const SR: &str = "dicom-samples/sr_comprehensive.dcm";
const SR_STUDY: &str = "1.2.276.0.7230010.3.1.4.2139363186.7819.982086466.2";

/// Studies A's clinician finds for PatientID `id`.
fn studies_of_patient(server: &TramyServer, token: &str, id: &str) -> Vec<String> {
    let r = get(
        server,
        token,
        &format!("/dicomweb/studies?PatientID={id}"),
        "application/dicom+json",
    );
    assert_eq!(r.status, 200);
    let mut uids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["0020000D"]["Value"][0].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    uids
}

#[test]
fn a_patient_who_arrived_without_an_id_is_linked_answers_with_the_patient_and_can_be_unlinked() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let f = two_facilities(&server);
    stow(&server, &f.a_clinician, CT);
    stow(&server, &f.a_clinician, SR); // its patient has no ID
    assert_eq!(
        studies_of_patient(&server, &f.a_clinician, CT_PATIENT),
        [CT_STUDY]
    );

    let link = |token: &str, study: &str| {
        post_json(
            &server,
            token,
            &format!("/api/v1/patients/{CT_PATIENT}/links"),
            &serde_json::json!({ "study_instance_uid": study }),
        )
    };
    // B sees neither patient; an identified patient is never linked.
    assert_eq!(link(&f.b_clinician, SR_STUDY).status, 404);
    assert_eq!(link(&f.a_clinician, CT_STUDY).status, 400);
    let linked = link(&f.a_clinician, SR_STUDY);
    assert_eq!(
        linked.status,
        201,
        "{}",
        String::from_utf8_lossy(&linked.body)
    );
    let id = linked.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        link(&f.a_clinician, SR_STUDY).status,
        400,
        "linked once only"
    );

    // Linked patients answer queries together, and a grant on the patient covers both.
    let mut both = vec![CT_STUDY.to_string(), SR_STUDY.to_string()];
    both.sort();
    assert_eq!(
        studies_of_patient(&server, &f.a_clinician, CT_PATIENT),
        both
    );
    let consent = consent_for_b(&server, &f);
    let granted = post_json(
        &server,
        &f.a_clinician,
        "/api/v1/grants",
        &serde_json::json!({"to_facility": "B", "patient": CT_PATIENT, "scope": ["metadata"],
            "expires_at": in_an_hour(), "consent_id": consent}),
    );
    assert_eq!(
        granted.status,
        201,
        "{}",
        String::from_utf8_lossy(&granted.body)
    );
    let mut b_sees = qido_studies(&server, &f.b_clinician);
    b_sees.retain(|s| s != "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"); // B's own MR, if any
    b_sees.sort();
    assert_eq!(b_sees, both);

    // Undone: the provisional patient answers on its own again, and the grant no longer covers it.
    let undone = server.http(
        "DELETE",
        &format!("/api/v1/patients/{CT_PATIENT}/links/{id}"),
        &[("Authorization", &bearer(&f.a_clinician))],
        b"",
    );
    assert_eq!(undone.status, 204);
    assert_eq!(
        studies_of_patient(&server, &f.a_clinician, CT_PATIENT),
        [CT_STUDY]
    );
    assert_eq!(qido_studies(&server, &f.b_clinician), [CT_STUDY]);
    let history = get(
        &server,
        &f.a_clinician,
        &format!("/api/v1/patients/{CT_PATIENT}/links"),
        "application/json",
    );
    assert!(history.json()[0]["unlinked_at"].is_string());
}

#[test]
fn a_share_link_opens_one_study_in_a_browser_until_it_is_revoked() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let f = two_facilities(&server);
    stow(&server, &f.a_clinician, CT);
    stow(&server, &f.a_clinician, NM);
    let made = post_json(
        &server,
        &f.a_clinician,
        "/api/v1/share-links",
        &serde_json::json!({"study_instance_uid": CT_STUDY, "expires_at": in_an_hour(),
            "break_glass_reason": "second opinion by phone"}),
    );
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let link = made.json();
    let path = link["path"].as_str().unwrap();

    // The doctor opens the link: a session cookie, then the study in the viewer.
    let opened = server.http("GET", path, &[("Authorization", "")], b"");
    assert_eq!(opened.status, 303);
    assert_eq!(
        opened.header("location"),
        Some(format!("/viewer?StudyInstanceUIDs={CT_STUDY}").as_str())
    );
    let cookie = opened
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let as_doctor = |path: &str, accept: &str| {
        server.http(
            "GET",
            path,
            &[
                ("Authorization", ""),
                ("Cookie", &cookie),
                ("Accept", accept),
            ],
            b"",
        )
    };
    let studies = as_doctor("/dicomweb/studies", "application/dicom+json").json();
    assert_eq!(
        studies.as_array().unwrap().len(),
        1,
        "only the shared study"
    );
    assert_eq!(studies[0]["0020000D"]["Value"][0], CT_STUDY);
    assert_eq!(
        as_doctor(
            &format!("/dicomweb/studies/{NM_STUDY}/metadata"),
            "application/dicom+json"
        )
        .status,
        404
    );
    let (ct, body) = stow_body(&[dataset_part10(MR)]);
    let stored = server.http(
        "POST",
        "/dicomweb/studies",
        &[
            ("Authorization", ""),
            ("Cookie", &cookie),
            ("Content-Type", &ct),
        ],
        &body,
    );
    assert_eq!(stored.status, 403, "a share link only reads");

    // Revoked like any grant: the link and its cookie stop at once.
    let id = link["id"].as_str().unwrap();
    let revoked = server.http(
        "DELETE",
        &format!("/api/v1/grants/{id}"),
        &[("Authorization", &bearer(&f.a_clinician))],
        b"",
    );
    assert_eq!(revoked.status, 204);
    assert_eq!(
        as_doctor("/dicomweb/studies", "application/dicom+json").status,
        401
    );
    assert_eq!(
        server
            .http("GET", path, &[("Authorization", "")], b"")
            .status,
        401
    );
}

const ISSUER: &str = "https://sso.so-y-te.example/realms/hcm";

fn access_token(claims: serde_json::Value) -> String {
    provider_token(&claims)
}

#[test]
fn openid_connect_access_tokens_act_for_their_facility_and_no_credential_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    write_provider_jwks(&jwks);
    let server = TramyServer::start_with_config(&format!(
        "[triage]\nenabled = false\n[auth.oidc]\nissuer = \"{ISSUER}\"\naudience = \"tramy\"\n\
         jwks_file = {:?}\nclaims = {{ facility = \"facility\", roles = \"realm_access.roles\" }}\n",
        jwks.display().to_string()
    ));
    let f = two_facilities(&server);
    stow(&server, &f.a_clinician, CT);
    let claims = |facility: &str, exp_in: i64, issuer: &str| {
        serde_json::json!({
            "iss": issuer, "aud": "tramy", "sub": "bs.lan",
            "exp": chrono::Utc::now().timestamp() + exp_in,
            "facility": facility,
            "realm_access": { "roles": ["clinician", "offline_access"] },
        })
    };
    let a_doctor = access_token(claims("A", 300, ISSUER));
    let b_doctor = access_token(claims("B", 300, ISSUER));
    assert_eq!(qido_studies(&server, &a_doctor), [CT_STUDY]);
    assert!(qido_studies(&server, &b_doctor).is_empty());
    assert_eq!(reads(&server, &b_doctor, CT_STUDY), [404; 4]);
    let expired = access_token(claims("A", -120, ISSUER));
    let foreign = access_token(claims("A", 300, "https://elsewhere.example"));
    for refused in [&expired, &foreign] {
        let r = get(
            &server,
            refused,
            "/dicomweb/studies",
            "application/dicom+json",
        );
        assert_eq!(r.status, 401);
        assert!(r
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token"));
    }
    // The audit trail names the provider's subject and its facility.
    let named = wait_for("the OIDC caller in the audit trail", || {
        let r = get(
            &server,
            server.token(),
            "/api/v1/audit?actor=bs.lan&facility=A",
            "application/json",
        );
        r.json().as_array().filter(|e| !e.is_empty()).cloned()
    });
    assert_eq!(named[0]["facility"], "A");

    let log = server.log();
    for credential in [
        &a_doctor,
        &b_doctor,
        &expired,
        &f.a_clinician,
        &f.b_clinician,
    ] {
        assert!(
            !log.contains(credential.as_str()),
            "a credential reached the log"
        );
        // The secret part whole: a JWT's signature, an API token's part after `tramy_<id>_`
        // (base64url, which itself may hold `_`: splitting at the last one would leave a few
        // characters that any log line may contain by chance).
        let secret = if credential.starts_with("tramy_") {
            credential.splitn(3, '_').nth(2).unwrap()
        } else {
            credential.rsplit('.').next().unwrap()
        };
        assert!(secret.len() >= 32, "a whole secret: {secret}");
        assert!(
            !log.contains(secret),
            "a credential's secret reached the log"
        );
    }
}

#[test]
fn an_address_that_keeps_presenting_bad_credentials_is_locked_out_for_a_while() {
    let server = TramyServer::start_with_config(
        "[triage]\nenabled = false\n[auth]\nmax_failed_attempts = 3\nfailure_window = \"1m\"\nlockout = \"5m\"\n",
    );
    let ask = |token: &str| {
        get(
            &server,
            token,
            "/dicomweb/studies",
            "application/dicom+json",
        )
    };
    assert_eq!(ask(server.token()).status, 200);
    for _ in 0..3 {
        assert_eq!(
            ask("tramy_0123456789abcdef_guessedguessedguessedguessedguessedguesse").status,
            401
        );
    }
    // Locked out: even the right token is not checked until the wait is over.
    let locked = ask(server.token());
    assert_eq!(locked.status, 429);
    let wait: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    // DICOM from the same address is refused too, before its AE title is looked at.
    let (refused, said) = echo_said(&server.port(), "STORESCU");
    assert!(!refused.status.success(), "{said}");
    assert_eq!(server.http_get("/healthz").map(|(code, _)| code), Some(200));
}

#[test]
fn one_facility_never_replaces_anothers_instance_even_under_the_overwrite_policy() {
    let server = TramyServer::start_with_config(
        "[triage]\nenabled = false\n[ingest]\non_conflict = \"overwrite\"\n",
    );
    let f = two_facilities(&server);
    stow(&server, &f.a_clinician, CT);
    // The same SOP Instance UID with other bytes (another Patient ID of the same length).
    let original = dataset_part10(CT);
    let at = original
        .windows(CT_PATIENT.len())
        .position(|w| w == CT_PATIENT.as_bytes())
        .expect("the sample holds its Patient ID");
    let mut altered = original.clone();
    altered[at..at + 4].copy_from_slice(b"9CT9");
    let (ct, body) = stow_body(&[altered.clone()]);
    let post = |token: &str| {
        server.http(
            "POST",
            "/dicomweb/studies",
            &[("Authorization", &bearer(token)), ("Content-Type", &ct)],
            &body,
        )
    };
    assert_eq!(
        post(&f.b_clinician).status,
        409,
        "B may not replace A's instance"
    );
    let kept = get(
        &server,
        &f.a_clinician,
        &format!("/dicomweb/studies/{CT_STUDY}/metadata"),
        "application/dicom+json",
    );
    assert_eq!(kept.json()[0]["00100020"]["Value"][0], CT_PATIENT);
    // A itself may, under its policy.
    assert_eq!(post(&f.a_clinician).status, 200);
}

/// Instances C-GET brings back when calling as `calling_ae` for `study`.
fn c_get_instances(server: &TramyServer, calling_ae: &str, study: &str) -> usize {
    let out_dir = tempfile::tempdir().unwrap();
    let out = pynetdicom(
        "getscu",
        &[
            "-aet",
            calling_ae,
            "-aec",
            "TRAMY",
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={study}"),
            "-od",
            &out_dir.path().display().to_string(),
            "127.0.0.1",
            &server.port(),
        ],
    );
    assert_success(&out, "getscu");
    walk(out_dir.path()).len()
}

#[test]
fn c_get_from_another_facilitys_ae_title_retrieves_nothing_until_granted() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let f = two_facilities(&server);
    server.cli(&["ae", "add", "AE_A", "--facility", "A"]);
    stow(&server, &f.a_clinician, CT);
    assert_eq!(c_get_instances(&server, "AE_A", CT_STUDY), 1);
    assert_eq!(c_get_instances(&server, "AE_B", CT_STUDY), 0);
    let consent = consent_for_b(&server, &f);
    grant_ct_to_b(&server, &f, &consent, &in_an_hour());
    assert_eq!(c_get_instances(&server, "AE_B", CT_STUDY), 1);
}

#[test]
fn every_facility_publishes_an_ed25519_public_key_that_verifies_what_its_private_key_signs() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let f = two_facilities(&server);
    let jwks = |code: &str| {
        get(
            &server,
            &f.b_clinician,
            &format!("/api/v1/facilities/{code}/keys"),
            "application/json",
        )
    };
    let a = jwks("A").json();
    let key = &a["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert_ne!(
        key["x"],
        jwks("B").json()["keys"][0]["x"],
        "each facility its own key"
    );
    assert_eq!(jwks("A").json(), a, "the same key every time");
    assert_eq!(jwks("NOWHERE").status, 404);
    // The private key stays in the data folder, readable by tramy alone, and matches the JWK.
    let pem = std::fs::read_to_string(server.data_dir.join("keys/A.pem")).unwrap();
    let signing =
        <ed25519_dalek::SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
            .unwrap();
    assert_eq!(
        tramy::facility_keys::public_jwk(&signing).x,
        key["x"].as_str().unwrap()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.data_dir.join("keys/A.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // LOCAL, made on first start, has one too.
    assert_eq!(jwks("LOCAL").status, 200);
}
