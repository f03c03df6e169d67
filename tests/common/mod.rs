//! Shared test harness: starts the real `tramy serve` binary on free loopback ports with its own
//! data folder, and provides the third-party clients (pynetdicom in a virtual environment made
//! from `tests/requirements.txt`, dcmtk when installed).

#![allow(dead_code)]

pub mod garage;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;

pub mod postgres;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed sample files.
pub fn samples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("dicom-samples"))
        .expect("dicom-samples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    files
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Python with pynetdicom and pydicom, in `target/tmp/test-venv`, created on first use.
pub fn python() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmp dir");
    let venv = base.join("test-venv");
    let python = venv.join("bin").join("python");
    let requirements =
        std::fs::read_to_string(repo_root().join("tests/requirements.txt")).expect("requirements");
    let marker = venv.join("requirements.installed");
    // Test binaries run in parallel: one builds the environment, the others wait.
    let lock = std::fs::File::create(base.join("test-venv.lock")).expect("lock file");
    lock.lock_exclusive().expect("lock");
    let current = std::fs::read_to_string(&marker).unwrap_or_default();
    if !python.exists() || current != requirements {
        let status = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the integration tests");
        assert!(status.success(), "python3 -m venv failed");
        let out = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(repo_root().join("tests/requirements.txt"))
            .output()
            .expect("pip");
        assert!(
            out.status.success(),
            "pip install -r tests/requirements.txt failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&marker, &requirements).expect("marker");
    }
    FileExt::unlock(&lock).expect("unlock");
    python
}

/// Runs a pynetdicom command-line app (`echoscu`, `storescu`, `findscu`, `getscu`, `movescu`,
/// `storescp`) with `args`.
pub fn pynetdicom(app: &str, args: &[&str]) -> Output {
    Command::new(python())
        .args(["-m", "pynetdicom", app])
        .args(args)
        .output()
        .expect("pynetdicom runs")
}

/// Runs `tests/clients/dimse_client.py` and parses its JSON output.
pub fn dimse_client(port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/dimse_client.py"))
        .args(["--port", &port.to_string()])
        .args(args)
        .output()
        .expect("dimse_client.py runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "dimse_client.py {args:?} printed no JSON ({e}):\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Whether a dcmtk tool is on PATH.
pub fn dcmtk_available() -> bool {
    Command::new("storescu")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a dcmtk tool (`echoscu`, `storescu`, `findscu`, ...) with `args`, in `cwd` if given.
pub fn dcmtk(tool: &str, args: &[&str], cwd: Option<&Path>) -> Output {
    let mut cmd = Command::new(tool);
    cmd.args(args).env("TCP_NODELAY", "1");
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.output().unwrap_or_else(|e| panic!("{tool} runs: {e}"))
}

/// Asks for an association with C-ECHO from `calling_ae_title` and returns what the client
/// printed. dcmtk's echoscu is preferred: pynetdicom's requestor has a race (its ACSE thread can
/// find the socket already closed after an A-ASSOCIATE-RJ and exit silently) that a loaded CI
/// machine hits.
pub fn echo_said(port: &str, calling_ae_title: &str) -> (Output, String) {
    let args = ["-aet", calling_ae_title, "-aec", "TRAMY", "127.0.0.1", port];
    let out = if dcmtk_available() {
        dcmtk("echoscu", &args, None)
    } else {
        pynetdicom("echoscu", &args)
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, said)
}

/// The pneumonia model (converted by build.rs) and its 16 labelled images; converted here with
/// the test environment's Python when build.rs could not do it.
pub fn pneumonia_model() -> (PathBuf, PathBuf) {
    let folder = repo_root().join("models/chest-xray-pneumonia");
    let images = repo_root().join("dicom-samples/fetched/kermany-val");
    let python = python();
    let lock =
        std::fs::File::create(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pneumonia.lock"))
            .unwrap();
    lock.lock_exclusive().unwrap();
    if !folder.join("model.onnx").is_file() || !images.join("PNEUMONIA").is_dir() {
        let out = Command::new(&python)
            .arg(folder.join("convert.py"))
            .arg("--images")
            .arg(&images)
            .output()
            .unwrap();
        assert_success(&out, "models/chest-xray-pneumonia/convert.py");
    }
    // The pneumonia model runs only behind the chest anatomy gate.
    let gate = lung_gate_folder();
    if !gate.join("model.onnx").is_file() {
        let out = Command::new(&python)
            .arg(gate.join("convert.py"))
            .output()
            .unwrap();
        assert_success(&out, "models/chest-lung-segmentation/convert.py");
    }
    FileExt::unlock(&lock).unwrap();
    (folder, images)
}

/// The chest anatomy gate's folder (its model is converted by [`pneumonia_model`]).
pub fn lung_gate_folder() -> PathBuf {
    repo_root().join("models/chest-lung-segmentation")
}

/// Writes a copy of the shipped model folder `name`'s manifest into `models/<name>/` under
/// `dir`, pointing at the shipped ONNX file, with each `(from, to)` of `edits` applied.
pub fn shipped_manifest_copy(dir: &Path, name: &str, edits: &[(&str, &str)]) {
    let folder = repo_root().join("models").join(name);
    let mut manifest = std::fs::read_to_string(folder.join("model.toml")).unwrap();
    for (from, to) in edits {
        assert!(manifest.contains(from), "{name}/model.toml has {from:?}");
        manifest = manifest.replace(from, to);
    }
    let onnx = folder.join("model.onnx").display().to_string();
    let manifest = manifest.replace("file = \"model.onnx\"", &format!("file = {onnx:?}"));
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join("model.toml"), manifest).unwrap();
}

/// Waits up to `seconds` for `probe` (triage and browsers on two busy cores are slow).
pub fn wait_long<T>(what: &str, seconds: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The web UI's English catalogue texts (each message's text before any argument), for the
/// checks that a Vietnamese page has no English left.
pub fn english_texts() -> Vec<(String, String)> {
    let ftl = std::fs::read_to_string(repo_root().join("src/web/ui/locales/en/main.ftl")).unwrap();
    ftl.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = "))
        // The switch link names the other language in that language, on purpose.
        .filter(|(key, _)| *key != "lang-switch")
        .map(|(key, text)| {
            let text = text.split("{ $").next().unwrap_or_default().trim();
            (key.to_string(), text.to_string())
        })
        .collect()
}

/// English UI messages found in `text`.
pub fn english_left(text: &str) -> Vec<String> {
    english_texts()
        .into_iter()
        .filter(|(_, english)| text.contains(english.as_str()))
        .map(|(key, english)| format!("{key}: {english:?}"))
        .collect()
}

/// Polls `probe` every 100 ms until it yields a value; fails the test after 60 s naming `what`.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Calling AE titles the tests use: the defaults of dcmtk's and pynetdicom's tools and those the
/// test scripts set.
pub const TEST_AE_TITLES: &[&str] = &[
    "STORESCU",
    "FINDSCU",
    "GETSCU",
    "MOVESCU",
    "ECHOSCU",
    "PYNETDICOM",
    "GETEXACT",
    "BADSENDER",
    "STREAMER",
    "LOADDIMSE",
    "ATTACKER",
    "MODALITY",
    "MODALITY1",
    "TRAMY",
    "FIXTURE",
    "BENCH",
    "DEST",
    "DRIP",
    "GREEDY",
];

/// Where the suite's servers keep their objects: a prefix of this process's Garage when
/// `TRAMY_TEST_OBJECT_STORE=garage`, else their local folder (no variables).
fn suite_objects() -> Vec<(String, String)> {
    if garage::suite_on_garage() {
        assert!(
            garage::shared().is_some(),
            "TRAMY_TEST_OBJECT_STORE=garage but garage is not installed (cargo install garage --locked --version 2.5.0)"
        );
        garage::server_env()
    } else {
        Vec::new()
    }
}

/// Where the suite's servers keep their index: a new database on this process's PostgreSQL
/// when `TRAMY_TEST_INDEX=postgres`, else the SQLite file in their data folder.
fn suite_index() -> Option<String> {
    postgres::enabled().then(postgres::new_database)
}

/// A running `tramy serve`, killed when dropped.
pub struct TramyServer {
    child: Option<Child>,
    /// DIMSE port.
    pub dimse_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// Data folder.
    pub data_dir: PathBuf,
    config_file: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
    log: PathBuf,
    /// The superadmin token tramy wrote on first start; every helper request sends it.
    token: String,
    /// The PostgreSQL database of its index (`TRAMY_TEST_INDEX=postgres`), else `None`: the
    /// SQLite file in `data_dir`.
    pub index_url: Option<String>,
    /// Arguments after `tramy serve` (e.g. `--no-triage`).
    serve_args: Vec<String>,
    /// Environment for every `tramy` process of this server (an object store on Garage).
    env: Vec<(String, String)>,
}

impl TramyServer {
    /// Starts tramy with a fresh data folder and default settings.
    pub fn start() -> TramyServer {
        Self::start_with_config("")
    }

    /// Starts tramy with extra TOML configuration (merged into a config file); its objects on a
    /// prefix of this process's Garage when `TRAMY_TEST_OBJECT_STORE=garage`, its index on the
    /// test PostgreSQL when `TRAMY_TEST_INDEX=postgres`.
    pub fn start_with_config(toml: &str) -> TramyServer {
        Self::start_node(toml, &[], suite_objects(), suite_index())
    }

    /// Starts tramy with its objects in the local folder whatever `TRAMY_TEST_OBJECT_STORE` says:
    /// for tests that damage, write or copy files of the objects folder, or open the archive
    /// in-process from the data folder alone.
    pub fn start_with_local_objects(toml: &str) -> TramyServer {
        Self::start_node(toml, &[], Vec::new(), suite_index())
    }

    /// Starts tramy with extra TOML configuration and environment variables for each of its
    /// processes (server and `cli`).
    pub fn start_with_env(toml: &str, env: Vec<(String, String)>) -> TramyServer {
        Self::start_node(toml, &[], env, suite_index())
    }

    /// Starts tramy with extra TOML configuration, `tramy serve ARGS`, and its index at
    /// `index_url` (`None`: the SQLite file in its data folder).
    pub fn start_with(toml: &str, args: &[&str], index_url: Option<String>) -> TramyServer {
        Self::start_node(toml, args, suite_objects(), index_url)
    }

    /// Another node of `first`'s archive: the same index and objects, `first`'s signing keys
    /// and superadmin token (as `docs/deploy.md` says to set up a node).
    pub fn start_beside(first: &TramyServer) -> TramyServer {
        Self::start_beside_on(first, first.env.clone(), first.index_url.clone())
    }

    /// A node with `first`'s keys and superadmin token on the index and objects given (an
    /// archive restored from `first`'s backup).
    pub fn start_beside_on(
        first: &TramyServer,
        env: Vec<(String, String)>,
        index_url: Option<String>,
    ) -> TramyServer {
        let mut server = Self::prepare("", &[], env, index_url);
        std::fs::create_dir_all(&server.data_dir).expect("data folder");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(first.data_dir.join("keys"))
            .arg(first.data_dir.join("admin-token"))
            .arg(&server.data_dir)
            .output()
            .expect("cp runs");
        assert_success(&copied, "copying the first node's keys and token");
        server.spawn();
        server
    }

    /// Starts `tramy serve ARGS` with extra TOML configuration, environment for each of its
    /// processes, and its index at `index_url` (`None`: the SQLite file in its data folder).
    pub fn start_node(
        toml: &str,
        args: &[&str],
        env: Vec<(String, String)>,
        index_url: Option<String>,
    ) -> TramyServer {
        let mut server = Self::prepare(toml, args, env, index_url);
        server.spawn();
        server
    }

    fn prepare(
        toml: &str,
        args: &[&str],
        env: Vec<(String, String)>,
        index_url: Option<String>,
    ) -> TramyServer {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let config_file = if toml.is_empty() {
            None
        } else {
            let path = tmp.path().join("tramy.toml");
            std::fs::write(&path, toml).expect("config");
            Some(path)
        };
        let server = TramyServer {
            child: None,
            // Port 0: the server binds free ports itself and logs them; no race with other tests.
            dimse_port: 0,
            http_port: 0,
            data_dir,
            config_file,
            log: tmp.path().join("server.log"),
            _tmp: Some(tmp),
            token: String::new(),
            index_url,
            serve_args: args.iter().map(|a| a.to_string()).collect(),
            env,
        };
        server
    }

    /// The calling AE titles the tests' DICOM clients use (the tools' defaults and the test
    /// scripts' own), registered for facility LOCAL as an admin would with `tramy ae add`;
    /// written straight into the index so that a test costs no extra process per title
    /// (`tests/registry.rs` drives the command itself).
    fn register_test_ae_titles(&self) {
        if let Some(url) = &self.index_url {
            let mut client = postgres::connect(url);
            for title in TEST_AE_TITLES {
                client
                    .execute(
                        "INSERT INTO application_entities (ae_title, facility, host, created_at) \
                         VALUES ($1, 'LOCAL', NULL, '2026-01-01T00:00:00.000Z') ON CONFLICT DO NOTHING",
                        &[title],
                    )
                    .expect("AE title registered");
            }
            return;
        }
        let conn = rusqlite::Connection::open(self.data_dir.join("index.sqlite")).expect("index");
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        for title in TEST_AE_TITLES {
            conn.execute(
                "INSERT OR IGNORE INTO application_entities (ae_title, facility, host, created_at) \
                 VALUES (?1, 'LOCAL', NULL, '2026-01-01T00:00:00.000Z')",
                [title],
            )
            .expect("AE title registered");
        }
    }

    /// Runs `tramy ARGS` on this server's data folder, beside it (as an admin would); its
    /// stdout, trimmed. Fails the test when the command fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_tramy"))
            .args(args)
            .env("TRAMY_DATA_DIR", &self.data_dir)
            .envs(self.process_env())
            .env_remove("TRAMY_CONFIG")
            .output()
            .expect("tramy runs");
        assert_success(&out, &args.join(" "));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The environment of this server's processes: its object store's and `TRAMY_INDEX_URL`
    /// (for a `tramy` command or worker beside it).
    pub fn process_env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.extend(
            self.index_url
                .iter()
                .map(|url| ("TRAMY_INDEX_URL".to_string(), url.clone())),
        );
        env
    }

    /// The superadmin token of this server.
    pub fn token(&self) -> &str {
        &self.token
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tramy"));
        cmd.arg("serve")
            .args(&self.serve_args)
            .env("TRAMY_DATA_DIR", &self.data_dir)
            .env("TRAMY_DIMSE_ADDR", format!("127.0.0.1:{}", self.dimse_port))
            .env("TRAMY_HTTP_ADDR", format!("127.0.0.1:{}", self.http_port))
            .env("TRAMY_AE_TITLE", "TRAMY")
            .env("RUST_LOG", "info")
            .envs(self.process_env())
            .env_remove("TRAMY_CONFIG")
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(cfg) = &self.config_file {
            cmd.arg("--config").arg(cfg);
        }
        self.child = Some(cmd.spawn().expect("tramy starts"));
        self.wait_ready();
        self.register_test_ae_titles();
    }

    /// Sends `files` with pynetdicom's storescu, each in its own transfer syntax, and asserts
    /// that every one was stored.
    pub fn store_files(&self, files: &[&Path], what: &str) {
        let port = self.port();
        let mut args = vec![
            "-aec".to_string(),
            "TRAMY".into(),
            "--required-contexts".into(),
            "127.0.0.1".into(),
            port,
        ];
        args.extend(files.iter().map(|f| f.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = pynetdicom("storescu", &args);
        assert_success(&out, what);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            !log.contains("E: "),
            "{what}: storescu reported errors:\n{log}"
        );
    }

    /// The ports of the last "tramy is ready" line of the log.
    fn logged_ports(&self) -> Option<(u16, u16)> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains("tramy is ready"))?;
        let port_of = |key: &str| -> Option<u16> {
            let rest = &line[line.find(key)? + key.len()..];
            let addr: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                .collect();
            addr.rsplit(':').next()?.parse().ok()
        };
        Some((port_of("dimse=")?, port_of("http=")?))
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let lines_before = self.log().matches("tramy is ready").count();
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("tramy exited early ({status}):\n{}", self.log());
            }
            if self.log().matches("tramy is ready").count() > lines_before {
                if let Some((dimse, http)) = self.logged_ports() {
                    self.dimse_port = dimse;
                    self.http_port = http;
                }
            }
            if self.http_port != 0
                && self
                    .http_get("/healthz")
                    .is_some_and(|(code, _)| code == 200)
            {
                self.token = std::fs::read_to_string(self.data_dir.join("admin-token"))
                    .map(|t| t.trim().to_string())
                    .unwrap_or_default();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tramy did not become ready:\n{}", self.log());
    }

    /// The server process's id (for /proc/PID/status).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("tramy is running").id()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A plain HTTP GET; returns status code and body.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}\r\n",
            self.authorization_line()
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// Kills the process with SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data folder.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Restarts the server, on the same ports and data, with configuration that may name its
    /// own ports (`{http_port}` in `toml` is replaced by the HTTP port).
    pub fn reconfigure(&mut self, toml: &str) {
        let dir = self
            ._tmp
            .as_ref()
            .expect("a temporary folder")
            .path()
            .to_path_buf();
        let path = dir.join("tramy.toml");
        std::fs::write(
            &path,
            toml.replace("{http_port}", &self.http_port.to_string()),
        )
        .expect("config");
        self.config_file = Some(path);
        self.restart();
    }

    /// The DIMSE port as a string, for command lines.
    pub fn port(&self) -> String {
        self.dimse_port.to_string()
    }

    /// Files under the object store folder. When the objects are on Garage, a copy of them is
    /// made there first (the server does not use that folder then).
    pub fn object_files(&self) -> Vec<PathBuf> {
        let folder = self.data_dir.join("objects");
        if self.env.iter().any(|(k, _)| k == "TRAMY_OBJECT_STORE_URL") {
            garage::mirror(&self.env, &folder);
        }
        walk(&folder)
    }

    /// Number of instance rows in the index (read with a separate connection).
    pub fn indexed_instances(&self) -> i64 {
        let rows = self.index_rows("SELECT COUNT(*) FROM instances", &[]);
        rows[0][0]
            .as_deref()
            .and_then(|n| n.parse().ok())
            .expect("a count")
    }

    /// The rows `sql` selects, every column as text (`None` for NULL), read beside the server
    /// with a connection of its own to whichever engine holds its index. `sql` is written with
    /// SQLite's `?1` parameters and the SQL both engines share.
    pub fn index_rows(&self, sql: &str, params: &[&str]) -> Vec<Vec<Option<String>>> {
        if let Some(url) = &self.index_url {
            // The text protocol reads any column as text; test values are quoted inline.
            let mut sql = sql.to_string();
            for (i, p) in params.iter().enumerate().rev() {
                sql = sql.replace(
                    &format!("?{}", i + 1),
                    &format!("'{}'", p.replace('\'', "''")),
                );
            }
            return postgres::connect(url)
                .simple_query(&sql)
                .expect("query")
                .into_iter()
                .filter_map(|m| match m {
                    ::postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                    }
                    _ => None,
                })
                .collect();
        }
        let conn = rusqlite::Connection::open_with_flags(
            self.data_dir.join("index.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("index opens");
        let mut stmt = conn.prepare(sql).expect("query");
        let width = stmt.column_count();
        stmt.query_map(rusqlite::params_from_iter(params), |r| {
            (0..width)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => None,
                        rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                        rusqlite::types::ValueRef::Real(x) => Some(x.to_string()),
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                    })
                })
                .collect()
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    /// Runs statements against the index beside the server, as someone with access to the
    /// database would: `sqlite` on the SQLite file, `postgres` on a PostgreSQL index.
    pub fn index_execute(&self, sqlite: &str, postgres: &str) {
        if let Some(url) = &self.index_url {
            postgres::connect(url)
                .batch_execute(postgres)
                .expect("statements");
            return;
        }
        let conn = rusqlite::Connection::open(self.data_dir.join("index.sqlite")).expect("index");
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        conn.execute_batch(sqlite).expect("statements");
    }
}

impl Drop for TramyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every regular file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

/// The data set bytes of a Part 10 file.
pub fn dataset_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("readable file");
    tramy::dicom::ReceivedInstance::from_part10(bytes.into())
        .expect("Part 10 file")
        .dataset
        .to_vec()
}

/// The data set of the single instance in a WADO-RS multipart/related answer.
pub fn single_part_dataset(body: &[u8]) -> Vec<u8> {
    let start = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("part head")
        + 4;
    let end = body
        .windows(4)
        .rposition(|w| w == b"\r\n--")
        .expect("closing boundary");
    tramy::dicom::ReceivedInstance::from_part10(body[start..end].to_vec().into())
        .expect("a Part 10 file")
        .dataset
        .to_vec()
}

/// Multi-frame Grayscale Byte Secondary Capture Image Storage.
pub const MF_SC: &str = "1.2.840.10008.5.1.4.1.1.7.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// Who and where a generated multi-frame instance is ([`multiframe_head`]).
pub struct MultiframeIds<'a> {
    pub sop: &'a str,
    pub study: &'a str,
    pub series: &'a str,
    pub patient_id: &'a str,
}

/// Appends one Explicit VR Little Endian element with a 16-bit length (PS3.5 7.1.2), its value
/// padded to an even length (NUL for UI, space otherwise).
pub fn explicit_element(out: &mut Vec<u8>, tag: (u16, u16), vr: &[u8; 2], value: &[u8]) {
    let mut value = value.to_vec();
    if value.len() % 2 == 1 {
        value.push(if vr == b"UI" { 0 } else { b' ' });
    }
    out.extend(tag.0.to_le_bytes());
    out.extend(tag.1.to_le_bytes());
    out.extend(vr);
    out.extend((value.len() as u16).to_le_bytes());
    out.extend(value);
}

/// The data set (Explicit VR Little Endian) of a multi-frame Secondary Capture instance of
/// `frames` 1024 x 1024 8-bit frames, up to and including its Pixel Data header: the caller
/// appends the frames.
pub fn multiframe_head(ids: &MultiframeIds, frames: u64) -> Vec<u8> {
    const FRAME: u64 = 1024 * 1024;
    let mut ds = Vec::new();
    let e = explicit_element;
    e(&mut ds, (0x0008, 0x0016), b"UI", MF_SC.as_bytes());
    e(&mut ds, (0x0008, 0x0018), b"UI", ids.sop.as_bytes());
    e(&mut ds, (0x0008, 0x0060), b"CS", b"OT");
    e(&mut ds, (0x0010, 0x0020), b"LO", ids.patient_id.as_bytes());
    e(&mut ds, (0x0020, 0x000D), b"UI", ids.study.as_bytes());
    e(&mut ds, (0x0020, 0x000E), b"UI", ids.series.as_bytes());
    e(&mut ds, (0x0028, 0x0002), b"US", &1u16.to_le_bytes());
    e(&mut ds, (0x0028, 0x0004), b"CS", b"MONOCHROME2");
    e(
        &mut ds,
        (0x0028, 0x0008),
        b"IS",
        frames.to_string().as_bytes(),
    );
    e(&mut ds, (0x0028, 0x0010), b"US", &1024u16.to_le_bytes());
    e(&mut ds, (0x0028, 0x0011), b"US", &1024u16.to_le_bytes());
    e(&mut ds, (0x0028, 0x0100), b"US", &8u16.to_le_bytes());
    e(&mut ds, (0x0028, 0x0101), b"US", &8u16.to_le_bytes());
    e(&mut ds, (0x0028, 0x0102), b"US", &7u16.to_le_bytes());
    e(&mut ds, (0x0028, 0x0103), b"US", &0u16.to_le_bytes());
    ds.extend([0xE0, 0x7F, 0x10, 0x00]);
    ds.extend(b"OB\0\0");
    ds.extend(((frames * FRAME) as u32).to_le_bytes());
    ds
}

/// Asserts a command succeeded, showing its output otherwise.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A response read by [`TramyServer::http`].
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            std::str::from_utf8(&raw[..line_end]).unwrap_or("0").trim(),
            16,
        )
        .unwrap_or(0);
        raw = &raw[line_end + 2..];
        if size == 0 || raw.len() < size {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
}

impl TramyServer {
    /// The AI findings of `study` (`GET /api/v1/studies/{study}/findings`), as JSON values.
    pub fn findings(&self, study: &str) -> Vec<serde_json::Value> {
        let r = self.http(
            "GET",
            &format!("/api/v1/studies/{study}/findings"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json().as_array().cloned().unwrap_or_default()
    }
    /// A plain HTTP/1.1 request to the server.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).expect("HTTP port open");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n", self.http_port, body.len());
        // The superadmin token unless the test names its own credential (an empty one: none).
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            req.push_str(&self.authorization_line());
        }
        for (k, v) in headers {
            if !(k.eq_ignore_ascii_case("authorization") && v.is_empty()) {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP response head");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body = raw[split + 4..].to_vec();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        HttpResponse {
            status,
            headers,
            body: if chunked { dechunk(&body) } else { body },
        }
    }

    /// `Authorization: Bearer <superadmin token>\r\n`, or nothing before the token is known.
    fn authorization_line(&self) -> String {
        if self.token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {}\r\n", self.token)
        }
    }

    /// The DICOMweb base URL.
    pub fn dicomweb(&self) -> String {
        format!("http://127.0.0.1:{}/dicomweb", self.http_port)
    }
}

/// A `multipart/related; type="application/dicom"` body with `parts`; returns (content type, body).
pub fn stow_body(parts: &[Vec<u8>]) -> (String, Vec<u8>) {
    let boundary = "tramy-test-boundary-7d3c";
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        body,
    )
}

/// The Study, Series and SOP Instance UIDs of the committed CT sample.
pub fn ct_uids() -> (String, String, String) {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::open_file(repo_root().join("dicom-samples/ct_small_explicit_le.dcm"))
        .unwrap();
    let t = |tag| tramy::dicom::attributes::text(&obj, tag);
    (
        t(tags::STUDY_INSTANCE_UID),
        t(tags::SERIES_INSTANCE_UID),
        t(tags::SOP_INSTANCE_UID),
    )
}

/// Wraps a JPEG as a Digital X-Ray (For Presentation) instance at `out` with
/// `tests/clients/wrap_jpeg_as_dx.py`.
pub fn wrap_jpeg_as_dx(jpeg: &Path, out: &Path) {
    assert_success(
        &Command::new(python())
            .arg(repo_root().join("tests/clients/wrap_jpeg_as_dx.py"))
            .arg(jpeg)
            .arg(out)
            .output()
            .expect("python runs"),
        "wrap_jpeg_as_dx.py",
    );
}

/// Path of one of pydicom's test files (shipped in the pydicom wheel).
pub fn pydicom_test_file(name: &str) -> String {
    let out = std::process::Command::new(python())
        .args([
            "-c",
            &format!("import pydicom.data; print(pydicom.data.get_testdata_file('{name}'))"),
        ])
        .output()
        .unwrap();
    assert_success(&out, "pydicom test file lookup");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A P-256 key made for the tests only (`openssl ecparam -name prime256v1 -genkey`), standing in
/// for a facility's Keycloak realm key.
pub const PROVIDER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkPemz4J4O4dcQIp8
MBr8aoHHRsOnb4iZ2uA4JTMsv5yhRANCAARdlF1aTkQrrEFVB/6Lve73G3KfWIiF
53jRvZ3VBmPqyYhaC9D4PwLVGr1D3ibUXfHPsiBfAj6oSsnySrZXNV30
-----END PRIVATE KEY-----";

/// An access token the provider of [`PROVIDER_KEY`] would issue with `claims` (ES256, kid
/// `realm-key-1`).
pub fn provider_token(claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("realm-key-1".into());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(PROVIDER_KEY.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// The provider's JWKS, written to `path` (what `[auth.oidc] jwks_file` reads).
pub fn write_provider_jwks(path: &Path) {
    let key = jsonwebtoken::EncodingKey::from_ec_pem(PROVIDER_KEY.as_bytes()).unwrap();
    let mut jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("realm-key-1".into());
    std::fs::write(path, serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
}

/// A study of `n` instances written to `dir` by `tests/clients/make_study.py` (copies of the CT
/// sample with fresh UIDs; `args` as that script takes them: `--modality CR`, `--pad-kb 64`,
/// `--patient-id`, `--issuer`); its Study Instance UID and files, sorted.
pub fn make_study_with(dir: &Path, n: usize, args: &[&str]) -> (String, Vec<PathBuf>) {
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/make_study.py"))
        .arg(dir)
        .arg(n.to_string())
        .args(args)
        .output()
        .unwrap();
    assert_success(&out, "make_study.py");
    let study = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut files = walk(dir);
    files.sort();
    (study, files)
}

/// The manifest of the test model `tests/clients/make_test_model.py` makes (mean brightness of
/// an MR, research plumbing only).
pub const TEST_MODEL_MANIFEST: &str = r#"
name = "test-brightness"
version = "1"
task = "binary"
file = "model.onnx"

[routing]
modalities = ["MR"]

[input]
name = "image"
layout = "NCHW"
height = 64
width = 64
channels = 1

[preprocess]
window = { source = "image" }
scale = 0.00392156862745098
offset = 0.0

[[labels]]
name = "bright"
output = "logits"
index = 1
threshold = 0.5
urgency = "routine"
activation = "softmax"

[provenance]
source = "generated by tests/clients/make_test_model.py"
licence = "Apache-2.0"
training_data = "none: fixed weights"
intended_use = "testing tramy's triage plumbing"
validation = "none"
statement = "TEST MODEL. Not a medical device; no clinical meaning."
"#;

/// A models folder holding the generated test model under `test/`.
pub fn models_dir(manifest: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models").join("test");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/make_test_model.py"))
        .arg(dir.join("model.onnx"))
        .args(["64", "64"])
        .output()
        .unwrap();
    assert_success(&out, "make_test_model.py");
    std::fs::write(dir.join("model.toml"), manifest).unwrap();
    (tmp, dir)
}

/// pynetdicom's findscu on `server` (Study Root), from `calling_ae` (findscu's own title when
/// `None`), with one `-k` for each of `keys` (`QueryRetrieveLevel=…` among them). Unchecked.
pub fn pynetdicom_find(server: &TramyServer, calling_ae: Option<&str>, keys: &[&str]) -> Output {
    let port = server.port();
    let mut args = vec!["-aec", "TRAMY", "-S"];
    if let Some(ae) = calling_ae {
        args.extend(["-aet", ae]);
    }
    for key in keys {
        args.extend(["-k", key]);
    }
    args.extend(["127.0.0.1", &port]);
    pynetdicom("findscu", &args)
}

/// What a command printed: its standard error, then its standard output.
pub fn output_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
}

/// What pynetdicom's findscu prints for a study-level C-FIND of `study` on `server` (its
/// identifiers, with PatientID, StudyDate, ModalitiesInStudy and the instance count).
pub fn c_find_study(server: &TramyServer, study: &str) -> String {
    let key = format!("StudyInstanceUID={study}");
    let out = pynetdicom_find(
        server,
        None,
        &[
            "QueryRetrieveLevel=STUDY",
            &key,
            "PatientID=",
            "StudyDate=",
            "ModalitiesInStudy=",
            "NumberOfStudyRelatedInstances=",
        ],
    );
    assert_success(&out, "findscu");
    output_text(&out)
}

/// Streams up to `count` copies of the CT sample (fresh UIDs) to `server` with
/// `tests/clients/dimse_client.py`, which writes each acknowledged instance to `ack_file`.
pub fn stream_with_acks(server: &TramyServer, count: usize, ack_file: &Path) -> Child {
    Command::new(python())
        .arg(repo_root().join("tests/clients/dimse_client.py"))
        .args([
            "--port",
            &server.port(),
            "stream",
            "--count",
            &count.to_string(),
            "--template",
        ])
        .arg(repo_root().join("dicom-samples/ct_small_explicit_le.dcm"))
        .arg("--ack-file")
        .arg(ack_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("streamer starts")
}

/// The instances a [`stream_with_acks`] got a success status for: SOP Instance UID and the
/// SHA-256 of the data set sent.
pub fn acknowledged(ack_file: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(ack_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(uid, sha)| (uid.to_string(), sha.to_string()))
        .collect()
}

/// Copies the folder `from` (into `to`, or as `to` when that does not exist) with `cp -a`, as
/// an admin copies a data folder.
pub fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .expect("cp runs");
    assert_success(&out, "cp -a");
}

/// The findings SR of `model` in `study`, fetched over WADO-URI into `dir`, once triage wrote it.
pub fn fetch_report(server: &TramyServer, study: &str, model: &str, dir: &Path) -> PathBuf {
    let (series, sop) = wait_for("the findings SR", || {
        let series = server
            .http(
                "GET",
                &format!("/dicomweb/studies/{study}/series?Modality=SR"),
                &[("Accept", "application/dicom+json")],
                b"",
            )
            .body;
        let series: serde_json::Value = serde_json::from_slice(&series).ok()?;
        series.as_array()?.iter().find_map(|s| {
            let uid = s["0020000E"]["Value"][0].as_str()?;
            let description = s["0008103E"]["Value"][0].as_str()?;
            let r = server.http(
                "GET",
                &format!("/dicomweb/studies/{study}/series/{uid}/instances"),
                &[("Accept", "application/dicom+json")],
                b"",
            );
            let instances: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            let sop = instances[0]["00080018"]["Value"][0].as_str()?;
            description
                .contains(model)
                .then(|| (uid.to_string(), sop.to_string()))
        })
    });
    let r = server.http(
        "GET",
        &format!("/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}&contentType=application%2Fdicom"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let path = dir.join(format!("{model}.dcm"));
    std::fs::write(&path, &r.body).unwrap();
    path
}

/// The adult chest CR RG1 (pydicom-data, fetched by `dicom-samples/fetch-chest-cr.sh`;
/// BodyPartExamined CHEST, ViewPosition PA, born 1940, studied 2004).
pub fn chest_cr() -> PathBuf {
    let fetch = Command::new(repo_root().join("dicom-samples/fetch-chest-cr.sh"))
        .output()
        .expect("fetch-chest-cr.sh runs");
    assert_success(&fetch, "dicom-samples/fetch-chest-cr.sh");
    repo_root().join("dicom-samples/fetched/chest_cr_rg1_explicit_le.dcm")
}

/// The tibia CR RG3 (pydicom-data, fetched by `dicom-samples/fetch-chest-cr.sh`;
/// BodyPartExamined EXTREMITY).
pub fn tibia_cr() -> PathBuf {
    chest_cr();
    repo_root().join("dicom-samples/fetched/tibia_cr_rg3_explicit_le.dcm")
}

/// A copy of `source` in `dir`, named `name`, with study, series and instance UIDs of its own,
/// each `(tag, VR, value)` of `set` put and each tag of `remove` removed.
pub fn edited_copy(
    source: &Path,
    dir: &Path,
    name: &str,
    set: &[(dicom_core::Tag, dicom_core::VR, &str)],
    remove: &[dicom_core::Tag],
) -> PathBuf {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let mut obj = dicom_object::open_file(source).expect("the source instance");
    let uid = |level: &str| tramy::triage::sr::derived_uid(&["edited copy", name, level]);
    for (level, tag) in [
        ("study", tags::STUDY_INSTANCE_UID),
        ("series", tags::SERIES_INSTANCE_UID),
        ("instance", tags::SOP_INSTANCE_UID),
    ] {
        obj.put(DataElement::new(
            tag,
            VR::UI,
            PrimitiveValue::from(uid(level)),
        ));
    }
    for &(tag, vr, value) in set {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
    for tag in remove {
        obj.remove_element(*tag);
    }
    obj.update_meta(|meta| meta.media_storage_sop_instance_uid = uid("instance"));
    let path = dir.join(format!("{name}.dcm"));
    obj.write_to_file(&path).expect("write the edited copy");
    path
}

/// A copy of `source` in `dir` with Patient's Age `age` (e.g. `045Y`) and study, series and
/// instance UIDs of its own, so that copies with different ages are different instances.
pub fn aged_copy(source: &Path, age: &str, dir: &Path) -> PathBuf {
    use dicom_core::VR;
    use dicom_dictionary_std::tags;
    let name = source.file_stem().unwrap().to_string_lossy().to_string();
    let set = [(tags::PATIENT_AGE, VR::AS, age)];
    edited_copy(source, dir, &format!("{name}_{age}"), &set, &[])
}
