//! `tramy serve`: opens the archive, indexes objects without index rows, then runs the DIMSE and HTTP
//! listeners until Ctrl-C or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::dimse::DimseService;
use crate::ingest::Archive;

/// Runs the server with `config` until a shutdown signal.
pub async fn run(config: Config, run_triage: bool) -> anyhow::Result<()> {
    let config = Arc::new(config);
    crate::dicom::video::configure(config.video.settings());
    // Before anything else: a TLS file that cannot be used is a configuration error.
    let (http_tls, dimse_tls) = tls_acceptors(&config)?;
    // Metrics from the first association on.
    crate::web::observability::prometheus();
    let archive = Archive::open(&config)
        .with_context(|| format!("cannot open the archive in {}", config.data_dir.display()))?;
    archive
        .check_object_store()
        .await
        .context("checking the object store")?;
    let archive = forwarding_rules(&config, archive).await?;
    let (archive, triage_worker, models) = start_triage(&config, archive, run_triage)?;
    reconcile(&archive, &config).await?;
    first_start(&archive, &config).await?;
    facility_keys(&archive, &config).await?;
    let authenticator =
        crate::auth::authenticator::Authenticator::new(archive.index().clone(), &config.auth)
            .context("setting up authentication")?;

    let dimse_listener = TcpListener::bind(config.dimse.addr)
        .await
        .with_context(|| {
            format!(
            "cannot listen for DICOM on {} (set TRAMY_DIMSE_ADDR or [dimse] addr to a free port)",
            config.dimse.addr
        )
        })?;
    let fd_limit = raise_fd_limit();
    let http_listener = TcpListener::bind(config.http.addr).await.with_context(|| {
        format!(
            "cannot listen for HTTP on {} (set TRAMY_HTTP_ADDR or [http] addr to a free port)",
            config.http.addr
        )
    })?;
    let http_addr = http_listener.local_addr()?;
    tracing::info!(
        dimse = %dimse_listener.local_addr()?,
        dimse_tls = dimse_tls.is_some(),
        http = %match http_tls {
            Some(_) => format!("https://{http_addr}"),
            None => http_addr.to_string(),
        },
        ae_title = %config.dimse.ae_title,
        data_dir = %config.data_dir.display(),
        objects = %archive.object_store_location(),
        "tramy is ready"
    );

    let service = Arc::new(DimseService {
        archive: archive.clone(),
        config: config.clone(),
        authenticator: authenticator.clone(),
    });
    if config.integrity.scrub_interval_hours > 0.0 {
        tokio::spawn(crate::integrity::scrub::every(
            archive.clone(),
            std::time::Duration::from_secs_f64(config.integrity.scrub_interval_hours * 3600.0),
            config.integrity.scrub_rate_mb_per_s,
        ));
    }
    let peers = crate::forward::registry::PeerRegistry::load(
        archive.clone(),
        &config.peers,
        config.forwarding.sender_settings(&config.dimse.ae_title),
    )
    .await?;
    peers.start_all();
    let http_peers = peers.clone();
    let http_config = config.clone();
    let dimse = tokio::spawn(crate::dimse::serve(dimse_listener, service, dimse_tls));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut http = tokio::spawn(async move {
        let mut limits = crate::web::listener::Limits::from_config(&http_config.http);
        // Leave half the descriptors to DIMSE, objects and the index.
        if let Some(fds) = fd_limit {
            let fit = usize::try_from(fds / 2).unwrap_or(usize::MAX).max(1);
            if limits.max_connections > fit {
                tracing::info!(
                    configured = limits.max_connections,
                    used = fit,
                    "http.max_connections lowered to half the open file limit"
                );
                limits.max_connections = fit;
            }
        }
        let app = crate::web::router(crate::web::AppState::new(
            archive,
            http_config,
            models,
            authenticator,
            http_peers,
        ));
        crate::web::listener::serve(http_listener, app, limits, http_tls, async {
            let _ = http_stopped.await;
        })
        .await
    });

    if let Some(worker) = triage_worker {
        tokio::spawn(worker.run());
    }
    tokio::select! {
        r = dimse => { r.context("DIMSE listener task")?.context("DIMSE listener")?; }
        r = &mut http => { r.context("HTTP listener task")?.context("HTTP listener")?; }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            // In-flight HTTP requests finish (bounded by the listener's grace period).
            let _ = stop_http.send(());
            peers.stop_all();
            if let Ok(r) = http.await { r.context("HTTP listener")?; }
        }
    }
    Ok(())
}

/// The TLS acceptors of the HTTP and DIMSE listeners, where configured; a missing or unusable
/// file stops start-up naming its key.
fn tls_acceptors(
    config: &Config,
) -> anyhow::Result<(
    Option<crate::tls::TlsAcceptor>,
    Option<crate::tls::TlsAcceptor>,
)> {
    let http = crate::tls::optional_acceptor(
        "http",
        config.http.tls_certificate.as_deref(),
        config.http.tls_private_key.as_deref(),
        None,
        crate::web::listener::ALPN,
    )?;
    let dimse = crate::tls::optional_acceptor(
        "dimse",
        config.dimse.tls_certificate.as_deref(),
        config.dimse.tls_private_key.as_deref(),
        config.dimse.tls_client_ca.as_deref(),
        &[],
    )?;
    Ok((http, dimse))
}

/// Indexes objects that have no index rows (never deletes them) before any listener accepts work.
async fn reconcile(archive: &Archive, config: &Config) -> anyhow::Result<()> {
    use crate::config::ReconcileAtStart;
    let full = match config.integrity.reconcile_at_start {
        ReconcileAtStart::Full => true,
        ReconcileAtStart::Journal => false,
        ReconcileAtStart::Auto => archive.index().engine() == crate::store::db::Engine::Sqlite,
    };
    let summary = if full {
        crate::integrity::reindex::reconcile(archive).await
    } else {
        crate::integrity::reindex::reconcile_journal(archive).await
    }
    .context("reconciling the object store with the index")?;
    if summary.indexed > 0 {
        tracing::warn!(
            indexed = summary.indexed,
            objects = summary.objects,
            "indexed objects that had no index rows (an interrupted commit, or an index restored from an older copy)"
        );
    }
    for key in &summary.superseded {
        tracing::warn!(%key, "object left unindexed: its SOP Instance UID is indexed with another object");
    }
    for (key, reason) in &summary.unreadable {
        tracing::warn!(%key, %reason, "object left unindexed: not a readable instance");
    }
    if summary.interrupted_writes_removed > 0 {
        tracing::info!(
            removed = summary.interrupted_writes_removed,
            "removed staging files of writes interrupted before they were acknowledged"
        );
    }
    Ok(())
}

/// On an empty registry, makes facility LOCAL and a superadmin token in `data_dir/admin-token`,
/// and says where (never the token itself).
async fn first_start(archive: &Archive, config: &Config) -> anyhow::Result<()> {
    use crate::registry::FirstStart;
    let done = crate::registry::first_start(archive.index(), &config.data_dir)
        .await
        .context("setting up the registry on first start")?;
    match done {
        FirstStart::AlreadySetUp => {}
        FirstStart::Created(path) => tracing::info!(
            facility = crate::registry::LOCAL_FACILITY,
            file = %path.display(),
            "first start: made facility LOCAL and a superadmin API token, written to the file (mode 0600)"
        ),
        FirstStart::TokenFileExists(path) => tracing::warn!(
            facility = crate::registry::LOCAL_FACILITY,
            file = %path.display(),
            "first start: made facility LOCAL; the file already existed and was left alone, and the superadmin token in it is registered again"
        ),
    }
    Ok(())
}

/// Makes the signing key of every facility that has none (facilities registered before keys
/// existed); a key file that cannot be read stops start-up with its name.
async fn facility_keys(archive: &Archive, config: &Config) -> anyhow::Result<()> {
    let facilities = archive
        .index()
        .facilities(&crate::access::Principal::system())
        .await?;
    for facility in facilities {
        let path = crate::facility_keys::key_path(&config.data_dir, &facility.code);
        let existed = path.exists();
        crate::facility_keys::ensure(&config.data_dir, &facility.code)?;
        if !existed {
            tracing::info!(facility = %facility.code, file = %path.display(), "made the facility's signing key");
        }
    }
    Ok(())
}

/// Loads the models of `[triage] models_dir` and routes arrivals to them. A manifest or model
/// that does not load is a start-up error naming its file: a site that installed a model expects
/// it to run.
type Triage = (
    Archive,
    Option<crate::triage::queue::TriageWorker>,
    Vec<Arc<crate::triage::LoadedModel>>,
);

fn start_triage(config: &Config, archive: Archive, run: bool) -> anyhow::Result<Triage> {
    use crate::triage::{manifest, LoadedModel};
    if !config.triage.enabled {
        return Ok((archive, None, Vec::new()));
    }
    if !run {
        return Ok((route_only(config, archive)?, None, Vec::new()));
    }
    let mut loaded = Vec::new();
    for m in manifest::discover(&config.triage.models_dir) {
        if let Err(e @ manifest::ManifestError::NotInstalled { .. }) = &m {
            tracing::warn!("triage model skipped: {e}");
            continue;
        }
        let m = m.context("a triage model manifest is invalid (fix it, remove it, or set [triage] enabled = false)")?;
        let name = m.name.clone();
        let model = LoadedModel::load(m, config.triage.device)
            .with_context(|| format!("triage model {name} does not load"))?;
        tracing::info!(model = %name, version = %model.manifest.version, "triage model loaded");
        loaded.push(model);
    }
    let loaded = without_ungated(loaded);
    if loaded.is_empty() {
        return Ok((archive, None, Vec::new()));
    }
    let loaded: Vec<Arc<LoadedModel>> = loaded.into_iter().map(Arc::new).collect();
    let archive = archive.with_triage(loaded.iter().map(|m| m.manifest.clone()).collect());
    let worker = crate::triage::queue::TriageWorker::new(archive.clone(), &loaded, &config.triage);
    Ok((archive, Some(worker), loaded))
}

/// The models that can run: a model made for an anatomy runs only behind that anatomy's gate,
/// and a model cropped to the endoscope's field of view only with the field-of-view model, so
/// without them (not installed yet) it is left out with a warning, like a model whose own file
/// is not installed.
fn without_ungated(loaded: Vec<crate::triage::LoadedModel>) -> Vec<crate::triage::LoadedModel> {
    let gated: Vec<_> = loaded
        .iter()
        .filter_map(|m| m.manifest.gate.as_ref().map(|g| g.anatomy))
        .collect();
    let field_of_view = loaded
        .iter()
        .any(|m| m.manifest.task == crate::triage::manifest::Task::FieldOfView);
    loaded
        .into_iter()
        .filter(|m| {
            let needs_fov = m.manifest.preprocess.field_of_view && !field_of_view;
            if needs_fov {
                tracing::warn!(
                    model = %m.manifest.name,
                    "triage model skipped: it is cropped to the endoscope's field of view, and \
                     the field-of-view model is not installed (see `tramy models list`)"
                );
            }
            !needs_fov
        })
        .filter(|m| match m.manifest.routing.anatomy {
            Some(anatomy) if !gated.contains(&anatomy) => {
                tracing::warn!(
                    model = %m.manifest.name,
                    "triage model skipped: it is made for {anatomy} images and runs only behind \
                     the {anatomy} anatomy gate, which is not installed (see `tramy models list`)"
                );
                false
            }
            _ => true,
        })
        .collect()
}

/// Routes arrivals to the models of `[triage] models_dir` without loading them: their jobs are
/// queued for the workers (`tramy worker`) that run them, whether or not the model files are on
/// this node.
fn route_only(config: &Config, archive: Archive) -> anyhow::Result<Archive> {
    let mut manifests = Vec::new();
    for m in crate::triage::manifest::discover_routing(&config.triage.models_dir) {
        let m = m.context("a triage model manifest is invalid (fix it, remove it, or set [triage] enabled = false)")?;
        tracing::info!(model = %m.name, "triage jobs queued for workers (this node runs none)");
        manifests.push(m);
    }
    Ok(archive.with_triage(manifests))
}

/// `tramy worker`: runs the triage queue, and nothing else, until stopped: any number of them,
/// on any machines (CPU or GPU) that reach the same index and object store.
pub async fn run_worker(config: Config) -> anyhow::Result<()> {
    crate::dicom::video::configure(config.video.settings());
    let archive = Archive::open(&config)
        .with_context(|| format!("cannot open the archive in {}", config.data_dir.display()))?;
    let (archive, worker, _) = start_triage(&config, archive, true)?;
    let Some(worker) = worker else {
        anyhow::bail!(
            "no triage model is installed in {} (or [triage] enabled = false): a worker has \
             nothing to run; see `tramy models list`",
            config.triage.models_dir.display()
        );
    };
    tracing::info!(
        node = archive.index().node(),
        device = ?config.triage.device,
        "tramy worker is ready"
    );
    tokio::select! {
        () = worker.run() => Ok(()),
        () = shutdown_signal() => {
            // Claimed jobs not settled go back to the queue when their leases run out.
            tracing::info!("worker shutting down");
            Ok(())
        }
    }
}

/// The forwarding rules, each checked to name a known peer (configured or added through the API).
async fn forwarding_rules(config: &Config, archive: Archive) -> anyhow::Result<Archive> {
    let mut names: Vec<String> = config.peers.iter().map(|p| p.name.clone()).collect();
    names.extend(
        archive
            .index()
            .api_peers(&crate::access::Principal::system())
            .await?
            .into_iter()
            .map(|p| p.name),
    );
    let rules = crate::forward::rules::ForwardRules::new(config.forward.clone(), &names)
        .map_err(anyhow::Error::msg)?;
    Ok(archive.with_forwarding(rules))
}

/// Raises the soft file-descriptor limit to the hard limit: each connection and each open
/// object takes a descriptor, and common soft limits (1024) run out under load long before
/// memory or CPU do.
fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, "open file limit");
            Some(limit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open file limit");
            None
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
