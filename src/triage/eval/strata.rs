//! Breakdowns of `tramy eval` by facility, modality, patient sex and age group, read from the
//! DICOM header (Institution Name, Modality, Patient's Sex, Patient's Age or Birth Date against
//! the study date, PS3.3 C.7.1.1 / C.7.2.2) or from a labels CSV column that overrides it.

use std::collections::BTreeMap;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use serde::Serialize;

use crate::dicom::age::Age;

/// The attributes a breakdown groups by, in report order.
pub const DIMENSIONS: [&str; 4] = ["facility", "modality", "sex", "age_group"];

/// The value a stratum gets when neither the header nor the labels file says.
pub const UNKNOWN: &str = "unknown";

/// Age group of completed years: <1, 1-4, 5-17, 18-64, 65+.
pub fn age_group(years: u32) -> &'static str {
    match years {
        0 => "<1",
        1..=4 => "1-4",
        5..=17 => "5-17",
        18..=64 => "18-64",
        _ => "65+",
    }
}

/// An age as a labels CSV states it: an Age String (`045Y`) or a number of years.
pub fn age_group_of_text(text: &str) -> Option<&'static str> {
    let text = text.trim();
    let years = match Age::parse_age_string(text) {
        Some(age) => age.completed_years(),
        None => text.parse::<f64>().ok().filter(|y| *y >= 0.0)? as u32,
    };
    Some(age_group(years))
}

/// The breakdown attributes of a Part 10 file, reading its header only; empty for a file that is
/// not DICOM or has none of them.
pub fn from_dicom(path: &Path) -> BTreeMap<String, String> {
    let Ok(obj) = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
    else {
        return BTreeMap::new();
    };
    let text = |tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let mut found = BTreeMap::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            found.insert(key.to_string(), v);
        }
    };
    put("facility", text(tags::INSTITUTION_NAME));
    put("modality", text(tags::MODALITY));
    put("sex", text(tags::PATIENT_SEX).map(|s| s.to_uppercase()));
    put(
        "age_group",
        Age::of_instance(&obj).map(|a| age_group(a.completed_years()).to_string()),
    );
    found
}

/// One scored case: probability, truth, breakdown attributes.
pub type Case<'a> = (f32, bool, &'a BTreeMap<String, String>);

/// Figures of one stratum at the manifest threshold.
#[derive(Debug, Clone, Serialize)]
pub struct Stratum {
    /// Attribute (`facility`, `modality`, `sex`, `age_group`).
    pub by: String,
    /// Its value (`unknown` when not stated).
    pub value: String,
    /// Positives.
    pub positives: usize,
    /// Negatives.
    pub negatives: usize,
    /// AUC; absent when the stratum has fewer positives or negatives than the minimum.
    pub auc: Option<f64>,
    /// Sensitivity; absent with too few positives.
    pub sensitivity: Option<f64>,
    /// Specificity; absent with too few negatives.
    pub specificity: Option<f64>,
    /// True positives, false positives, true negatives, false negatives.
    pub confusion: [usize; 4],
    /// Fewer than the minimum positives or negatives: the figures would mislead.
    pub too_small: bool,
}

/// Per dimension and value, the figures of `cases` = (probability, truth, attributes); a stratum
/// with fewer than `min` positives or negatives is `too_small` and has no AUC.
pub fn breakdown(cases: &[Case<'_>], threshold: f32, min: usize) -> Vec<Stratum> {
    let mut strata = Vec::new();
    for by in DIMENSIONS {
        let mut groups: BTreeMap<&str, Vec<(f32, bool)>> = BTreeMap::new();
        for (p, y, attributes) in cases {
            let value = attributes.get(by).map_or(UNKNOWN, String::as_str);
            groups.entry(value).or_default().push((*p, *y));
        }
        for (value, scores) in groups {
            let positives = scores.iter().filter(|s| s.1).count();
            let negatives = scores.len() - positives;
            let tp = scores.iter().filter(|s| s.1 && s.0 >= threshold).count();
            let fp = scores.iter().filter(|s| !s.1 && s.0 >= threshold).count();
            let too_small = positives < min || negatives < min;
            strata.push(Stratum {
                by: by.to_string(),
                value: value.to_string(),
                positives,
                negatives,
                auc: if too_small { None } else { super::auc(&scores) },
                sensitivity: (positives >= min.max(1)).then(|| tp as f64 / positives as f64),
                specificity: (negatives >= min.max(1))
                    .then(|| (negatives - fp) as f64 / negatives as f64),
                confusion: [tp, fp, negatives - fp, positives - tp],
                too_small,
            });
        }
    }
    strata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_groups_follow_completed_years() {
        assert_eq!(age_group_of_text("006M"), Some("<1"));
        assert_eq!(age_group_of_text("004Y"), Some("1-4"));
        assert_eq!(age_group_of_text("17"), Some("5-17"));
        assert_eq!(age_group_of_text("018Y"), Some("18-64"));
        assert_eq!(age_group_of_text("65"), Some("65+"));
        assert_eq!(age_group_of_text("old"), None);
    }

    #[test]
    fn small_strata_have_counts_but_no_figures() {
        let f: BTreeMap<String, String> = [("sex".to_string(), "F".to_string())].into();
        let m: BTreeMap<String, String> = [("sex".to_string(), "M".to_string())].into();
        let cases = vec![
            (0.9, true, &f),
            (0.8, true, &f),
            (0.2, false, &f),
            (0.85, false, &f),
            (0.9, true, &m),
            (0.1, false, &m),
        ];
        let strata = breakdown(&cases, 0.5, 2);
        let sex: Vec<_> = strata.iter().filter(|s| s.by == "sex").collect();
        assert_eq!(
            (sex[0].value.as_str(), sex[0].positives, sex[0].negatives),
            ("F", 2, 2)
        );
        assert_eq!(sex[0].auc, Some(0.75));
        assert_eq!(sex[0].confusion, [2, 1, 1, 0]);
        assert!(sex[1].too_small && sex[1].auc.is_none() && sex[1].sensitivity.is_none());
        let unknown = strata.iter().find(|s| s.by == "facility").unwrap();
        assert_eq!((unknown.value.as_str(), unknown.positives), (UNKNOWN, 3));
    }
}
