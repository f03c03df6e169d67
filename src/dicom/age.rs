//! A patient's age at an examination: Patient's Age (0010,1010), an Age String (VR AS, PS3.5
//! 6.2: `nnnD`, `nnnW`, `nnnM` or `nnnY`), or else Patient's Birth Date (0010,0030) against the
//! examination's date: Study Date, else Acquisition Date, else Content Date (VR DA, `YYYYMMDD`;
//! the ACR-NEMA `YYYY.MM.DD` form is read too, PS3.5 6.2 note).

use chrono::{Datelike, NaiveDate};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::attributes::text;

/// The unit an age is stated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeUnit {
    /// `D` in an Age String.
    Days,
    /// `W`.
    Weeks,
    /// `M`.
    Months,
    /// `Y`.
    Years,
}

/// An age as a number of units, e.g. 45 years or 6 months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age {
    /// How many units.
    pub value: u32,
    /// Which unit.
    pub unit: AgeUnit,
}

impl Age {
    /// An Age String (`045Y`); `None` unless it is three digits and a unit letter (trailing
    /// padding aside).
    pub fn parse_age_string(s: &str) -> Option<Age> {
        let s = s.trim_end_matches([' ', '\0']);
        let (digits, unit) = (s.get(..3)?, s.get(3..)?);
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let unit = match unit {
            "D" => AgeUnit::Days,
            "W" => AgeUnit::Weeks,
            "M" => AgeUnit::Months,
            "Y" => AgeUnit::Years,
            _ => return None,
        };
        Some(Age {
            value: digits.parse().ok()?,
            unit,
        })
    }

    /// The age on `on` of someone born on `birth`: completed years, or completed months under
    /// one year; `None` when `on` is before `birth`.
    pub fn between(birth: NaiveDate, on: NaiveDate) -> Option<Age> {
        let months = (on.year() - birth.year()) * 12 + on.month() as i32
            - birth.month() as i32
            - i32::from(on.day() < birth.day());
        let months = u32::try_from(months).ok()?;
        Some(if months >= 12 {
            Age {
                value: months / 12,
                unit: AgeUnit::Years,
            }
        } else {
            Age {
                value: months,
                unit: AgeUnit::Months,
            }
        })
    }

    /// Completed years, as an age range in years compares them (6 months is 0 years).
    pub fn completed_years(&self) -> u32 {
        match self.unit {
            AgeUnit::Days => self.value / 365,
            AgeUnit::Weeks => self.value / 52,
            AgeUnit::Months => self.value / 12,
            AgeUnit::Years => self.value,
        }
    }

    /// The instance's age: its Patient's Age when that is a valid Age String, else its birth
    /// date against the first date the examination has; `None` when neither says.
    pub fn of_instance(obj: &InMemDicomObject) -> Option<Age> {
        Age::parse_age_string(&text(obj, tags::PATIENT_AGE)).or_else(|| {
            let birth = date(&text(obj, tags::PATIENT_BIRTH_DATE))?;
            let on = examination_date(obj)?;
            Age::between(birth, on)
        })
    }
}

impl std::fmt::Display for Age {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.unit {
            AgeUnit::Days => "day",
            AgeUnit::Weeks => "week",
            AgeUnit::Months => "month",
            AgeUnit::Years => "year",
        };
        let plural = if self.value == 1 { "" } else { "s" };
        write!(f, "{} {unit}{plural}", self.value)
    }
}

/// The examination's date: Study Date, else Acquisition Date, else Content Date.
fn examination_date(obj: &InMemDicomObject) -> Option<NaiveDate> {
    let dates: [Tag; 3] = [tags::STUDY_DATE, tags::ACQUISITION_DATE, tags::CONTENT_DATE];
    dates.iter().find_map(|&tag| date(&text(obj, tag)))
}

/// A DA value, `YYYYMMDD` (or ACR-NEMA `YYYY.MM.DD`); `None` when it is not a real date.
pub fn date(s: &str) -> Option<NaiveDate> {
    let digits: String = s.trim().chars().filter(|&c| c != '.').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(&digits, "%Y%m%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn age(value: u32, unit: AgeUnit) -> Option<Age> {
        Some(Age { value, unit })
    }

    #[test]
    fn age_strings_in_each_unit_are_read_and_anything_else_is_not() {
        assert_eq!(Age::parse_age_string("045Y"), age(45, AgeUnit::Years));
        assert_eq!(Age::parse_age_string("006M"), age(6, AgeUnit::Months));
        assert_eq!(Age::parse_age_string("010W"), age(10, AgeUnit::Weeks));
        assert_eq!(Age::parse_age_string("003D"), age(3, AgeUnit::Days));
        assert_eq!(Age::parse_age_string("000Y"), age(0, AgeUnit::Years));
        for bad in [
            "", "45Y", "45", "045y", "045X", "0045Y", "-45Y", "04 Y", "YYYY", "١٢٣Y",
        ] {
            assert_eq!(Age::parse_age_string(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn completed_years_count_whole_years_in_any_unit() {
        let years = |s| Age::parse_age_string(s).unwrap().completed_years();
        assert_eq!(years("017Y"), 17);
        assert_eq!(years("011M"), 0);
        assert_eq!(years("030M"), 2);
        assert_eq!(years("051W"), 0);
        assert_eq!(years("104W"), 2);
        assert_eq!(years("364D"), 0);
        assert_eq!(years("999D"), 2);
    }

    #[test]
    fn age_from_dates_counts_completed_years_and_months_under_one_year() {
        let d = |s| date(s).unwrap();
        assert_eq!(
            Age::between(d("19400305"), d("20040826")),
            age(64, AgeUnit::Years)
        );
        // The day before the 18th birthday is still 17.
        assert_eq!(
            Age::between(d("20000615"), d("20180614")),
            age(17, AgeUnit::Years)
        );
        assert_eq!(
            Age::between(d("20000615"), d("20180615")),
            age(18, AgeUnit::Years)
        );
        assert_eq!(
            Age::between(d("20240229"), d("20250228")),
            age(11, AgeUnit::Months)
        );
        assert_eq!(
            Age::between(d("20240110"), d("20240110")),
            age(0, AgeUnit::Months)
        );
        assert_eq!(Age::between(d("20240110"), d("20240109")), None);
    }

    #[test]
    fn dates_are_read_in_both_forms_and_impossible_ones_are_not() {
        assert_eq!(date("20040826"), NaiveDate::from_ymd_opt(2004, 8, 26));
        assert_eq!(date("2004.08.26"), NaiveDate::from_ymd_opt(2004, 8, 26));
        for bad in ["", "2004", "20040231", "2004-08-26", "200408261"] {
            assert_eq!(date(bad), None, "{bad:?}");
        }
    }

    fn with(elements: &[(Tag, VR, &str)]) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        for (tag, vr, value) in elements {
            obj.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
        }
        obj
    }

    #[test]
    fn an_instance_age_is_its_age_string_else_birth_date_against_the_first_examination_date() {
        let birth = (tags::PATIENT_BIRTH_DATE, VR::DA, "20000101");
        let stated = with(&[(tags::PATIENT_AGE, VR::AS, "004Y"), birth]);
        assert_eq!(Age::of_instance(&stated), age(4, AgeUnit::Years));
        let by_study = with(&[
            birth,
            (tags::STUDY_DATE, VR::DA, "20450101"),
            (tags::CONTENT_DATE, VR::DA, "20100101"),
        ]);
        assert_eq!(Age::of_instance(&by_study), age(45, AgeUnit::Years));
        let by_content = with(&[
            (tags::PATIENT_AGE, VR::AS, "bad"),
            birth,
            (tags::CONTENT_DATE, VR::DA, "20100101"),
        ]);
        assert_eq!(Age::of_instance(&by_content), age(10, AgeUnit::Years));
        assert_eq!(Age::of_instance(&with(&[birth])), None);
        assert_eq!(Age::of_instance(&InMemDicomObject::new_empty()), None);
    }

    #[test]
    fn ages_read_as_words() {
        assert_eq!(age(45, AgeUnit::Years).unwrap().to_string(), "45 years");
        assert_eq!(age(1, AgeUnit::Months).unwrap().to_string(), "1 month");
        assert_eq!(age(3, AgeUnit::Days).unwrap().to_string(), "3 days");
    }
}
