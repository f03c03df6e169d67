//! Whether an instance is inside the population a model was made for (its manifest's
//! `[population]`): the patient's age (`dicom::age`), View Position (0018,5101) and Modality
//! against what the manifest declares. What is unknown counts as inside and is said so.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::Serialize;

use super::manifest::{Outside, Population};
use crate::dicom::age::Age;
use crate::dicom::attributes::text;

/// What an instance says about whom and how it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The patient's age at the examination, when known.
    pub age: Option<Age>,
    /// View Position, e.g. `PA`; empty when absent.
    pub view: String,
    /// Modality.
    pub modality: String,
}

impl Subject {
    /// The subject of a parsed instance.
    pub fn of(obj: &InMemDicomObject) -> Subject {
        Subject {
            age: Age::of_instance(obj),
            view: text(obj, tags::VIEW_POSITION).to_ascii_uppercase(),
            modality: text(obj, tags::MODALITY).to_ascii_uppercase(),
        }
    }
}

/// A finding's standing against its model's intended use (stored under these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntendedUse {
    /// Inside the declared population.
    Inside,
    /// Outside it: scored, never flagged.
    Outside,
    /// The model declares no population (and findings recorded before tramy checked).
    Undeclared,
}

impl IntendedUse {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            IntendedUse::Inside => "inside",
            IntendedUse::Outside => "outside",
            IntendedUse::Undeclared => "undeclared",
        }
    }

    /// The standing named `s`, if any.
    pub fn parse(s: &str) -> Option<IntendedUse> {
        [
            IntendedUse::Inside,
            IntendedUse::Outside,
            IntendedUse::Undeclared,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
    }
}

/// The verdict on one instance for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Inside, outside or undeclared.
    pub intended_use: IntendedUse,
    /// Why it is outside, or what was unknown when inside (`age unknown`); empty otherwise.
    pub note: String,
    /// The instance's View Position, recorded with its findings.
    pub view: String,
    /// What the manifest says to do when outside.
    pub outside: Option<Outside>,
}

impl Assessment {
    /// Whether the instance is to be left unscored.
    pub fn skip(&self) -> bool {
        self.intended_use == IntendedUse::Outside && self.outside == Some(Outside::Skip)
    }
}

/// Assesses `subject` against `population` (none declared: undeclared).
pub fn assess(population: Option<&Population>, subject: &Subject) -> Assessment {
    let Some(p) = population else {
        return Assessment {
            intended_use: IntendedUse::Undeclared,
            note: String::new(),
            view: subject.view.clone(),
            outside: None,
        };
    };
    let (outside, unknown) = criteria(p, subject);
    let (intended_use, note) = if outside.is_empty() {
        (IntendedUse::Inside, unknown.join(", "))
    } else {
        (
            IntendedUse::Outside,
            format!("outside intended use: {}", outside.join("; ")),
        )
    };
    Assessment {
        intended_use,
        note,
        view: subject.view.clone(),
        outside: Some(p.outside),
    }
}

/// The criteria `subject` fails, and those it cannot be judged on.
fn criteria(p: &Population, subject: &Subject) -> (Vec<String>, Vec<String>) {
    let (mut outside, mut unknown) = (Vec::new(), Vec::new());
    if let Some(range) = p.age_years {
        match subject.age {
            Some(age) if !range.contains(age.completed_years()) => {
                outside.push(format!("age {age}, model population {range}"))
            }
            Some(_) => {}
            None => unknown.push("age unknown".to_string()),
        }
    }
    let listed = |list: &[String], v: &str| list.iter().any(|x| x.eq_ignore_ascii_case(v));
    if !p.views.is_empty() {
        if subject.view.is_empty() {
            unknown.push("view unknown".to_string());
        } else if !listed(&p.views, &subject.view) {
            outside.push(format!(
                "view {}, model views {}",
                subject.view,
                p.views.join(", ")
            ));
        }
    }
    if !p.modalities.is_empty() && !listed(&p.modalities, &subject.modality) {
        outside.push(format!(
            "modality {}, model modalities {}",
            subject.modality,
            p.modalities.join(", ")
        ));
    }
    (outside, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::age::AgeUnit;
    use crate::triage::manifest::AgeRange;

    fn paediatric(outside: Outside) -> Population {
        Population {
            age_years: Some(AgeRange { min: 0, max: 17 }),
            views: vec!["PA".into(), "AP".into()],
            modalities: vec![],
            outside,
        }
    }

    fn subject(years: Option<u32>, view: &str) -> Subject {
        Subject {
            age: years.map(|value| Age {
                value,
                unit: AgeUnit::Years,
            }),
            view: view.into(),
            modality: "CR".into(),
        }
    }

    #[test]
    fn an_adult_is_outside_a_paediatric_population_with_the_reason() {
        let a = assess(Some(&paediatric(Outside::Mark)), &subject(Some(45), "PA"));
        assert_eq!(a.intended_use, IntendedUse::Outside);
        assert_eq!(
            a.note,
            "outside intended use: age 45 years, model population 0-17 years"
        );
        assert!(!a.skip());
        let skipped = assess(Some(&paediatric(Outside::Skip)), &subject(Some(18), "PA"));
        assert!(skipped.skip());
    }

    #[test]
    fn a_child_is_inside_up_to_the_last_year_of_the_range() {
        for years in [0, 4, 17] {
            let a = assess(
                Some(&paediatric(Outside::Skip)),
                &subject(Some(years), "AP"),
            );
            assert_eq!(a.intended_use, IntendedUse::Inside, "{years}");
            assert_eq!(a.note, "");
            assert!(!a.skip());
        }
    }

    #[test]
    fn an_unknown_age_or_view_is_inside_and_said_so() {
        let a = assess(Some(&paediatric(Outside::Skip)), &subject(None, ""));
        assert_eq!(a.intended_use, IntendedUse::Inside);
        assert_eq!(a.note, "age unknown, view unknown");
    }

    #[test]
    fn a_view_or_modality_outside_the_lists_is_outside() {
        let mut p = paediatric(Outside::Mark);
        let lateral = assess(Some(&p), &subject(Some(4), "LL"));
        assert_eq!(
            lateral.note,
            "outside intended use: view LL, model views PA, AP"
        );
        p.modalities = vec!["DX".into()];
        let cr = assess(Some(&p), &subject(Some(40), "PA"));
        assert_eq!(
            cr.note,
            "outside intended use: age 40 years, model population 0-17 years; modality CR, model modalities DX"
        );
    }

    #[test]
    fn standings_keep_their_stored_names() {
        for u in [
            IntendedUse::Inside,
            IntendedUse::Outside,
            IntendedUse::Undeclared,
        ] {
            assert_eq!(IntendedUse::parse(u.as_str()), Some(u));
            assert_eq!(serde_json::to_value(u).unwrap(), u.as_str());
        }
        assert_eq!(IntendedUse::parse("Outside"), None);
    }

    #[test]
    fn without_a_population_nothing_is_judged() {
        let a = assess(None, &subject(Some(90), "LL"));
        assert_eq!(a.intended_use, IntendedUse::Undeclared);
        assert_eq!(a.view, "LL");
        assert!(!a.skip());
    }
}
