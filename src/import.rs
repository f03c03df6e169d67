//! `tramy import DIR`: loads a folder of DICOM files through the same ingest path as C-STORE,
//! with a progress bar and a summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::dicom::{Part10Error, ReceivedInstance};
use crate::ingest::{Archive, Expected, IngestOutcome, Sender};

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportSummary {
    /// Newly stored instances.
    pub stored: usize,
    /// Already stored with the same data set.
    pub duplicates: usize,
    /// Conflicting instances kept or replaced under the configured policy.
    pub conflicts: usize,
    /// Files that are not DICOM instances (READMEs, viewers on a CD, DICOMDIR).
    pub skipped: usize,
    /// Files refused, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

impl ImportSummary {
    /// A summary for people: counts, then failures grouped by reason.
    pub fn render(&self) -> String {
        let mut out = format!(
            "stored: {}\nduplicates: {}\nconflicts: {}\nskipped (not DICOM instances): {}\nfailed: {}\n",
            self.stored,
            self.duplicates,
            self.conflicts,
            self.skipped,
            self.failed.len()
        );
        let mut by_reason: BTreeMap<&str, Vec<&Path>> = BTreeMap::new();
        for (path, reason) in &self.failed {
            by_reason.entry(reason).or_default().push(path);
        }
        for (reason, paths) in by_reason {
            out.push_str(&format!("  {} file(s): {reason}\n", paths.len()));
            for p in paths.iter().take(5) {
                out.push_str(&format!("    {}\n", p.display()));
            }
            if paths.len() > 5 {
                out.push_str(&format!("    … and {} more\n", paths.len() - 5));
            }
        }
        out
    }
}

/// Imports every regular file under `dir` (recursively), `parallel` at a time.
pub async fn import_dir(
    archive: &Archive,
    dir: &Path,
    parallel: usize,
    show_progress: bool,
) -> std::io::Result<ImportSummary> {
    let files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    if files.is_empty() && !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a folder", dir.display()),
        ));
    }
    let bar = if show_progress {
        let bar = ProgressBar::new(files.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} files  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let sender = Sender {
        principal: crate::access::Principal::system(),
        source: "IMPORT".into(),
        address: format!("file://{}", dir.display()),
        origin_facility: None,
    };
    let mut results = futures::stream::iter(files)
        .map(|path| {
            let sender = sender.clone();
            async move {
                let outcome = match tokio::fs::read(&path).await {
                    Err(e) => Err(format!("cannot read: {e}")),
                    Ok(bytes) => match ReceivedInstance::from_part10(Bytes::from(bytes)) {
                        Err(Part10Error::NotPart10) => Ok(None),
                        Err(e) => Err(e.to_string()),
                        Ok(received) if received.is_media_directory() => Ok(None),
                        Ok(received) => archive
                            .ingest(received, &sender, &Expected::NOTHING)
                            .await
                            .map(|r| Some(r.outcome))
                            .map_err(|e| e.to_string()),
                    },
                };
                (path, outcome)
            }
        })
        .buffer_unordered(parallel.max(1));
    let mut summary = ImportSummary::default();
    while let Some((path, outcome)) = results.next().await {
        match outcome {
            Ok(None) => summary.skipped += 1,
            Ok(Some(IngestOutcome::Stored)) => summary.stored += 1,
            Ok(Some(IngestOutcome::Duplicate)) => summary.duplicates += 1,
            Ok(Some(IngestOutcome::ConflictKept)) | Ok(Some(IngestOutcome::Replaced)) => {
                summary.conflicts += 1
            }
            Err(reason) => summary.failed.push((path, reason)),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(summary)
}
