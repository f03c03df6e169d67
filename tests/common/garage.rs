//! A single-node Garage (a real S3-compatible object store, `cargo install garage --locked
//! --version 2.5.0`) for the tests: started once per test process on free loopback ports in its
//! own folder, with one bucket and one key, and killed when the test process ends. Each
//! `TramyServer` gets its own prefix in the bucket ([`server_env`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The bucket every test server's prefix lives in.
pub const BUCKET: &str = "tramy";
/// The key the tests use (Garage key ids are `GK` + 24 hex digits, secrets 64 hex digits).
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
/// Its secret.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The region Garage answers for.
pub const REGION: &str = "garage";

/// The running Garage of this test process.
pub struct Garage {
    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub endpoint: String,
    config: PathBuf,
    child: Mutex<Option<Child>>,
}

/// The `garage` binary: on PATH, or where `cargo install` puts it.
pub fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("garage"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let installed = Path::new(&home).join(".cargo/bin/garage");
        installed.is_file().then_some(installed)
    })
}

/// Whether every test server stores its objects on Garage (`TRAMY_TEST_OBJECT_STORE=garage`).
pub fn suite_on_garage() -> bool {
    std::env::var("TRAMY_TEST_OBJECT_STORE").is_ok_and(|v| v == "garage")
}

/// This process's Garage, started on first use; `None` when `garage` is not installed.
pub fn shared() -> Option<&'static Garage> {
    static GARAGE: OnceLock<Option<Garage>> = OnceLock::new();
    GARAGE
        .get_or_init(|| binary().map(|bin| Garage::start(&bin)))
        .as_ref()
}

/// The environment that points a `tramy` process at a fresh prefix of this process's Garage.
/// Panics when `garage` is not installed: callers check [`shared`] first.
pub fn server_env() -> Vec<(String, String)> {
    let garage = shared().expect("garage is installed");
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    garage.env(&format!("s3://{BUCKET}/{prefix}"))
}

impl Garage {
    /// The variables a `tramy` process needs to store objects at `url` on this Garage.
    pub fn env(&self, url: &str) -> Vec<(String, String)> {
        [
            ("TRAMY_OBJECT_STORE_URL", url),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_REGION", REGION),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn start(bin: &Path) -> Garage {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        remove_dead_processes_folders(&base);
        let dir = base.join(format!("garage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("garage folder");
        let s3_port = super::free_port();
        let rpc_port = super::free_port();
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{SECRET}\"\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                d = dir.display()
            ),
        )
        .expect("garage config");
        let child = spawn_tied_to_process(bin, &config, &dir.join("server.log"));
        let garage = Garage {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            config,
            child: Mutex::new(Some(child)),
        };
        garage.set_up(&dir);
        garage
    }

    /// Layout, bucket and key, once the node answers.
    fn set_up(&self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let node = loop {
            let out = self.cli(&["node", "id", "-q"]);
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "garage did not start:\n{}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let node = node.split('@').next().unwrap_or_default().to_string();
        // `node id` reads the node's key from its folder: the RPC listener may not answer yet.
        loop {
            let out = self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", node.as_str()]);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "garage layout assign failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        for args in [
            &["layout", "apply", "--version", "1"][..],
            &["bucket", "create", BUCKET],
            &["key", "import", "--yes", "-n", "tramy-test", KEY_ID, SECRET],
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_ID,
            ],
        ] {
            let out = self.cli(args);
            super::assert_success(&out, &format!("garage {}", args.join(" ")));
        }
    }

    /// Runs the `garage` command line against this node.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary().expect("garage is installed"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("garage runs")
    }

    /// Makes a bucket that `KEY_ID` may not use, for tests of a refused store.
    pub fn bucket_without_access(&self, name: &str) {
        let out = self.cli(&["bucket", "create", name]);
        super::assert_success(&out, "garage bucket create");
    }

    /// Stops Garage for good (for tests of a store that went away; only in a test binary of its own).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("garage child").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The S3 client of the bucket and the prefix `env`'s `TRAMY_OBJECT_STORE_URL` names.
fn client(env: &[(String, String)]) -> (object_store::aws::AmazonS3, object_store::path::Path) {
    let value = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} is set"))
    };
    let url = value("TRAMY_OBJECT_STORE_URL");
    let (bucket, prefix) = url
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .expect("s3://bucket/prefix");
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(value("AWS_ENDPOINT_URL"))
        .with_bucket_name(bucket)
        .with_access_key_id(value("AWS_ACCESS_KEY_ID"))
        .with_secret_access_key(value("AWS_SECRET_ACCESS_KEY"))
        .with_region(value("AWS_REGION"))
        .with_allow_http(true)
        .build()
        .expect("S3 client");
    (store, object_store::path::Path::from(prefix))
}

/// The objects under `env`'s prefix: (key under the prefix, size, ETag).
pub fn list(env: &[(String, String)]) -> Vec<(String, u64, String)> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let (store, prefix) = client(env);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listed: Vec<_> = runtime
        .block_on(store.list(Some(&prefix)).try_collect())
        .expect("list");
    listed
        .into_iter()
        .map(|meta| {
            let key = meta.location.as_ref()[prefix.as_ref().len() + 1..].to_string();
            (key, meta.size, meta.e_tag.unwrap_or_default())
        })
        .collect()
}

/// Copies every object under `env`'s prefix to `dest/KEY` (what was there is removed first), so
/// a test reads what the store holds as it would read a local objects folder.
pub fn mirror(env: &[(String, String)], dest: &Path) {
    use object_store::ObjectStoreExt;
    let _ = std::fs::remove_dir_all(dest);
    let (store, prefix) = client(env);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (key, ..) in list(env) {
        let path = dest.join(&key);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mirror folder");
        let bytes = runtime
            .block_on(async {
                store
                    .get(&object_store::path::Path::from(format!("{prefix}/{key}")))
                    .await?
                    .bytes()
                    .await
            })
            .expect("object read");
        std::fs::write(&path, bytes).expect("mirror written");
    }
}

/// Starts `garage server` from a thread that lives as long as the test process, with
/// `PR_SET_PDEATHSIG` (which fires when the spawning *thread* ends): Garage dies with the test
/// process however it ends, and never with the test thread that happened to start it.
fn spawn_tied_to_process(bin: &Path, config: &Path, log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let (tx, rx) = mpsc::channel();
    let (bin, config, log) = (bin.to_owned(), config.to_owned(), log.to_owned());
    std::thread::spawn(move || {
        let log = std::fs::File::create(&log).expect("garage log");
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("garage log"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        tx.send(cmd.spawn().expect("garage starts"))
            .expect("test thread waits");
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("garage spawned")
}

/// Removes the folders of Garages whose test process has ended (the process cannot remove its
/// own: statics are never dropped).
fn remove_dead_processes_folders(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("garage-"))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
