//! Signing in to the web UI through the facility's identity provider (issue #15 item 1): a real
//! OpenID Connect provider (panva's `oidc-provider` from npm, OpenID Certified; its development
//! sign-in pages, a public client that must use PKCE, JWT access tokens with the `facility` and
//! `realm_access.roles` claims a facility's Keycloak issues) and a real headless Chromium
//! (`tests/clients/oidc_sign_in.py`): a doctor who asks for a study's page signs in at the
//! provider and lands back on it, with the provider's access token kept as tramy's session;
//! another facility's doctor signed in the same way sees none of it; a forged answer is refused.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use dicom_dictionary_std::tags;

const CT: &str = "dicom-samples/ct_small_explicit_le.dcm";

/// `tests/clients/oidc-provider/` installed from npm once into `target/tmp/` (the pinned
/// version in its package.json), with its script beside its `node_modules`.
fn provider_dir() -> PathBuf {
    let source = repo_root().join("tests/clients/oidc-provider");
    let dir = repo_root().join("target/tmp/oidc-provider");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    for file in ["package.json", "provider.mjs"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    if !dir
        .join("node_modules/oidc-provider/package.json")
        .is_file()
    {
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .output()
            .expect("npm runs");
        assert_success(&out, "npm install oidc-provider");
    }
    dir
}

/// The provider, listening on `port`, sending browsers back to `redirect_uri`.
struct Provider(Child);

impl Provider {
    fn start(port: u16, redirect_uri: &str, key: &Path) -> Provider {
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .arg(port.to_string())
            .arg(redirect_uri)
            .arg(key)
            .current_dir(provider_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.starts_with("ready"));
        assert!(ready, "the OpenID Connect provider did not start");
        // Its later notices are read to the end: a closed pipe would end the provider.
        std::thread::spawn(move || lines.for_each(drop));
        Provider(child)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn study_of(path: &Path) -> String {
    let obj = dicom_object::open_file(path).unwrap();
    tramy::dicom::attributes::text(&obj, tags::STUDY_INSTANCE_UID)
}

/// Signs `user` in through the provider in Chromium, starting from `page`; the report.
fn sign_in(server: &TramyServer, page: &str, user: &str) -> serde_json::Value {
    let shots = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/oidc_sign_in.py"))
        .arg(format!("http://127.0.0.1:{}", server.http_port))
        .arg(page)
        .arg(user)
        .arg(shots.path())
        .output()
        .unwrap();
    assert_success(&out, "oidc_sign_in.py");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_doctor_signs_in_at_the_facility_provider_and_lands_on_the_page_asked_for() {
    // The provider's keys: the suite's provider key, its public half in a file for tramy.
    let keys = tempfile::tempdir().unwrap();
    let (pem, jwks) = (keys.path().join("key.pem"), keys.path().join("jwks.json"));
    std::fs::write(&pem, PROVIDER_KEY).unwrap();
    write_provider_jwks(&jwks);
    let provider_port = free_port();
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let server = TramyServer::start_with_config(&format!(
        "[triage]\nenabled = false\n[auth.oidc]\nissuer = \"{issuer}\"\naudience = \"tramy\"\n\
         jwks_file = {:?}\nclient_id = \"tramy\"\n\
         claims = {{ facility = \"facility\", roles = \"realm_access.roles\" }}\n",
        jwks.display().to_string()
    ));
    let callback = format!("http://127.0.0.1:{}/login/oidc/callback", server.http_port);
    let _provider = Provider::start(provider_port, &callback, &pem);
    server.cli(&["facility", "add", "OTHER", "--name", "Another hospital"]);
    let ct = repo_root().join(CT);
    server.store_files(&[&ct], "a CT study of facility LOCAL");
    let study = study_of(&ct);
    let page = format!("/ui/studies/{study}");

    // LOCAL's doctor: asked for the study, signed in at the provider, back on the study.
    let report = sign_in(&server, &page, "LOCAL.clinician.lan");
    let sign_in_page = report["sign_in_page"].as_str().unwrap();
    assert!(
        sign_in_page.contains("/login?next=%2Fui%2Fstudies%2F"),
        "{report}"
    );
    assert!(
        report["at_provider"].as_str().unwrap().starts_with(&issuer),
        "{report}"
    );
    assert_eq!(
        report["landed"].as_str().unwrap(),
        format!("http://127.0.0.1:{}{page}", server.http_port),
        "{report}"
    );
    let cookies = report["cookies"].as_array().unwrap();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "tramy_session")
        .unwrap_or_else(|| panic!("no session cookie: {report}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    assert!(
        !cookies.iter().any(|c| c["name"] == "tramy_sign_in"),
        "the pending sign-in is forgotten: {report}"
    );
    // The study page itself, not an error page; and the audit trail names the provider's user.
    let heading = report["heading"].as_str().unwrap();
    assert!(!heading.is_empty(), "{report}");
    let audited = wait_for("the provider's user in the audit trail", || {
        let r = server.http("GET", "/api/v1/audit?actor=LOCAL.clinician.lan", &[], b"");
        r.json()
            .as_array()
            .filter(|events| {
                events
                    .iter()
                    .any(|e| e["study_instance_uid"] == study.as_str())
            })
            .cloned()
    });
    assert_eq!(audited[0]["facility"], "LOCAL");

    // Another facility's doctor, signed in the same way, does not see the study.
    let other = sign_in(&server, "/ui/", "OTHER.clinician.khoa");
    assert!(
        other["landed"].as_str().unwrap().ends_with("/ui/"),
        "{other}"
    );
    let r = server.http("GET", "/api/v1/audit?actor=OTHER.clinician.khoa", &[], b"");
    assert!(
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["study_instance_uid"] != study.as_str()),
        "{}",
        r.json()
    );

    // An answer this browser did not ask for (no pending sign-in, a made-up state) is refused.
    let forged = server.http(
        "GET",
        "/login/oidc/callback?code=stolen&state=made-up",
        &[("Authorization", "")],
        b"",
    );
    assert_eq!(forged.status, 401);
    assert!(String::from_utf8_lossy(&forged.body).contains("start again"));
    // No access token reaches the log (a JWT starts with `eyJ`).
    assert!(!server.log().contains("eyJ"), "a token reached the log");
}

#[test]
fn without_a_configured_client_the_sign_in_page_offers_tokens_only() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let login = server.http("GET", "/login", &[("Authorization", "")], b"");
    assert_eq!(login.status, 200);
    assert!(!String::from_utf8_lossy(&login.body).contains("sign-in-sso"));
    let start = server.http("GET", "/login/oidc", &[("Authorization", "")], b"");
    assert_eq!(start.status, 404);
}
