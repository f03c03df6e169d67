//! Inference on separate workers (issue #11 item 4): `tramy serve --no-triage` queues the triage
//! jobs of what arrives and runs none; `tramy worker` processes run them against the same index
//! and objects; the jobs a killed worker had claimed are finished by another once their lease has
//! run out. On the suite's index engine: the SQLite file the processes share, or PostgreSQL with
//! `TRAMY_TEST_INDEX=postgres`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A running `tramy worker`, killed when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    /// Starts `tramy worker` on `server`'s index and objects with the models in `models`, and
    /// waits until it says it is ready.
    /// A worker is another machine: a data folder of its own, `server`'s index and objects by
    /// URL.
    fn start(server: &TramyServer, models: &Path, log: PathBuf, env: &[(&str, &str)]) -> Worker {
        let file = std::fs::File::create(&log).expect("worker log");
        let mut shared = server.process_env();
        let has = |shared: &[(String, String)], key: &str| shared.iter().any(|(k, _)| k == key);
        if !has(&shared, "TRAMY_INDEX_URL") {
            let index = server.data_dir.join("index.sqlite");
            shared.push((
                "TRAMY_INDEX_URL".into(),
                format!("sqlite://{}", index.display()),
            ));
        }
        if !has(&shared, "TRAMY_OBJECT_STORE_URL") {
            let objects = server.data_dir.join("objects");
            shared.push((
                "TRAMY_OBJECT_STORE_URL".into(),
                format!("file://{}", objects.display()),
            ));
        }
        let child = Command::new(env!("CARGO_BIN_EXE_tramy"))
            .arg("worker")
            .env("TRAMY_DATA_DIR", log.with_extension("data"))
            .envs(shared)
            .env("TRAMY_TRIAGE__MODELS_DIR", models)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env_remove("TRAMY_CONFIG")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("tramy worker starts");
        let mut worker = Worker { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !worker.log_text().contains("tramy worker is ready") {
            if let Ok(Some(status)) = worker.child.try_wait() {
                panic!("tramy worker exited ({status}):\n{}", worker.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "worker not ready:\n{}",
                worker.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        worker
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the worker gets no chance to settle what it claimed.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The triage jobs in `state`, as the API lists them.
fn jobs(server: &TramyServer, state: &str) -> Vec<serde_json::Value> {
    let path = format!("/api/v1/triage/jobs?state={state}");
    server
        .http("GET", &path, &[], b"")
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A `tramy serve --no-triage` routing arrivals to the test model (MR) in `models`.
fn serve_without_triage(models: &Path) -> TramyServer {
    TramyServer::start_with(
        &format!(
            "[triage]\nmodels_dir = {:?}\n",
            models.display().to_string()
        ),
        &["--no-triage"],
        common::postgres::enabled().then(common::postgres::new_database),
    )
}

#[test]
fn serve_without_triage_queues_jobs_that_a_worker_runs() {
    let (tmp, model) = models_dir(TEST_MODEL_MANIFEST);
    let models = model.parent().unwrap();
    let server = serve_without_triage(models);
    assert!(
        server.log().contains("this node runs none"),
        "{}",
        server.log()
    );
    let mr = repo_root().join("dicom-samples/mr_small_explicit_le.dcm");
    server.store_files(&[&mr], "storescu of an MR");

    // Queued with the instance's rows, and not run here.
    let queued = wait_for("the queued job", || {
        let q = jobs(&server, "queued");
        (!q.is_empty()).then_some(q)
    });
    assert_eq!(queued.len(), 1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        jobs(&server, "queued").len(),
        1,
        "serve --no-triage ran a job"
    );

    let worker = Worker::start(&server, models, tmp.path().join("worker.log"), &[]);
    let done = wait_for("the job run by the worker", || {
        let d = jobs(&server, "done");
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(done[0]["attempts"], 1, "{done:?}");
    assert!(jobs(&server, "queued").is_empty());
    let worklist = server.http("GET", "/api/v1/worklist", &[], b"").json();
    assert_eq!(worklist.as_array().map(Vec::len), Some(1), "{worklist}");
    drop(worker);
}

#[test]
fn a_killed_workers_claimed_jobs_are_finished_by_another_worker() {
    let (tmp, model) = models_dir(TEST_MODEL_MANIFEST);
    let models = model.parent().unwrap();
    let server = serve_without_triage(models);
    let (_, files) = make_study_with(&tmp.path().join("study"), 3, &["--modality", "MR"]);
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    server.store_files(&files, "storescu of three MR instances");
    wait_for("three queued jobs", || {
        (jobs(&server, "queued").len() == 3).then_some(())
    });

    // The first worker claims the jobs, then waits a minute for more arrivals to fill its
    // batch: it is killed holding them, their lease (4 s) still running.
    let mut first = Worker::start(
        &server,
        models,
        tmp.path().join("first.log"),
        &[
            ("TRAMY_TRIAGE__LEASE_SECONDS", "4"),
            ("TRAMY_TRIAGE__MAX_WAIT_MS", "60000"),
            ("TRAMY_TRIAGE__MAX_BATCH", "64"),
        ],
    );
    wait_for("the first worker's claims", || {
        (jobs(&server, "running").len() == 3).then_some(())
    });
    first.kill();
    assert!(
        jobs(&server, "done").is_empty(),
        "nothing was settled before the kill"
    );

    let second = Worker::start(&server, models, tmp.path().join("second.log"), &[]);
    let done = wait_for("the jobs finished by the second worker", || {
        let d = jobs(&server, "done");
        (d.len() == 3).then_some(d)
    });
    for job in &done {
        assert_eq!(job["attempts"], 2, "claimed twice, run once: {job}");
    }
    drop(second);
}
