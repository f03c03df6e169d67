//! The `tramy` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use tramy::config::Config;

/// tramy: DICOM archive with durable ingest, object storage and AI triage.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file; TRAMY_* environment variables override it.
    #[arg(long, global = true, env = "TRAMY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the DIMSE and HTTP servers.
    Serve,
    /// Load a folder of DICOM files through the ingest path.
    Import {
        /// Folder to import (searched recursively).
        dir: PathBuf,
        /// Files ingested at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve => tramy::server::run(config).await,
            Command::Import { dir, parallel } => {
                let archive = tramy::ingest::Archive::open(&config).with_context(|| {
                    format!("cannot open the archive in {}", config.data_dir.display())
                })?;
                let summary = tramy::import::import_dir(&archive, &dir, parallel, true)
                    .await
                    .with_context(|| format!("importing {}", dir.display()))?;
                print!("{}", summary.render());
                if summary.failed.is_empty() {
                    Ok(())
                } else {
                    anyhow::bail!("{} file(s) could not be imported", summary.failed.len())
                }
            }
        }
    })
}
