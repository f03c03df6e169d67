//! A private PostgreSQL server for the tests (Debian `postgresql`), started once per test process
//! when `TRAMY_TEST_INDEX=postgres`: every `TramyServer` then keeps its index in a database of
//! its own there (`TRAMY_INDEX_URL`), so the whole integration suite runs on PostgreSQL.
//!
//! `initdb` and the server run as an unprivileged user (the `postgres` account when the tests run
//! as root, which PostgreSQL refuses), on a free loopback port with its socket in the cluster's
//! folder. The server is told to stop when the thread that started it ends, which is the test
//! process's end (`PR_SET_PDEATHSIG`); folders of earlier processes are removed at the next start.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether the suite runs on PostgreSQL.
pub fn enabled() -> bool {
    std::env::var("TRAMY_TEST_INDEX").is_ok_and(|v| v == "postgres")
}

/// The running test cluster.
struct Cluster {
    port: u16,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The URL of a new, empty database for one tramy server.
pub fn new_database() -> String {
    let cluster = CLUSTER.get_or_init(start_cluster);
    let name = format!("tramy_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
    let mut admin = connect(&url(cluster.port, "postgres"));
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("test database created");
    url(cluster.port, &name)
}

fn url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}")
}

/// A client of the database at `url`.
pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("PostgreSQL answers")
}

/// Whether PostgreSQL's server programs are installed (Debian `postgresql`).
pub fn installed() -> bool {
    find_bin_dir().is_some()
}

/// The folder of PostgreSQL's programs: Debian keeps them out of PATH, per major version.
fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions.pop()
}

/// [`find_bin_dir`], or a panic saying what to install.
fn bin_dir() -> PathBuf {
    find_bin_dir().unwrap_or_else(|| {
        panic!(
            "TRAMY_TEST_INDEX=postgres but PostgreSQL is not installed: `apt-get install \
             postgresql` (.ci/run does)"
        )
    })
}

/// The uid and gid to run PostgreSQL as: ours, or the `postgres` account's when we are root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let out = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

fn as_server_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

/// Removes the folders of test processes that ended over ten minutes ago (a failed test's
/// server log stays a while to be read).
fn remove_stale(root: &Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().parse::<i32>().ok();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(600));
        // SAFETY: kill with signal 0 only checks that the process exists.
        if old && pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } != 0) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start_cluster() -> Cluster {
    let bin = bin_dir();
    let user = server_user();
    let root = PathBuf::from("/tmp/tramy-test-pg");
    std::fs::create_dir_all(&root).expect("cluster root");
    remove_stale(&root);
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cluster folder");
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("cluster folder owned");
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&root, mode).expect("cluster root traversable");
    }
    let data = dir.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_server_user(&mut initdb, user);
    let out = initdb.output().expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = super::free_port();
    let log = std::fs::File::create(dir.join("server.log")).expect("server log");
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(dir.join("server.log"), Some(uid), Some(gid)).expect("log owned");
    }
    let (bin, data, sockets) = (bin.clone(), data.clone(), dir.clone());
    let (started, ready) = std::sync::mpsc::channel();
    // The server stops when this thread ends (PR_SET_PDEATHSIG), so it lives as long as the
    // test process: it starts the server, then waits forever.
    std::thread::spawn(move || {
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&sockets)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // Test data is thrown away: durability costs time and nothing else here.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=400",
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        as_server_user(&mut cmd, user);
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        // Never waited for: the server lives as long as the test process, and the kernel
        // stops it (its parent-death signal) when the process ends.
        #[allow(clippy::zombie_processes)]
        let child = cmd.spawn().expect("postgres starts");
        let _ = started.send(child.id());
        loop {
            std::thread::park();
        }
    });
    ready.recv().expect("postgres spawned");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if postgres::Client::connect(&url(port, "postgres"), postgres::NoTls).is_ok() {
            return Cluster { port };
        }
        if Instant::now() > deadline {
            panic!(
                "PostgreSQL did not start; its log:\n{}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// For a test of what only the SQLite file has (its WAL, a file copy as a backup): on a
/// PostgreSQL run it says so and is skipped; the caller returns when this is true.
pub fn skipped_as_sqlite_only(why: &str) -> bool {
    if enabled() {
        eprintln!("SKIPPED on PostgreSQL: {why}");
    }
    enabled()
}

/// A PostgreSQL client program (`pg_dump`, `pg_restore`) of the installed version.
pub fn tool(name: &str) -> PathBuf {
    bin_dir().join(name)
}
