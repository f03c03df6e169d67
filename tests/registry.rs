//! The registry of facilities, AE titles and API tokens (issue #9): the `tramy facility|ae|token`
//! commands, run as processes with `--config` beside a running `tramy serve` on the same data
//! folder, and the first start's `admin-token`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{DateTime, Utc};
use common::*;
use tramy::auth::api_token::{self, StoredToken};
use tramy::auth::Role;

/// A config file naming `data_dir`, so the commands find it through `--config` alone.
fn config_for(data_dir: &Path, index_url: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("tramy.toml");
    let mut toml = format!("data_dir = {:?}\n", data_dir.display().to_string());
    if let Some(url) = index_url {
        toml += &format!("index_url = {url:?}\n");
    }
    std::fs::write(&path, toml).expect("config");
    (tmp, path)
}

/// Runs `tramy ARGS --config CONFIG` with no TRAMY_* variables.
fn tramy(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tramy"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("TRAMY_DATA_DIR")
        .env_remove("TRAMY_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("tramy runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(config: &Path, args: &[&str]) -> String {
    let out = tramy(config, args);
    assert_success(&out, &args.join(" "));
    stdout(&out)
}

fn time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .expect("RFC 3339 time")
            .with_timezone(&Utc)
    })
}

/// The stored record of token `id`, read straight from the index.
fn stored_token(server: &TramyServer, id: &str) -> StoredToken {
    let rows = server.index_rows(
        "SELECT id, hash, facility, role, expires_at, revoked_at FROM api_tokens WHERE id = ?1",
        &[id],
    );
    let row = rows.first().expect("the token's row");
    let text = |i: usize| row[i].clone();
    StoredToken {
        id: text(0).expect("an id"),
        hash: text(1).expect("a hash"),
        facility: text(2),
        role: text(3).expect("a role").parse().expect("a role"),
        expires_at: time(text(4)),
        revoked_at: time(text(5)),
    }
}

/// The one line `token create` prints: the token, verified against its stored record.
fn created_token(server: &TramyServer, out: &str) -> (String, StoredToken) {
    assert_eq!(out.lines().count(), 1, "stdout is the token alone: {out:?}");
    assert!(out.ends_with('\n'));
    let token = out.trim_end().to_owned();
    let id = api_token::id_of(&token).expect("shaped as a tramy token");
    let stored = stored_token(server, id);
    api_token::verify(&token, &stored, Utc::now()).expect("the stored record accepts it");
    assert_ne!(stored.hash, token, "only the hash is stored");
    (token, stored)
}

fn token_line<'a>(list: &'a str, id: &str) -> &'a str {
    list.lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("token {id} listed:\n{list}"))
}

#[test]
fn facility_ae_and_token_commands_round_trip_beside_a_running_server() {
    let server = TramyServer::start();
    let (_tmp, config) = config_for(&server.data_dir, server.index_url.as_deref());

    ok(
        &config,
        &["facility", "add", "79001", "--name", "Bệnh viện Chợ Rẫy"],
    );
    ok(
        &config,
        &[
            "facility",
            "add",
            "7900101",
            "--name",
            "Trạm Y tế Phường 1",
            "--kind",
            "commune_station",
            "--parent",
            "79001",
        ],
    );
    let facilities = ok(&config, &["facility", "list"]);
    let station = facilities
        .lines()
        .find(|l| l.starts_with("7900101 "))
        .unwrap_or_else(|| panic!("station listed:\n{facilities}"));
    for field in ["commune_station", "79001", "Trạm Y tế Phường 1"] {
        assert!(station.contains(field), "{field} in {station:?}");
    }
    assert!(
        facilities.contains("LOCAL"),
        "first start's facility:\n{facilities}"
    );

    ok(
        &config,
        &[
            "ae",
            "add",
            "CT_CHORAY",
            "--facility",
            "79001",
            "--host",
            "10.1.2.3",
        ],
    );
    let aes = ok(&config, &["ae", "list"]);
    let ct = aes
        .lines()
        .find(|l| l.starts_with("CT_CHORAY "))
        .expect("AE listed");
    assert!(ct.contains("79001") && ct.contains("10.1.2.3"), "{ct}");

    let out = ok(
        &config,
        &[
            "token",
            "create",
            "--facility",
            "79001",
            "--role",
            "clinician",
            "--name",
            "dr-an",
            "--expires-in",
            "30d",
        ],
    );
    let (token, stored) = created_token(&server, &out);
    assert_eq!(
        (stored.facility.as_deref(), stored.role),
        (Some("79001"), Role::Clinician)
    );
    let lifetime = stored.expires_at.expect("an expiry") - Utc::now();
    assert!(
        lifetime > chrono::Duration::days(29) && lifetime <= chrono::Duration::days(30),
        "{lifetime}"
    );
    let modality = ok(
        &config,
        &[
            "token",
            "create",
            "--facility",
            "7900101",
            "--role",
            "modality",
        ],
    );
    let (modality, _) = created_token(&server, &modality);

    let list = ok(&config, &["token", "list"]);
    let line = token_line(&list, &stored.id);
    for field in ["79001", "clinician", "dr-an", "never"] {
        assert!(line.contains(field), "{field} in {line:?}");
    }
    for secret in [&token, &modality, &stored.hash] {
        assert!(
            !list.contains(secret.as_str()),
            "token list shows no token or hash"
        );
    }

    let revoked = tramy(&config, &["token", "revoke", &stored.id]);
    assert_success(&revoked, "token revoke");
    assert!(stderr(&revoked).contains("revoked"));
    let again = tramy(&config, &["token", "revoke", &stored.id]);
    assert_success(&again, "revoking twice is harmless");
    let record = stored_token(&server, &stored.id);
    let err = api_token::verify(&token, &record, Utc::now()).expect_err("revoked");
    assert!(err.to_string().contains("revoked"), "{err}");
    let list = ok(&config, &["token", "list"]);
    let revoked_at = token_line(&list, &stored.id)
        .split_whitespace()
        .last()
        .expect("revoked column");
    assert!(
        revoked_at.starts_with("20"),
        "revoked time listed: {revoked_at}"
    );
    assert!(
        token_line(&list, api_token::id_of(&modality).unwrap()).ends_with(" -"),
        "the other token is not revoked"
    );

    // Writes from both processes at once: instances arriving while tokens are made.
    let samples = samples();
    let made = std::thread::scope(|s| {
        let storing = s.spawn(|| {
            let files: Vec<&Path> = samples.iter().map(PathBuf::as_path).collect();
            server.store_files(&files, "C-STORE while tokens are made");
        });
        let made: Vec<String> = (0..5)
            .map(|_| {
                let out = ok(&config, &["token", "create", "--role", "superadmin"]);
                created_token(&server, &out).0
            })
            .collect();
        storing.join().expect("storing thread");
        made
    });
    assert_eq!(server.indexed_instances(), samples.len() as i64);

    // The server kept serving throughout, and no token reached its log.
    assert_eq!(server.http_get("/healthz").map(|(c, _)| c), Some(200));
    let log = server.log();
    for secret in made.iter().chain([&token, &modality]) {
        assert!(!log.contains(secret.as_str()), "a token in the server log");
    }
}

#[test]
fn bad_registry_input_is_refused_with_a_reason_and_writes_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let (_tmp, config) = config_for(&data.path().join("data"), None);
    ok(&config, &["facility", "add", "79001", "--name", "Chợ Rẫy"]);
    ok(&config, &["ae", "add", "CT1", "--facility", "79001"]);
    let before = (
        ok(&config, &["facility", "list"]),
        ok(&config, &["ae", "list"]),
        ok(&config, &["token", "list"]),
    );

    let refused: &[(&[&str], &str)] = &[
        (
            &[
                "facility", "add", "79002", "--name", "X", "--parent", "NOPE",
            ],
            "no facility NOPE",
        ),
        (
            &["facility", "add", "79001", "--name", "Again"],
            "already exists",
        ),
        (&["facility", "add", "a b", "--name", "X"], "not valid"),
        (
            &[
                "facility", "add", "79003", "--name", "X", "--kind", "clinic",
            ],
            "commune_station",
        ),
        (
            &["facility", "add", "79004", "--name", " "],
            "must not be empty",
        ),
        (&["ae", "add", "CT\\2", "--facility", "79001"], "backslash"),
        (
            &["ae", "add", "ABCDEFGHIJKLMNOPQ", "--facility", "79001"],
            "16",
        ),
        (&["ae", "add", "    ", "--facility", "79001"], "all spaces"),
        (&["ae", "add", "CT\t2", "--facility", "79001"], "printable"),
        (
            &["ae", "add", "CT1", "--facility", "79001"],
            "already registered",
        ),
        (
            &["ae", "add", "CT3", "--facility", "NOPE"],
            "no facility NOPE",
        ),
        (
            &[
                "ae",
                "add",
                "CT4",
                "--facility",
                "79001",
                "--host",
                "a host",
            ],
            "host",
        ),
        (
            &["token", "create", "--facility", "79001", "--role", "root"],
            "unknown role",
        ),
        (&["token", "create", "--role", "clinician"], "--facility"),
        (
            &[
                "token",
                "create",
                "--facility",
                "79001",
                "--role",
                "superadmin",
            ],
            "system-wide",
        ),
        (
            &["token", "create", "--facility", "NOPE", "--role", "admin"],
            "no facility NOPE",
        ),
        (
            &[
                "token",
                "create",
                "--facility",
                "79001",
                "--role",
                "admin",
                "--expires-in",
                "soon",
            ],
            "30d",
        ),
        (
            &[
                "token",
                "create",
                "--facility",
                "79001",
                "--role",
                "admin",
                "--expires-in",
                "0s",
            ],
            "30d",
        ),
        (&["token", "revoke", "0123456789abcdef"], "no API token"),
    ];
    for (args, reason) in refused {
        let out = tramy(&config, args);
        let said = stderr(&out);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(said.contains(reason), "{args:?}: {reason:?} not in {said}");
        assert!(stdout(&out).is_empty(), "{args:?} printed on stdout");
        assert!(!said.contains("panicked"), "{args:?}: {said}");
    }
    let after = (
        ok(&config, &["facility", "list"]),
        ok(&config, &["ae", "list"]),
        ok(&config, &["token", "list"]),
    );
    assert_eq!(before, after, "refused commands wrote nothing");
}

#[test]
fn first_start_writes_a_superadmin_token_once_and_never_logs_it() {
    let mut server = TramyServer::start();
    let path = server.data_dir.join("admin-token");
    let text = std::fs::read_to_string(&path).expect("admin-token written on first start");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner reads it");
    }
    let (token, stored) = created_token(&server, &text);
    assert_eq!((stored.facility, stored.role), (None, Role::Superadmin));
    let log = server.log();
    assert!(!log.contains(&token), "the token is never logged");
    let line = log
        .lines()
        .find(|l| l.contains("superadmin") && l.contains("admin-token"))
        .unwrap_or_else(|| panic!("the log says where the token is:\n{log}"));
    assert!(line.contains("INFO"), "{line}");

    let (_tmp, config) = config_for(&server.data_dir, server.index_url.as_deref());
    let tokens_before = ok(&config, &["token", "list"]);
    assert_eq!(
        tokens_before.lines().count(),
        2,
        "one token:\n{tokens_before}"
    );

    server.restart();
    assert_eq!(
        std::fs::read_to_string(&path).expect("admin-token kept"),
        text,
        "a restart does not replace it"
    );
    assert_eq!(
        ok(&config, &["token", "list"]),
        tokens_before,
        "nor makes another"
    );
    let log = server.log();
    assert_eq!(log.matches("admin-token").count(), 1, "said once:\n{log}");
    assert!(!log.contains(&token));
}

#[test]
fn a_presented_token_authenticates_until_revoked_and_its_use_is_noted() {
    use tramy::access::Principal;
    use tramy::registry::{authenticate_api_token, NewFacility, NewToken};
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let index = tramy::store::Index::open(&dir.path().join("index.sqlite"), false)
            .expect("index opens");
        let who = Principal::system();
        index
            .add_facility(
                &who,
                NewFacility {
                    code: "79001".into(),
                    name: "Chợ Rẫy".into(),
                    kind: "hospital".parse().unwrap(),
                    parent: None,
                },
            )
            .await
            .expect("facility");
        let issued = index
            .create_token(
                &who,
                NewToken {
                    facility: Some("79001".into()),
                    role: Role::Admin,
                    name: String::new(),
                    expires_at: None,
                },
            )
            .await
            .expect("token");

        let identity = authenticate_api_token(&index, &issued.text)
            .await
            .expect("index")
            .expect("accepted");
        assert_eq!(identity.facility.as_deref(), Some("79001"));
        assert_eq!(identity.roles, vec![Role::Admin]);
        let listed = index.tokens(&who).await.expect("list");
        assert!(listed[0].last_used_at.is_some(), "use noted");

        let unknown = api_token::issue().unwrap().text;
        for bad in [
            unknown.as_str(),
            "tramy_nonsense",
            &issued.text[..issued.text.len() - 1],
        ] {
            let refused = authenticate_api_token(&index, bad).await.expect("index");
            assert!(refused.is_err(), "{bad}");
        }
        index.revoke_token(&who, &issued.id).await.expect("revoke");
        let refused = authenticate_api_token(&index, &issued.text)
            .await
            .expect("index")
            .expect_err("revoked");
        assert!(refused.to_string().contains("revoked"), "{refused}");
    });
}
