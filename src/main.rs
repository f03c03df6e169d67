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
    /// Run the DIMSE and HTTP servers (and, unless --no-triage, the triage queue).
    Serve {
        /// Run no inference on this node: arrivals are queued for `tramy worker` processes.
        #[arg(long)]
        no_triage: bool,
    },
    /// Run only the triage queue (CPU or CUDA, per [triage] device) against the configured
    /// index and object store; as many as wanted, on any machines.
    Worker,
    /// Inspect and try the AI triage models in a models folder.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Measure models on a labelled data set: AUC with 95% CI, sensitivity and specificity at each
    /// label's threshold, confusion matrix, Brier score and calibration, the same by facility,
    /// modality, sex and age group, latency and throughput; with several models, DeLong's test of
    /// their AUCs; ROC curves and reliability diagrams as PNG.
    Eval {
        /// A model folder (holding model.toml); repeat to compare models on the same data.
        #[arg(long = "model", required = true)]
        models: Vec<PathBuf>,
        /// A folder with one sub-folder per class, or a CSV `path,label,…` of 0/1 values (optional
        /// columns facility, modality, sex, age, age_group); with `--labels-from feedback`, a
        /// research export's labels.csv.
        #[arg(long)]
        data: PathBuf,
        /// Where the truth comes from: `data` (folders or 0/1 columns) or `feedback` (doctors'
        /// agree/disagree on findings: agreed = the model's flag, disagreed = its opposite, none =
        /// excluded and counted).
        #[arg(long, value_enum, default_value = "data")]
        labels_from: LabelsFromArg,
        /// Breakdown strata with fewer positives or negatives than this say "n too small".
        #[arg(long, default_value_t = 5)]
        min_stratum: usize,
        /// cpu or cuda (default: `[triage] device` of the configuration).
        #[arg(long)]
        device: Option<String>,
        /// Write the full results (ROC points included) here as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write one ROC PNG and one reliability diagram PNG per label into this folder.
        #[arg(long)]
        roc_dir: Option<PathBuf>,
    },
    /// Load a folder of DICOM files through the ingest path.
    Import {
        /// Folder to import (searched recursively).
        dir: PathBuf,
        /// Files ingested at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
    /// Print the DICOM Conformance Statement (PS3.2), written from the code's own tables, as
    /// Markdown (docs/conformance-statement.md is a copy).
    Conformance,
    /// Index every object in the object store that has no index rows (disaster recovery: a
    /// lost or older index). Idempotent; objects are never changed or deleted.
    Reindex,
    /// Read every stored object, check its SHA-256 and identity against the index, and report
    /// damaged and missing instances (exit status 1 when there are any). Safe beside a running
    /// server.
    Verify {
        /// Only instances received at or after this date or time (e.g. 2026-11-01).
        #[arg(long)]
        since: Option<String>,
        /// Read at most this many megabytes per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register and list facilities (tenants). Works beside a running server.
    Facility {
        #[command(subcommand)]
        command: FacilityCommand,
    },
    /// Register and list the AE titles that act for a facility over DIMSE.
    Ae {
        #[command(subcommand)]
        command: AeCommand,
    },
    /// Make, list and revoke tramy API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit trail. Works beside a running server.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// De-identified research sets (PS3.15 Annex E). Works beside a running server.
    Research {
        #[command(subcommand)]
        command: ResearchCommand,
    },
    /// A facility's delivery counts per UTC day and destination (what
    /// `GET /api/v1/facilities/{code}/stats` answers). Works beside a running server.
    Stats {
        /// The facility (default: every registered facility).
        #[arg(long)]
        facility: Option<String>,
        /// The first day, YYYY-MM-DD (default: 29 days before --to).
        #[arg(long)]
        from: Option<String>,
        /// The last day, included (default: today, UTC).
        #[arg(long)]
        to: Option<String>,
        /// Print the JSON the API answers (with no --facility, a list of them).
        #[arg(long)]
        json: bool,
    },
    /// Ask a peer which of the instances it accepted or confirmed it still holds, re-queue those
    /// it lacks (the running server sends them again) and print the difference.
    Reconcile {
        /// The peer's name (from [[peers]] in --config, or added through the API).
        #[arg(long)]
        peer: String,
        /// Only what was sent on or after this day (YYYY-MM-DD) or time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Report only; re-queue nothing.
        #[arg(long)]
        dry_run: bool,
        /// Most missing SOP Instance UIDs to list.
        #[arg(long, default_value_t = 20)]
        list: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ResearchCommand {
    /// Write the de-identified set of a research grant's studies (what
    /// `POST /api/v1/research/exports` streams as a ZIP) as files under --out.
    Export {
        /// The research grant whose studies to export (its id, `GET /api/v1/grants`).
        #[arg(long)]
        grant: String,
        /// The folder to write (made when missing; must be empty).
        #[arg(long)]
        out: PathBuf,
        /// Only studies with this modality.
        #[arg(long)]
        modality: Option<String>,
        /// Only studies on or after this date (YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Only studies on or before this date (YYYY-MM-DD).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain from the first event: prints how many events verified, or the first
    /// event that was changed or removed (exit status 1).
    Verify,
}

#[derive(Subcommand)]
enum FacilityCommand {
    /// Register a facility.
    Add {
        /// The national facility code (letters, digits, '-', '_', '.'; at most 32).
        code: String,
        /// Its name.
        #[arg(long)]
        name: String,
        /// commune_station, hospital or hub.
        #[arg(long, default_value = "hospital")]
        kind: String,
        /// The registered facility it refers patients to.
        #[arg(long)]
        parent: Option<String>,
    },
    /// List the facilities.
    List,
}

#[derive(Subcommand)]
enum AeCommand {
    /// Register an AE title for a facility.
    Add {
        /// The AE title (at most 16 characters, PS3.5 VR AE).
        ae_title: String,
        /// The registered facility it acts for.
        #[arg(long)]
        facility: String,
        /// The host it calls from (IP address or DNS name).
        #[arg(long)]
        host: Option<String>,
        /// The port it listens on at --host (where tramy sends a Storage Commitment result
        /// after the requesting association has ended).
        #[arg(long, requires = "host")]
        port: Option<u16>,
    },
    /// List the AE titles.
    List,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token and print it, alone, on standard output: it is shown only this once.
    Create {
        /// The facility it acts for (every role but superadmin).
        #[arg(long)]
        facility: Option<String>,
        /// admin, clinician, modality, researcher, node or superadmin.
        #[arg(long)]
        role: String,
        /// A note saying whose or what it is.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, e.g. 30d, 12h, 90m (default: until revoked).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List the tokens (never the tokens themselves).
    List,
    /// Revoke a token by its id (from `tramy token list`).
    Revoke {
        /// The token's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// List the models and whether their manifests are valid.
    List {
        /// Folder with one sub-folder per model (default: `[triage] models_dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Validate every manifest and run each model once on a blank input.
    Check {
        /// Folder with one sub-folder per model (default: `[triage] models_dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// cpu or cuda (default: `[triage] device`).
        #[arg(long)]
        device: Option<String>,
    },
    /// Score one DICOM file with one model and print the scores as JSON.
    Run {
        /// The model's folder (holding model.toml).
        model: PathBuf,
        /// A DICOM Part 10 file.
        file: PathBuf,
        /// cpu or cuda (default: `[triage] device`).
        #[arg(long)]
        device: Option<String>,
        /// Also write the preprocessed input tensor here (raw little-endian f32), for parity checks.
        #[arg(long)]
        dump_input: Option<PathBuf>,
        /// For an anatomy gate: also write its mask here as a PNG (255 = the anatomy), at the
        /// gate's input size.
        #[arg(long)]
        mask: Option<PathBuf>,
    },
}

/// The device named on the command line, else the configuration's.
fn device_or(name: Option<&str>, config: &Config) -> anyhow::Result<tramy::triage::Device> {
    name.map_or(Ok(config.triage.device), device)
}

fn device(name: &str) -> anyhow::Result<tramy::triage::Device> {
    match name {
        "cpu" => Ok(tramy::triage::Device::Cpu),
        "cuda" => Ok(tramy::triage::Device::Cuda),
        other => anyhow::bail!("unknown device {other:?}: use cpu or cuda"),
    }
}

fn models(command: ModelsCommand, config: &Config) -> anyhow::Result<()> {
    use tramy::triage::{manifest, LoadedModel, ModelManifest};
    match command {
        ModelsCommand::List { dir } => {
            let dir = dir.unwrap_or_else(|| config.triage.models_dir.clone());
            let found = manifest::discover(&dir);
            if found.is_empty() {
                println!(
                    "no models in {} (each model is a folder with model.toml)",
                    dir.display()
                );
            }
            for m in found {
                match m {
                    Ok(m) => println!(
                        "{:<28} {:<10} {:?}  {}x{}x{} {:?}  labels: {}  — {}",
                        m.name,
                        m.version,
                        m.task,
                        m.input.width,
                        m.input.height,
                        m.input.channels,
                        m.input.layout,
                        match &m.gate {
                            Some(gate) => format!("none (the {} anatomy gate)", gate.anatomy),
                            None => m
                                .labels
                                .iter()
                                .map(|l| l.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        },
                        m.provenance.statement
                    ),
                    Err(e @ manifest::ManifestError::NotInstalled { .. }) => {
                        println!("NOT INSTALLED {e}")
                    }
                    Err(e) => println!("INVALID {e}"),
                }
            }
            Ok(())
        }
        ModelsCommand::Check { dir, device: d } => {
            let dir = dir.unwrap_or_else(|| config.triage.models_dir.clone());
            let device = device_or(d.as_deref(), config)?;
            let mut failures = 0;
            for m in manifest::discover(&dir) {
                let result = m
                    .map_err(anyhow::Error::from)
                    .and_then(|m| LoadedModel::load(m, device).map_err(anyhow::Error::from))
                    .and_then(|model| Ok((model.manifest.name.clone(), model.smoke_test()?)));
                match result {
                    Ok((name, scores)) => println!(
                        "ok      {name}: blank input scores {}",
                        serde_json::to_string(&scores)?
                    ),
                    Err(e) => {
                        failures += 1;
                        println!("FAILED  {e}");
                    }
                }
            }
            if failures > 0 {
                anyhow::bail!("{failures} model(s) failed the check");
            }
            Ok(())
        }
        ModelsCommand::Run {
            model,
            file,
            device: d,
            dump_input,
            mask,
        } => {
            let manifest = ModelManifest::load(&model.join("model.toml"))?;
            let loaded = LoadedModel::load(manifest, device_or(d.as_deref(), config)?)?;
            if loaded.manifest.task == manifest::Task::FieldOfView {
                return run_field_of_view(&loaded, &file);
            }
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (input, frames) = tramy::triage::preprocess::from_dicom(&bytes, &loaded.manifest)
                .with_context(|| format!("preparing {}", file.display()))?;
            if let Some(path) = dump_input {
                let raw: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
                std::fs::write(&path, raw)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if loaded.manifest.is_gate() {
                return run_gate(&loaded, &input, mask.as_deref());
            }
            let scores = loaded.infer(&input)?;
            println!(
                "{}",
                serde_json::json!({
                    "model": loaded.manifest.name,
                    "version": loaded.manifest.version,
                    "statement": loaded.manifest.provenance.statement,
                    "input_shape": input.shape(),
                    "frames": frames,
                    "scores": scores,
                })
            );
            Ok(())
        }
    }
}

/// `tramy models run` for the field-of-view model: the circle on an image (PNG, JPEG) or on
/// the first frame of a DICOM file.
fn run_field_of_view(
    model: &tramy::triage::LoadedModel,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    let frame = if ["png", "jpg", "jpeg"].contains(&extension.to_ascii_lowercase().as_str()) {
        image::open(file).with_context(|| format!("reading {}", file.display()))?
    } else {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let (mut images, _) = tramy::triage::preprocess::images_from_dicom(&bytes, &model.manifest)
            .with_context(|| format!("decoding {}", file.display()))?;
        images.truncate(1);
        images.pop().context("the file has no frame")?
    };
    let rgb = frame.to_rgb8();
    let found = tramy::triage::field_of_view::estimate(model, std::slice::from_ref(&rgb))?;
    println!(
        "{}",
        serde_json::json!({
            "model": model.manifest.name,
            "version": model.manifest.version,
            "width": rgb.width(),
            "height": rgb.height(),
            "field_of_view": found.first().copied().flatten(),
            "cropped": found.first().copied().flatten()
                .is_some_and(|f| f.confidence >= tramy::triage::field_of_view::CIRCLE_THRESHOLD),
        })
    );
    Ok(())
}

/// `tramy models run` for an anatomy gate: what it finds on the first frame, and the verdict.
fn run_gate(
    gate: &tramy::triage::LoadedModel,
    input: &ndarray::Array4<f32>,
    mask_png: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use tramy::triage::gate;
    let first = input
        .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..1))
        .to_owned();
    let spec = gate::spec_of(gate)?;
    let by = format!("{} {}", gate.manifest.name, gate.manifest.version);
    let mask = gate::masks(gate, &first)?.pop().unwrap_or_default();
    if let Some(path) = mask_png {
        mask.save(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let verdict = gate::judge(&by, spec, mask);
    println!(
        "{}",
        serde_json::json!({
            "model": gate.manifest.name,
            "version": gate.manifest.version,
            "anatomy": verdict.anatomy,
            "area_fraction": verdict.area_fraction,
            "passed": verdict.passed(),
            "refusal": verdict.refusal,
        })
    );
    Ok(())
}

/// `tramy eval --labels-from`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LabelsFromArg {
    /// A folder per class, or 0/1 columns of a CSV.
    Data,
    /// Doctors' agree/disagree on findings in a research export's labels.csv.
    Feedback,
}

/// What `tramy eval` was asked.
struct EvalArgs {
    models: Vec<PathBuf>,
    data: PathBuf,
    from: tramy::triage::eval::LabelsFrom,
    min_stratum: usize,
    out: Option<PathBuf>,
    roc_dir: Option<PathBuf>,
}

fn eval(args: EvalArgs, d: Option<&str>, config: &Config) -> anyhow::Result<()> {
    use tramy::triage::{eval, LoadedModel, ModelManifest};
    let EvalArgs {
        models,
        data,
        from,
        min_stratum,
        out,
        roc_dir,
    } = args;
    let device = device_or(d, config)?;
    let d = match device {
        tramy::triage::Device::Cpu => "cpu",
        tramy::triage::Device::Cuda => "cuda",
    };
    let loaded = models
        .iter()
        .map(|dir| {
            let manifest = ModelManifest::load(&dir.join("model.toml"))?;
            Ok(LoadedModel::load(manifest, device)?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let labels: Vec<String> = loaded
        .iter()
        .flat_map(|m| m.manifest.labels.iter().map(|l| l.name.clone()))
        .collect();
    let (examples, feedback) = eval::load(&data, &labels, from)?;
    if let Some(c) = &feedback {
        println!(
            "labels from feedback: {} findings labelled, {} without feedback and {} conflicting excluded",
            c.labelled, c.no_feedback, c.conflicting
        );
    }
    let mut reports = Vec::new();
    for model in &loaded {
        let bar = indicatif::ProgressBar::new(examples.len() as u64)
            .with_message(model.manifest.name.clone());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:24} {bar:40} {pos}/{len} {per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut report = eval::evaluate(model, d, &examples, min_stratum, || bar.inc(1))?;
        bar.finish_and_clear();
        report.feedback = feedback.clone();
        reports.push(report);
    }
    eval::compare(&mut reports);
    println!(
        "{:<24} {:<16} {:>4}/{:<4} {:>6} {:>15} {:>6} {:>6} {:>14} {:>9} {:>9} {:>8}",
        "model",
        "label",
        "pos",
        "neg",
        "AUC",
        "95% CI",
        "sens",
        "spec",
        "TP/FP/TN/FN",
        "p50 ms",
        "p95 ms",
        "img/s"
    );
    let fmt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    for r in &reports {
        for l in &r.labels {
            println!(
                "{:<24} {:<16} {:>4}/{:<4} {:>6} {:>15} {:>6} {:>6} {:>14} {:>9.1} {:>9.1} {:>8.1}",
                r.model,
                l.label,
                l.positives,
                l.negatives,
                fmt(l.auc),
                l.auc_ci95
                    .map(|(a, b)| format!("{a:.3}–{b:.3}"))
                    .unwrap_or_else(|| "-".into()),
                fmt(l.sensitivity),
                fmt(l.specificity),
                format!(
                    "{}/{}/{}/{}",
                    l.confusion[0], l.confusion[1], l.confusion[2], l.confusion[3]
                ),
                r.latency_p50_ms,
                r.latency_p95_ms,
                r.throughput_per_s
            );
        }
        println!("  {}: {}", r.model, r.statement);
    }
    print_calibration(&reports);
    print_strata(&reports, min_stratum);
    print_comparisons(&reports);
    if let Some(dir) = roc_dir {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut names: Vec<String> = reports
            .iter()
            .flat_map(|r| r.labels.iter().map(|l| l.label.clone()))
            .collect();
        names.sort();
        names.dedup();
        for label in names {
            let curves: Vec<(&str, &[(f64, f64)])> = reports
                .iter()
                .filter_map(|r| {
                    r.labels
                        .iter()
                        .find(|l| l.label == label)
                        .map(|l| (r.model.as_str(), l.roc.as_slice()))
                })
                .collect();
            let path = dir.join(format!("roc-{label}.png"));
            eval::draw_roc(&path, &curves)
                .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
            let legend: Vec<String> = curves
                .iter()
                .enumerate()
                .map(|(i, (m, _))| format!("{m} = {}", eval::colour_name(i)))
                .collect();
            println!(
                "ROC for {label}: {} ({})",
                path.display(),
                legend.join(", ")
            );
            let bins: Vec<(&str, &[eval::stats::Bin])> = reports
                .iter()
                .filter_map(|r| {
                    r.labels
                        .iter()
                        .find(|l| l.label == label)
                        .map(|l| (r.model.as_str(), l.reliability.as_slice()))
                })
                .collect();
            let path = dir.join(format!("reliability-{label}.png"));
            eval::draw_reliability(&path, &bins)
                .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
            println!("Reliability diagram for {label}: {}", path.display());
        }
    }
    if let Some(path) = out {
        std::fs::write(&path, serde_json::to_vec_pretty(&reports)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn fmt3(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// Brier score, expected calibration error and the reliability bins of each model and label.
fn print_calibration(reports: &[tramy::triage::eval::ModelReport]) {
    println!("\ncalibration (10 bins: count, mean predicted → observed fraction)");
    for r in reports {
        for l in &r.labels {
            println!(
                "{:<24} {:<16} Brier {} ECE {}",
                r.model,
                l.label,
                fmt3(l.brier),
                fmt3(l.ece)
            );
            let bins: Vec<String> = l
                .reliability
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| {
                    format!(
                        "[{:.1}-{:.1}] n={} {}→{}",
                        b.lower,
                        b.upper,
                        b.count,
                        fmt3(b.mean_predicted),
                        fmt3(b.observed)
                    )
                })
                .collect();
            println!("  {}", bins.join("  "));
        }
    }
}

/// Per facility, modality, sex and age group: counts and figures, or "n too small".
fn print_strata(reports: &[tramy::triage::eval::ModelReport], min: usize) {
    println!(
        "\nbreakdown at the manifest threshold (n too small: under {min} positives or negatives)"
    );
    println!(
        "{:<24} {:<16} {:<10} {:<16} {:>4}/{:<4} {:>6} {:>6} {:>6} {:>14}",
        "model", "label", "by", "value", "pos", "neg", "AUC", "sens", "spec", "TP/FP/TN/FN"
    );
    for r in reports {
        for l in &r.labels {
            for s in &l.strata {
                // A dimension nothing stated (a JPEG folder has no headers) says nothing.
                let alone = l.strata.iter().filter(|o| o.by == s.by).count() == 1;
                if alone && s.value == tramy::triage::eval::strata::UNKNOWN {
                    continue;
                }
                let figures = if s.too_small {
                    format!("{:>20}", "n too small")
                } else {
                    format!(
                        "{:>6} {:>6} {:>6}",
                        fmt3(s.auc),
                        fmt3(s.sensitivity),
                        fmt3(s.specificity)
                    )
                };
                let c = s.confusion;
                println!(
                    "{:<24} {:<16} {:<10} {:<16} {:>4}/{:<4} {} {:>14}",
                    r.model,
                    l.label,
                    s.by,
                    s.value,
                    s.positives,
                    s.negatives,
                    figures,
                    format!("{}/{}/{}/{}", c[0], c[1], c[2], c[3])
                );
            }
        }
    }
}

/// DeLong's test of each pair of models, per label.
fn print_comparisons(reports: &[tramy::triage::eval::ModelReport]) {
    if reports.len() < 2 {
        return;
    }
    println!("\nDeLong's test of correlated AUCs (files both models scored)");
    for r in reports {
        for c in &r.comparisons {
            let result = match &c.delong {
                None => "fewer than 2 positives or 2 negatives".to_string(),
                Some(d) if d.identical => format!(
                    "AUC {:.3} vs {:.3}: identical (difference 0 with no variance, p = 1)",
                    d.auc_a, d.auc_b
                ),
                Some(d) => format!(
                    "AUC {:.3} vs {:.3}, difference {:+.3} (95% CI {:+.3} to {:+.3}), p = {:.4}",
                    d.auc_a,
                    d.auc_b,
                    d.difference,
                    d.difference_ci95.0,
                    d.difference_ci95.1,
                    d.p_value
                ),
            };
            println!(
                "{} vs {} [{}], {} files: {result}",
                r.model, c.against, c.label, c.examples
            );
        }
    }
}

/// `tramy audit verify`: the chain from its first event; a break is an error (exit status 1).
async fn audit_verify(config: &Config) -> anyhow::Result<()> {
    let index = open_index(config)?;
    let report = index
        .verify_audit_chain(&tramy::access::Principal::system())
        .await?;
    match report.first_break {
        None => {
            println!("{} audit event(s) verified", report.verified);
            Ok(())
        }
        Some(found) => {
            println!(
                "{} audit event(s) verified before the first break",
                report.verified
            );
            anyhow::bail!("the audit trail was tampered with: {found}")
        }
    }
}

/// The index alone, for the registry commands: beside a running server they share the SQLite
/// file (WAL; each connection waits for the other's write lock) or the PostgreSQL database.
fn open_index(config: &Config) -> anyhow::Result<tramy::store::Index> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let location =
        tramy::store::IndexLocation::parse(config.index_url.as_deref(), &config.data_dir)?;
    tramy::store::Index::open_at(&location, config.ingest.fsync)
        .with_context(|| format!("cannot open the index {}", location.describe()))
}

async fn facility(command: FacilityCommand, config: &Config) -> anyhow::Result<()> {
    let (index, who) = (open_index(config)?, tramy::access::Principal::system());
    match command {
        FacilityCommand::Add {
            code,
            name,
            kind,
            parent,
        } => {
            let facility = tramy::registry::NewFacility {
                code,
                name,
                kind: kind.parse()?,
                parent,
            };
            let f = index.add_facility(&who, facility).await?;
            tramy::facility_keys::ensure(&config.data_dir, &f.code)?;
            eprintln!(
                "facility {} ({}) registered, with its signing key in {}",
                f.code,
                f.kind,
                tramy::facility_keys::key_path(&config.data_dir, &f.code).display()
            );
        }
        FacilityCommand::List => {
            let all = index.facilities(&who).await?;
            print!("{}", tramy::registry::render_facilities(&all));
        }
    }
    Ok(())
}

async fn ae(command: AeCommand, config: &Config) -> anyhow::Result<()> {
    let (index, who) = (open_index(config)?, tramy::access::Principal::system());
    match command {
        AeCommand::Add {
            ae_title,
            facility,
            host,
            port,
        } => {
            let ae = index
                .add_application_entity_at(&who, &ae_title, &facility, host.as_deref(), port)
                .await?;
            eprintln!(
                "AE title {} registered for facility {}",
                ae.ae_title, ae.facility
            );
        }
        AeCommand::List => {
            let all = index.application_entities(&who).await?;
            print!("{}", tramy::registry::render_application_entities(&all));
        }
    }
    Ok(())
}

async fn token(command: TokenCommand, config: &Config) -> anyhow::Result<()> {
    use tramy::registry::{expiry_after, render_tokens, NewToken};
    let (index, who) = (open_index(config)?, tramy::access::Principal::system());
    match command {
        TokenCommand::Create {
            facility,
            role,
            name,
            expires_in,
        } => {
            let expires_at = expires_in
                .map(|e| expiry_after(&e, chrono::Utc::now()))
                .transpose()?;
            let request = NewToken {
                facility,
                role: role.parse()?,
                name,
                expires_at,
            };
            let issued = index.create_token(&who, request).await?;
            // Scripts read stdout: the token alone. The note goes to stderr.
            println!("{}", issued.text);
            eprintln!(
                "token {} made; it is shown only this once (send it as `Authorization: Bearer <token>`)",
                issued.id
            );
        }
        TokenCommand::List => {
            print!("{}", render_tokens(&index.tokens(&who).await?));
        }
        TokenCommand::Revoke { id } => {
            let record = index.revoke_token(&who, &id).await?;
            eprintln!(
                "token {} revoked{}",
                record.id,
                record
                    .revoked_at
                    .map(|at| format!(
                        " (since {})",
                        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

async fn stats(
    config: &Config,
    facility: Option<String>,
    from: Option<&str>,
    to: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    use tramy::forward::stats::{facility_stats, StatsPeriod};
    let (index, who) = (open_index(config)?, tramy::access::Principal::system());
    let period = StatsPeriod::parse(from, to, chrono::Utc::now().date_naive())?;
    let codes = match facility {
        Some(code) => {
            if !index.facility_registered(&who, &code)? {
                anyhow::bail!("no facility {code}: see `tramy facility list`");
            }
            vec![code]
        }
        None => index
            .facilities(&who)
            .await?
            .into_iter()
            .map(|f| f.code)
            .collect(),
    };
    let mut all = Vec::new();
    for code in &codes {
        all.push(facility_stats(&index, &who, code, &period).await?);
    }
    match (json, all.as_slice()) {
        (true, [one]) => println!("{}", serde_json::to_string_pretty(one)?),
        (true, _) => println!("{}", serde_json::to_string_pretty(&all)?),
        (false, _) => {
            let tables: Vec<String> = all.iter().map(|s| s.render()).collect();
            print!("{}", tables.join("\n"));
        }
    }
    Ok(())
}

/// The peer named `name`: from the configuration's `[[peers]]`, else added through the API.
async fn find_peer(
    config: &Config,
    index: &tramy::store::Index,
    name: &str,
) -> anyhow::Result<tramy::forward::Peer> {
    if let Some(spec) = config.peers.iter().find(|p| p.name == name) {
        return Ok(spec.to_peer(true)?);
    }
    let who = tramy::access::Principal::system();
    match index.api_peers(&who).await?.into_iter().find(|p| p.name == name) {
        Some(spec) => Ok(spec.to_peer(false)?),
        None => anyhow::bail!(
            "no peer named {name} in [[peers]] of the configuration or among those added through the API (is --config given?)"
        ),
    }
}

/// A day (`YYYY-MM-DD`, its start in UTC) or an RFC 3339 time, as the index writes times.
fn since_text(since: &str) -> anyhow::Result<String> {
    let at = match chrono::NaiveDate::parse_from_str(since.trim(), "%Y-%m-%d") {
        Ok(day) => day.and_time(chrono::NaiveTime::MIN).and_utc(),
        Err(_) => chrono::DateTime::parse_from_rfc3339(since.trim())
            .map_err(|_| {
                anyhow::anyhow!(
                    "--since {since:?}: write a day as YYYY-MM-DD or a time as RFC 3339"
                )
            })?
            .with_timezone(&chrono::Utc),
    };
    Ok(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

async fn reconcile(
    config: &Config,
    peer: &str,
    since: Option<&str>,
    options: tramy::forward::reconcile::ReconcileOptions,
    json: bool,
) -> anyhow::Result<()> {
    let index = open_index(config)?;
    let peer = find_peer(config, &index, peer).await?;
    let options = tramy::forward::reconcile::ReconcileOptions {
        since: since.map(since_text).transpose()?,
        ..options
    };
    let report = tramy::forward::reconcile::reconcile(
        &index,
        &tramy::access::Principal::system(),
        peer,
        &options,
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// `tramy research export`: the same domain functions the API calls, as tramy itself.
async fn research_export(
    config: &Config,
    request: tramy::research::ExportRequest,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use tramy::research::{self, DirWriter, Pseudonyms};
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        anyhow::bail!("{} is not empty: give a new or empty folder", out.display());
    }
    let archive = open_archive(config).await?;
    let who = tramy::access::Principal::system();
    let max = config.research.max_studies_per_export;
    let studies = research::select_studies(&archive, &who, &request, max).await?;
    let keys = Pseudonyms::load_or_create(&config.data_dir)?;
    let thresholds = tramy::triage::manifest::discover(&config.triage.models_dir)
        .into_iter()
        .flatten()
        .flat_map(|m| {
            let name = m.name.clone();
            m.labels
                .into_iter()
                .map(move |l| ((name.clone(), l.name), l.threshold))
        })
        .collect();
    let mut writer = DirWriter::new(out);
    let summary = research::export_set(
        &archive,
        &who,
        &studies,
        request.grant.as_deref(),
        &keys,
        &thresholds,
        &mut writer,
    )
    .await?;
    println!(
        "{} studies, {} instances written to {}, {} left out (see README.txt)",
        summary.studies,
        summary.instances,
        out.display(),
        summary.excluded_total()
    );
    Ok(())
}

async fn open_archive(config: &Config) -> anyhow::Result<tramy::ingest::Archive> {
    let archive = tramy::ingest::Archive::open(config)
        .with_context(|| format!("cannot open the archive in {}", config.data_dir.display()))?;
    archive
        .check_object_store()
        .await
        .context("checking the object store")?;
    Ok(archive)
}

async fn reindex(config: &Config) -> anyhow::Result<()> {
    let archive = open_archive(config).await?;
    let summary = tramy::integrity::reindex::reindex(&archive)
        .await
        .context("re-indexing the object store")?;
    println!(
        "objects: {}\nalready indexed: {}\nindexed now: {}\nleft unindexed, SOP Instance UID indexed with another object: {}\nleft unindexed, not readable: {}",
        summary.objects,
        summary.already_indexed,
        summary.indexed,
        summary.superseded.len(),
        summary.unreadable.len()
    );
    for (key, reason) in &summary.unreadable {
        println!("  {key}: {reason}");
    }
    Ok(())
}

async fn verify(
    config: &Config,
    options: &tramy::integrity::scrub::VerifyOptions,
    json: bool,
) -> anyhow::Result<()> {
    let archive = open_archive(config).await?;
    let summary = tramy::integrity::scrub::verify(&archive, options)
        .await
        .context("verifying the archive")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    if summary.all_intact() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

/// dicom-rs warns once per element it finds odd (a damaged File Meta group: hundreds of lines
/// for one refused file) and on routine rendering; tramy logs one line per refused input itself.
/// So its crates speak only at error level, unless `RUST_LOG` asks for debug or names them.
const QUIET_THIRD_PARTY: &str =
    "dicom_object=error,dicom_parser=error,dicom_pixeldata=error,dicom_encoding=error";

/// The log filter for `RUST_LOG` (default `info`).
fn log_filter(spec: Option<String>) -> EnvFilter {
    let spec = spec.unwrap_or_else(|| "info".into());
    let verbose = ["debug", "trace", "dicom_"]
        .iter()
        .any(|w| spec.contains(w));
    let spec = if verbose {
        spec
    } else {
        format!("{spec},{QUIET_THIRD_PARTY}")
    };
    EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_THIRD_PARTY}")))
}

fn main() -> anyhow::Result<()> {
    tramy::store::staging::return_large_buffers_to_the_os();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(std::env::var("RUST_LOG").ok()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A panic (always a bug; third-party decoders' panics on damaged pixel data are contained
    // and become refusals) goes to the log like every other event, with where it happened.
    std::panic::set_hook(Box::new(|info| {
        if tramy::dicom::pixels::is_contained() {
            tracing::debug!(panic = %info, "a pixel decoder gave up on damaged data");
        } else {
            tracing::error!(panic = %info, "internal error; please report it");
        }
    }));
    // Every subcommand reads the same configuration (`--config`, then TRAMY_* variables).
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let command = match cli.command {
        Command::Models { command } => return models(command, &config),
        Command::Conformance => {
            print!("{}", tramy::conformance::statement(&config));
            return Ok(());
        }
        Command::Eval {
            models,
            data,
            labels_from,
            min_stratum,
            device: d,
            out,
            roc_dir,
        } => {
            let from = match labels_from {
                LabelsFromArg::Data => tramy::triage::eval::LabelsFrom::Data,
                LabelsFromArg::Feedback => tramy::triage::eval::LabelsFrom::Feedback,
            };
            let args = EvalArgs {
                models,
                data,
                from,
                min_stratum,
                out,
                roc_dir,
            };
            return eval(args, d.as_deref(), &config);
        }
        other => other,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Serve { no_triage } => tramy::server::run(config, !no_triage).await,
            Command::Worker => tramy::server::run_worker(config).await,
            // Handled above: model commands need no configuration or runtime.
            Command::Models { .. } | Command::Eval { .. } | Command::Conformance => Ok(()),
            Command::Reindex => reindex(&config).await,
            Command::Facility { command } => facility(command, &config).await,
            Command::Ae { command } => ae(command, &config).await,
            Command::Token { command } => token(command, &config).await,
            Command::Research {
                command:
                    ResearchCommand::Export {
                        grant,
                        out,
                        modality,
                        from,
                        to,
                    },
            } => {
                let request = tramy::research::ExportRequest {
                    grant: Some(grant),
                    modality,
                    from,
                    to,
                };
                research_export(&config, request, &out).await
            }
            Command::Audit {
                command: AuditCommand::Verify,
            } => audit_verify(&config).await,
            Command::Stats {
                facility,
                from,
                to,
                json,
            } => stats(&config, facility, from.as_deref(), to.as_deref(), json).await,
            Command::Reconcile {
                peer,
                since,
                dry_run,
                list,
                json,
            } => {
                let options = tramy::forward::reconcile::ReconcileOptions {
                    since: None,
                    dry_run,
                    list,
                };
                reconcile(&config, &peer, since.as_deref(), options, json).await
            }
            Command::Verify { since, rate, json } => {
                let options = tramy::integrity::scrub::VerifyOptions {
                    since,
                    rate_mb_per_s: rate,
                    progress: !json,
                };
                verify(&config, &options, json).await
            }
            Command::Import { dir, parallel } => {
                let archive = open_archive(&config).await?;
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
