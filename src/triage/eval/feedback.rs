//! Labels from doctors' feedback on findings (`tramy eval --labels-from feedback`).
//!
//! The file is a research export's `labels.csv`: a header row, then one row per finding, cells
//! separated by commas (no quoting: UIDs, labels and numbers hold no comma). Columns, in any
//! order, names case-insensitive:
//!
//! - `path` (required): the image file, relative to the CSV's folder.
//! - `sop_instance_uid`: the instance's SOP Instance UID (kept for the reader; not needed).
//! - `model`: the model that made the finding.
//! - `label` (required): the finding's label.
//! - `flagged` (required): `1`/`true` when the model flagged the label (probability at or above
//!   its threshold), `0`/`false` otherwise.
//! - `feedback_agree`, `feedback_disagree` (required): how many doctors agreed / disagreed with
//!   the finding (0 or empty: none).
//! - `facility`, `modality`, `sex`, `age` (years or an Age String), `age_group`: optional
//!   breakdown attributes, overriding the DICOM header.
//!
//! Rows with an empty `label` are instances without a finding (a research export lists every
//! instance): skipped and counted.
//!
//! Truth: agreed only ⇒ the model's flag; disagreed only ⇒ its opposite; no feedback ⇒ the row is
//! excluded (counted); both agreed and disagreed ⇒ excluded as conflicting (counted). Rows of one
//! file for one label that lead to different truths exclude that label for the file (conflicting).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{EvalError, Example};

/// How many rows gave a label and how many did not.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FeedbackCounts {
    /// Rows that gave a label.
    pub labelled: usize,
    /// Rows without feedback: excluded.
    pub no_feedback: usize,
    /// Rows where doctors both agreed and disagreed, or that contradict another row: excluded.
    pub conflicting: usize,
    /// Rows of instances without a finding (empty `label`): nothing to label.
    pub no_finding: usize,
}

fn flag(cell: &str) -> Option<bool> {
    match cell.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

fn count(cell: &str) -> Option<u64> {
    if cell.is_empty() {
        return Some(0);
    }
    flag(cell).map(u64::from).or_else(|| cell.parse().ok())
}

/// Reads a feedback `labels.csv` into examples (one per file, truth per label).
pub fn load(path: &Path) -> Result<(Vec<Example>, FeedbackCounts), EvalError> {
    let bad = |reason: String| EvalError::Data {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    // A spreadsheet's UTF-8 byte order mark would otherwise hide the first column's name.
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| bad("the CSV is empty".into()))?
        .split(',')
        .map(|h| h.trim().to_lowercase())
        .collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let need = |name: &str| column(name).ok_or_else(|| bad(format!("no column {name:?}")));
    let (path_col, label_col, flag_col) = (need("path")?, need("label")?, need("flagged")?);
    let (agree_col, disagree_col) = (need("feedback_agree")?, need("feedback_disagree")?);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut counts = FeedbackCounts::default();
    // Per file: truth per label (None once contradicted) and attributes.
    type Row = (BTreeMap<String, Option<bool>>, BTreeMap<String, String>);
    let mut files: BTreeMap<PathBuf, Row> = BTreeMap::new();
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != header.len() {
            return Err(bad(format!(
                "line {} has {} cells, the header {}",
                n + 2,
                cells.len(),
                header.len()
            )));
        }
        let at_line = |what: &str| bad(format!("line {}: {what}", n + 2));
        // An instance without a finding (a research export lists every instance): no label.
        if cells[label_col].is_empty() {
            counts.no_finding += 1;
            continue;
        }
        let flagged = flag(cells[flag_col]).ok_or_else(|| at_line("flagged is not 0 or 1"))?;
        let agree = count(cells[agree_col]).ok_or_else(|| at_line("bad feedback_agree"))?;
        let disagree =
            count(cells[disagree_col]).ok_or_else(|| at_line("bad feedback_disagree"))?;
        let truth = match (agree > 0, disagree > 0) {
            (false, false) => {
                counts.no_feedback += 1;
                continue;
            }
            (true, true) => {
                counts.conflicting += 1;
                continue;
            }
            (true, false) => flagged,
            (false, true) => !flagged,
        };
        counts.labelled += 1;
        let entry = files.entry(base.join(cells[path_col])).or_default();
        let label = cells[label_col].to_lowercase();
        match entry.0.get(&label) {
            Some(Some(t)) if *t != truth => {
                counts.conflicting += 1;
                entry.0.insert(label, None);
            }
            Some(None) => counts.conflicting += 1,
            _ => {
                entry.0.insert(label, Some(truth));
            }
        }
        super::attributes_from_row(&header, &cells, &mut entry.1);
    }
    let examples = files
        .into_iter()
        .filter_map(|(path, (truth, attributes))| {
            let truth: BTreeMap<String, bool> = truth
                .into_iter()
                .filter_map(|(l, t)| Some((l, t?)))
                .collect();
            (!truth.is_empty()).then_some(Example {
                path,
                truth,
                attributes,
            })
        })
        .collect();
    Ok((examples, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(csv: &str) -> Result<(Vec<Example>, FeedbackCounts), EvalError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.csv");
        std::fs::write(&path, csv).unwrap();
        load(&path)
    }

    #[test]
    fn rows_for_one_file_that_disagree_exclude_its_label() {
        let csv = "\u{feff}path,label,flagged,feedback_agree,feedback_disagree,sex\n\
                   a.dcm,Pneumonia,1,1,0,f\n\
                   a.dcm,pneumonia,1,0,1,f\n\
                   a.dcm,effusion,0,0,3,f\n\
                   b.dcm,pneumonia,true,,,\r\n";
        let (examples, counts) = loaded(csv).unwrap();
        assert_eq!(examples.len(), 1);
        let a = &examples[0];
        assert_eq!(a.truth, [("effusion".to_string(), true)].into());
        assert_eq!(a.attributes.get("sex").map(String::as_str), Some("F"));
        assert_eq!(
            counts,
            FeedbackCounts {
                labelled: 3,
                no_feedback: 1,
                conflicting: 1,
                no_finding: 0,
            }
        );
    }

    #[test]
    fn a_file_without_the_required_columns_or_with_bad_cells_is_refused() {
        let missing = loaded("path,label,flagged,feedback_agree\na,p,1,1\n");
        assert!(
            matches!(missing, Err(EvalError::Data { reason, .. }) if reason.contains("feedback_disagree"))
        );
        let bad = loaded("path,label,flagged,feedback_agree,feedback_disagree\na,p,maybe,1,0\n");
        assert!(matches!(bad, Err(EvalError::Data { reason, .. }) if reason.contains("line 2")));
    }
}
