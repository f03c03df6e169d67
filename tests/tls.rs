//! TLS on the listeners (issue #9 item 10): HTTPS with a certificate from the configuration,
//! DICOM over TLS (PS3.15 B.1) with dcmtk and pynetdicom, client certificates, handshakes that
//! never finish, and start-up errors that name the key. A throwaway CA and its certificates are
//! made per test with rcgen.
//!
//! `tramy serve` is started here rather than through `common::TramyServer`, whose readiness
//! probe speaks plain HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::{assert_success, dcmtk, dcmtk_available, python, repo_root, wait_for};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A throwaway CA with a server certificate (localhost, 127.0.0.1) and a client certificate,
/// as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tramy test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text);
        write("ca.pem", &ca.pem()).expect("write");
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, stem: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, stem);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).expect("signed");
            write(&format!("{stem}.pem"), &cert.pem()).expect("write");
            write(&format!("{stem}-key.pem"), &key.serialize_pem()).expect("write");
        };
        leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(
            vec!["TLSTEST".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `[section]` lines that turn TLS on with the server certificate.
    fn section(&self, section: &str) -> String {
        format!(
            "[{section}]\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
            self.path("server.pem"),
            self.path("server-key.pem")
        )
    }
}

/// A running `tramy serve` with its own data folder, killed when dropped.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    http: u16,
    dimse: u16,
    ready_line: String,
}

impl Server {
    fn command(dir: &Path, toml: &str) -> Command {
        let config = dir.join("tramy.toml");
        std::fs::write(&config, toml).expect("config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tramy"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env("TRAMY_DATA_DIR", dir.join("data"))
            .env("TRAMY_DIMSE_ADDR", "127.0.0.1:0")
            .env("TRAMY_HTTP_ADDR", "127.0.0.1:0")
            .env("TRAMY_AE_TITLE", "TRAMY")
            .env("RUST_LOG", "info")
            .env_remove("TRAMY_CONFIG");
        cmd
    }

    /// Starts tramy with `toml` and waits for its "tramy is ready" line (logged once both
    /// listeners are bound).
    fn start(toml: &str) -> Server {
        let dir = tempfile::tempdir().expect("dir");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let child = Self::command(dir.path(), toml)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("tramy starts");
        let mut server = Server {
            child,
            dir,
            http: 0,
            dimse: 0,
            ready_line: String::new(),
        };
        let line = wait_for("tramy is ready", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("tramy exited ({status}):\n{}", server.log());
            }
            let log = server.log();
            let line = log.lines().find(|l| l.contains("tramy is ready"))?;
            Some(line.to_string())
        });
        server.http = port_after(&line, "http=");
        server.dimse = port_after(&line, "dimse=");
        server.ready_line = line;
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The superadmin token written at first start (sent along so these tests keep passing
    /// once every route needs a credential).
    fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin-token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    /// Registers `ae_title` for facility LOCAL (DIMSE asks for registered calling AE titles).
    fn register_ae(&self, ae_title: &str) {
        let out = Command::new(env!("CARGO_BIN_EXE_tramy"))
            .args(["ae", "add", ae_title, "--facility", "LOCAL"])
            .arg("--config")
            .arg(self.dir.path().join("tramy.toml"))
            .env("TRAMY_DATA_DIR", self.data_dir())
            .env_remove("TRAMY_CONFIG")
            .output()
            .expect("tramy ae add runs");
        assert_success(&out, "tramy ae add");
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.http)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of `key`'s value in the ready line (`http=https://127.0.0.1:PORT`, `dimse=ADDR`).
fn port_after(line: &str, key: &str) -> u16 {
    let rest = &line[line.find(key).expect(key) + key.len()..];
    let value: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
        .collect();
    value
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line}"))
}

/// Runs `tests/clients/tls_client.py` and parses its JSON.
fn tls_client(args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/tls_client.py"))
        .args(args)
        .output()
        .expect("tls_client.py runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "tls_client.py {args:?} printed no JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn https_get(server: &Server, pki: &Pki, path: &str) -> serde_json::Value {
    let token = server.token();
    let (url, ca) = (server.url(path), pki.path("ca.pem"));
    tls_client(&["get", &url, "--ca", &ca, "--token", &token])
}

#[test]
fn https_serves_healthz_to_a_client_that_trusts_the_ca_and_plain_http_gets_nothing() {
    let pki = Pki::new();
    let server = Server::start(&pki.section("http"));
    assert!(
        server.ready_line.contains("https://"),
        "{}",
        server.ready_line
    );
    let got = https_get(&server, &pki, "/healthz");
    assert_eq!(got["status"], 200, "{got}");

    // The session cookie of /login is only ever sent back over HTTPS.
    let token = server.token();
    let (url, ca) = (server.url("/login"), pki.path("ca.pem"));
    let got = tls_client(&["login", &url, "--ca", &ca, "--token", &token]);
    assert_eq!(got["status"], 303, "{got}");
    let attributes = got["attributes"].to_string();
    assert!(attributes.contains("Secure"), "{got}");

    // A plain HTTP request to the TLS port gets no HTTP answer (a TLS alert, then the close).
    let mut plain = TcpStream::connect(("127.0.0.1", server.http)).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    // And a client that does not trust the certificate refuses the server.
    let url = server.url("/healthz");
    let stranger = Pki::new();
    let got = tls_client(&["get", &url, "--ca", &stranger.path("ca.pem")]);
    assert_eq!(got["ok"], false, "{got}");
    assert!(got["error"].as_str().unwrap_or("").contains("SSL"), "{got}");
}

/// Whether the server has closed `socket` (end of stream or reset), waiting at most 60 s.
fn closed_by_server(socket: &mut TcpStream) -> bool {
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut byte = [0u8; 64];
    loop {
        match socket.read(&mut byte) {
            Ok(0) => return true,
            // An alert before the close is fine; keep reading.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn a_handshake_that_never_finishes_gives_its_slot_back_after_the_header_timeout() {
    let pki = Pki::new();
    let server = Server::start(&format!(
        "{}header_read_timeout_secs = 2\nmax_connections = 2\n",
        pki.section("http")
    ));
    // Two connections take both slots: one silent, one that stops inside its ClientHello
    // (a record header announcing 512 bytes, and nothing more).
    let mut silent = TcpStream::connect(("127.0.0.1", server.http)).expect("connect");
    let mut stalled = TcpStream::connect(("127.0.0.1", server.http)).expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("send");
    let started = Instant::now();
    assert!(
        closed_by_server(&mut silent),
        "a silent connection was held past 60 s"
    );
    assert!(
        closed_by_server(&mut stalled),
        "a stalled handshake was held past 60 s"
    );
    // Not before the timeout: the slots were held until then, not refused at once.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}",
        started.elapsed()
    );
    // The slots are free again.
    let got = https_get(&server, &pki, "/healthz");
    assert_eq!(got["status"], 200, "{got}");
}

/// dcmtk's TLS options: trust the test CA; with `client`, present the client certificate.
fn dcmtk_tls(pki: &Pki, client: bool) -> Vec<String> {
    let mut args = if client {
        vec![
            "+tls".to_string(),
            pki.path("client-key.pem"),
            pki.path("client.pem"),
        ]
    } else {
        vec!["+tla".to_string()]
    };
    args.extend(["+cf".to_string(), pki.path("ca.pem")]);
    args
}

fn run_dcmtk(tool: &str, tls: &[String], rest: &[&str]) -> Output {
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend_from_slice(rest);
    dcmtk(tool, &args, None)
}

#[test]
fn dcmtk_echo_and_store_over_tls_and_the_instance_reads_back_over_https() {
    assert!(dcmtk_available(), "dcmtk is needed (see .ci/run)");
    let pki = Pki::new();
    let server = Server::start(&format!("{}{}", pki.section("http"), pki.section("dimse")));
    assert!(
        server.ready_line.contains("dimse_tls=true"),
        "{}",
        server.ready_line
    );
    server.register_ae("TLSTEST");
    let port = server.dimse.to_string();
    let tls = dcmtk_tls(&pki, false);
    let common = ["-aet", "TLSTEST", "-aec", "TRAMY", "127.0.0.1", &port];
    assert_success(&run_dcmtk("echoscu", &tls, &common), "echoscu over TLS");

    let sample = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    let sample = sample.display().to_string();
    // -R: propose only the file's own transfer syntax, so it is stored byte for byte.
    let mut store = vec!["-R"];
    store.extend_from_slice(&common);
    store.push(&sample);
    let out = run_dcmtk("storescu", &tls, &store);
    assert_success(&out, "storescu over TLS");

    let (study, series, sop) = common::ct_uids();
    let read_back = server.dir.path().join("read-back.dcm");
    let token = server.token();
    let url = server.url(&format!(
        "/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    ));
    let got = tls_client(&[
        "get",
        &url,
        "--ca",
        &pki.path("ca.pem"),
        "--token",
        &token,
        "--accept",
        "multipart/related; type=\"application/dicom\"",
        "--out",
        &read_back.display().to_string(),
    ]);
    assert_eq!(got["status"], 200, "{got}");
    // dcmtk leaves out the sample's Data Set Trailing Padding; the pixel data (the middle of
    // the data set) and the SOP Instance UID arrive as they are.
    let body = std::fs::read(&read_back).expect("body");
    let stored = common::dataset_bytes(Path::new(&sample));
    let pixels = &stored[stored.len() / 2..stored.len() / 2 + 4096];
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(pixels) && contains(sop.as_bytes()),
        "the instance read back over HTTPS ({} bytes) is not the one stored over TLS",
        body.len()
    );

    // URLs in metadata name the scheme the client used.
    let metadata = server.dir.path().join("metadata.json");
    let url = server.url(&format!("/dicomweb/studies/{study}/metadata"));
    let got = tls_client(&[
        "get",
        &url,
        "--ca",
        &pki.path("ca.pem"),
        "--token",
        &token,
        "--out",
        &metadata.display().to_string(),
    ]);
    assert_eq!(got["status"], 200, "{got}");
    let metadata = std::fs::read_to_string(&metadata).expect("metadata");
    let base = format!(
        "\"https://localhost:{}/dicomweb/studies/{study}",
        server.http
    );
    assert!(metadata.contains(&base), "no {base} in {metadata}");

    // A plain (non-TLS) association to the TLS port is not established.
    let out = dcmtk("echoscu", &common, None);
    assert!(
        !out.status.success(),
        "plain DICOM was accepted on the TLS port"
    );
}

#[test]
fn pynetdicom_echoes_over_tls_with_an_ssl_context() {
    let pki = Pki::new();
    let server = Server::start(&pki.section("dimse"));
    server.register_ae("TLSTEST");
    let port = server.dimse.to_string();
    let got = tls_client(&["echo", "127.0.0.1", &port, "--ca", &pki.path("ca.pem")]);
    assert_eq!(got["status"], 0, "{got}");
}

#[test]
fn with_a_client_ca_only_peers_with_a_certificate_from_it_associate() {
    assert!(dcmtk_available(), "dcmtk is needed (see .ci/run)");
    let pki = Pki::new();
    let server = Server::start(&format!(
        "{}tls_client_ca = \"{}\"\n",
        pki.section("dimse"),
        pki.path("ca.pem")
    ));
    server.register_ae("TLSTEST");
    let port = server.dimse.to_string();
    let common = ["-aet", "TLSTEST", "-aec", "TRAMY", "127.0.0.1", &port];
    let anonymous = run_dcmtk("echoscu", &dcmtk_tls(&pki, false), &common);
    assert!(
        !anonymous.status.success(),
        "an association without a client certificate was accepted"
    );
    let certified = run_dcmtk("echoscu", &dcmtk_tls(&pki, true), &common);
    assert_success(&certified, "echoscu with a client certificate");
    // A certificate from another CA is refused too.
    let stranger = Pki::new();
    let foreign = run_dcmtk("echoscu", &dcmtk_tls(&stranger, true), &common);
    assert!(
        !foreign.status.success(),
        "a client certificate from another CA was accepted"
    );
}

#[test]
fn unusable_tls_files_stop_start_up_naming_the_key_without_key_material() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("dir");
    let run = |toml: &str| {
        let out = Server::command(dir.path(), toml).output().expect("runs");
        assert!(!out.status.success(), "tramy started with {toml}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let missing = run("[http]\ntls_certificate = \"/nonexistent/cert.pem\"\ntls_private_key = \"/nonexistent/key.pem\"\n");
    assert!(
        missing.contains("http.tls_certificate") && missing.contains("/nonexistent/cert.pem"),
        "{missing}"
    );
    let half = run("[dimse]\ntls_certificate = \"/nonexistent/cert.pem\"\n");
    assert!(half.contains("dimse.tls_private_key"), "{half}");

    let bad_key = dir.path().join("bad-key.pem");
    std::fs::write(
        &bad_key,
        "-----BEGIN PRIVATE KEY-----\nU0VDUkVUS0VZTUFURVJJQUw=\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let refused = run(&format!(
        "[dimse]\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
        pki.path("server.pem"),
        bad_key.display()
    ));
    assert!(refused.contains("dimse.tls_private_key"), "{refused}");
    assert!(
        !refused.contains("U0VDUkVU"),
        "key material printed: {refused}"
    );
}

#[test]
fn a_dicom_tls_handshake_that_never_finishes_is_closed_after_artim() {
    let pki = Pki::new();
    let server = Server::start(&format!(
        "{}artim_secs = 2\nmax_associations_per_peer = 1\n",
        pki.section("dimse")
    ));
    server.register_ae("TLSTEST");
    // This address's one connection: a ClientHello that stops after its record header.
    let mut stalled = TcpStream::connect(("127.0.0.1", server.dimse)).expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("send");
    let started = Instant::now();
    assert!(
        closed_by_server(&mut stalled),
        "a stalled DICOM TLS handshake was held past 60 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}",
        started.elapsed()
    );
    // Its place is free again.
    let port = server.dimse.to_string();
    let got = tls_client(&["echo", "127.0.0.1", &port, "--ca", &pki.path("ca.pem")]);
    assert_eq!(got["status"], 0, "{got}");
}
