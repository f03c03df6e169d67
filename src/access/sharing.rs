//! Patients' consents and referral grants (issue #9 items 6 and 7): the domain types and their
//! rules. A consent records that a patient agreed (in the national e-ID app, on paper, or
//! verbally) that their data may be used for a purpose by a facility (or any) for a period. A
//! grant lets another facility see a study, or a patient's studies since a date, under a consent
//! or as break-glass with a stated reason. The rows are in `store/sharing.rs`; what a grant opens
//! is applied to every query by `store/visibility.rs`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::GrantScope;
use crate::audit::PatientRef;

/// What a consent or grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Care at the facility a patient is referred to.
    Referral,
    /// Research (only researchers see what it opens).
    Research,
    /// Emergency care (break-glass grants are always this).
    Emergency,
}

impl Purpose {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Referral => "referral",
            Purpose::Research => "research",
            Purpose::Emergency => "emergency",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Purpose> {
        [Purpose::Referral, Purpose::Research, Purpose::Emergency]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// How a consent was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentSource {
    /// The national e-ID app (VNeID).
    Vneid,
    /// A signed paper form.
    Paper,
    /// Said to a clinician, who recorded it.
    Verbal,
}

impl ConsentSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentSource::Vneid => "vneid",
            ConsentSource::Paper => "paper",
            ConsentSource::Verbal => "verbal",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<ConsentSource> {
        [
            ConsentSource::Vneid,
            ConsentSource::Paper,
            ConsentSource::Verbal,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// A consent to record (`POST /api/v1/patients/{patient}/consents`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    /// For what.
    pub purpose: Purpose,
    /// The facility it allows (its code); absent: any facility.
    #[serde(default)]
    pub recipient: Option<String>,
    /// From when (RFC 3339); absent: now.
    #[serde(default)]
    pub valid_from: Option<DateTime<Utc>>,
    /// Until when (RFC 3339); absent: until revoked.
    #[serde(default)]
    pub valid_until: Option<DateTime<Utc>>,
    /// How it was given.
    pub source: ConsentSource,
    /// Where the evidence is (a VNeID transaction id, a scanned form's reference); no more than
    /// 200 characters.
    #[serde(default)]
    pub evidence: String,
}

/// A recorded consent.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Consent {
    /// Its id.
    pub id: String,
    /// For what.
    pub purpose: Purpose,
    /// The facility it allows; `null`: any.
    pub recipient: Option<String>,
    /// From when.
    pub valid_from: String,
    /// Until when; `null`: until revoked.
    pub valid_until: Option<String>,
    /// How it was given.
    pub source: ConsentSource,
    /// Where the evidence is.
    pub evidence: String,
    /// Who recorded it.
    pub recorded_by: String,
    /// When.
    pub recorded_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

/// A grant to make (`POST /api/v1/grants`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    /// The facility that may see the data (its code).
    pub to_facility: String,
    /// The study, or
    #[serde(default)]
    pub study_instance_uid: Option<String>,
    /// the patient (`ID` or `ISSUER|ID`), with
    #[serde(default)]
    pub patient: Option<String>,
    /// the earliest study date included (RFC 3339 or YYYY-MM-DD); absent: all their studies.
    #[serde(default)]
    pub since: Option<String>,
    /// What it opens: any of `metadata`, `images`, `findings`.
    pub scope: Vec<String>,
    /// When it ends (RFC 3339, in the future).
    pub expires_at: DateTime<Utc>,
    /// The patient's consent it rests on, or
    #[serde(default)]
    pub consent_id: Option<String>,
    /// why it is needed without one (break-glass: flagged for review).
    #[serde(default)]
    pub break_glass_reason: Option<String>,
    /// The facility whose data it opens, for a system-wide caller (a facility's caller gives
    /// its own).
    #[serde(default)]
    pub from_facility: Option<String>,
}

/// A grant as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Grant {
    /// Its id.
    pub id: String,
    /// Whose data.
    pub from_facility: String,
    /// Who may see it; `null` for a share link (whoever holds its token).
    pub to_facility: Option<String>,
    /// The study, when it opens one.
    pub study_instance_uid: Option<String>,
    /// The patient (`ISSUER|ID` or `ID`), when it opens a patient's studies.
    pub patient: Option<String>,
    /// Earliest study date (YYYYMMDD) of a patient grant.
    pub since: Option<String>,
    /// What it opens.
    pub scope: Vec<String>,
    /// For what (from its consent, or `emergency` for break-glass).
    pub purpose: Purpose,
    /// When it ends.
    pub expires_at: String,
    /// Its consent.
    pub consent_id: Option<String>,
    /// Break-glass reason (these grants are for review).
    pub break_glass_reason: Option<String>,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

/// A share link to make (`POST /api/v1/share-links`): one study, for a doctor with no account.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShareLink {
    /// The study.
    pub study_instance_uid: String,
    /// What it opens (default: all of `metadata`, `images`, `findings`).
    #[serde(default)]
    pub scope: Option<Vec<String>>,
    /// When it stops working (RFC 3339, in the future).
    pub expires_at: DateTime<Utc>,
    /// The patient's consent to any recipient it rests on, or
    #[serde(default)]
    pub consent_id: Option<String>,
    /// why it is needed without one (flagged for review).
    #[serde(default)]
    pub break_glass_reason: Option<String>,
    /// The facility whose study it is, for a system-wide caller.
    #[serde(default)]
    pub from_facility: Option<String>,
}

impl NewShareLink {
    /// The same request as a grant, whose rules it follows.
    pub fn as_grant(&self) -> NewGrant {
        NewGrant {
            to_facility: String::new(),
            study_instance_uid: Some(self.study_instance_uid.clone()),
            patient: None,
            since: None,
            scope: self.scope.clone().unwrap_or_else(|| {
                ["metadata", "images", "findings"]
                    .map(String::from)
                    .to_vec()
            }),
            expires_at: self.expires_at,
            consent_id: self.consent_id.clone(),
            break_glass_reason: self.break_glass_reason.clone(),
            from_facility: self.from_facility.clone(),
        }
    }
}

/// A share link just made: the only time its token is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedShareLink {
    /// The grant behind it (revoke with `DELETE /api/v1/grants/{id}`).
    pub id: String,
    /// The token (`tramyshare_…`), also usable as `Authorization: Bearer`.
    pub token: String,
    /// The path to give the doctor: opens the study in the viewer.
    pub path: String,
    /// When it stops working.
    pub expires_at: String,
}

/// A link to make (`POST /api/v1/patients/{patient}/links`): the patient of this study, who
/// arrived without an ID, is the patient named in the path.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPatientLink {
    /// A study whose patient arrived without an ID.
    pub study_instance_uid: String,
}

/// A provisional patient linked to an identified one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PatientLink {
    /// Its id.
    pub id: String,
    /// The studies of the provisional patient.
    pub study_instance_uids: Vec<String>,
    /// Who linked them.
    pub linked_by: String,
    /// When.
    pub linked_at: String,
    /// When the link was undone, if it was.
    pub unlinked_at: Option<String>,
}

/// Why a consent or grant was refused. Each message says what to fix; none repeats patient data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SharingError {
    /// A field is malformed or out of range.
    #[error("{0}")]
    Invalid(String),
    /// The study, patient, consent or grant does not exist or is not the caller's to use.
    #[error("{0}")]
    NotFound(String),
}

/// Most characters in evidence references and break-glass reasons.
pub const MAX_NOTE: usize = 500;

/// The scope names of a grant request, checked.
pub fn parse_scope(names: &[String]) -> Result<Vec<GrantScope>, SharingError> {
    let mut scope = Vec::new();
    for name in names {
        let s = GrantScope::parse(name).ok_or_else(|| {
            SharingError::Invalid(format!(
                "unknown scope {name:?}: use metadata, images and/or findings"
            ))
        })?;
        if !scope.contains(&s) {
            scope.push(s);
        }
    }
    if scope.is_empty() {
        return Err(SharingError::Invalid(
            "scope is empty: give at least one of metadata, images, findings".into(),
        ));
    }
    Ok(scope)
}

/// A patient grant's `since` as a DICOM date (YYYYMMDD).
pub fn since_as_dicom_date(since: &str) -> Result<String, SharingError> {
    let date: String = since.chars().take(10).filter(|c| *c != '-').collect();
    let ok = date.len() == 8
        && date.bytes().all(|b| b.is_ascii_digit())
        && chrono::NaiveDate::parse_from_str(&date, "%Y%m%d").is_ok();
    if ok {
        Ok(date)
    } else {
        Err(SharingError::Invalid(format!(
            "since {since:?} is not a date: use YYYY-MM-DD or an RFC 3339 time"
        )))
    }
}

/// Checks a consent to record.
pub fn check_consent(c: &NewConsent) -> Result<(), SharingError> {
    if c.evidence.chars().count() > MAX_NOTE || c.evidence.chars().any(char::is_control) {
        return Err(SharingError::Invalid(format!(
            "evidence: at most {MAX_NOTE} characters, no control characters"
        )));
    }
    if let (Some(from), Some(until)) = (c.valid_from, c.valid_until) {
        if until <= from {
            return Err(SharingError::Invalid(
                "valid_until must be after valid_from".into(),
            ));
        }
    }
    Ok(())
}

/// Checks what a grant request says on its own (the store checks what it names).
pub fn check_grant(g: &NewGrant, now: DateTime<Utc>) -> Result<(), SharingError> {
    if g.study_instance_uid.is_some() == g.patient.is_some() {
        return Err(SharingError::Invalid(
            "give either study_instance_uid or patient (with since), not both".into(),
        ));
    }
    if g.study_instance_uid.is_some() && g.since.is_some() {
        return Err(SharingError::Invalid(
            "since goes with a patient grant".into(),
        ));
    }
    if let Some(patient) = &g.patient {
        PatientRef::parse(patient).ok_or_else(|| {
            SharingError::Invalid("patient: use ID or ISSUER|ID (at most 64 characters)".into())
        })?;
    }
    if g.expires_at <= now {
        return Err(SharingError::Invalid(
            "expires_at is not in the future".into(),
        ));
    }
    match (&g.consent_id, &g.break_glass_reason) {
        (Some(_), None) => Ok(()),
        (None, Some(reason))
            if !reason.trim().is_empty()
                && reason.chars().count() <= MAX_NOTE
                && !reason.chars().any(char::is_control) =>
        {
            Ok(())
        }
        (None, Some(_)) => Err(SharingError::Invalid(format!(
            "break_glass_reason: say why, in at most {MAX_NOTE} characters"
        ))),
        _ => Err(SharingError::Invalid(
            "a grant rests on the patient's consent (consent_id) or is break-glass (break_glass_reason), exactly one".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> NewGrant {
        NewGrant {
            to_facility: "B".into(),
            study_instance_uid: Some("1.2.3".into()),
            patient: None,
            since: None,
            scope: vec!["images".into()],
            expires_at: Utc::now() + chrono::TimeDelta::hours(1),
            consent_id: Some("c".into()),
            break_glass_reason: None,
            from_facility: None,
        }
    }

    #[test]
    fn a_grant_needs_exactly_one_of_consent_and_break_glass() {
        assert_eq!(check_grant(&grant(), Utc::now()), Ok(()));
        let both = NewGrant {
            break_glass_reason: Some("unconscious".into()),
            ..grant()
        };
        assert!(check_grant(&both, Utc::now()).is_err());
        let neither = NewGrant {
            consent_id: None,
            ..grant()
        };
        assert!(check_grant(&neither, Utc::now()).is_err());
        let glass = NewGrant {
            consent_id: None,
            break_glass_reason: Some("unconscious, head injury".into()),
            ..grant()
        };
        assert_eq!(check_grant(&glass, Utc::now()), Ok(()));
    }

    #[test]
    fn a_grant_names_a_study_or_a_patient_and_ends_in_the_future() {
        let both = NewGrant {
            patient: Some("123".into()),
            ..grant()
        };
        assert!(check_grant(&both, Utc::now()).is_err());
        let past = NewGrant {
            expires_at: Utc::now() - chrono::TimeDelta::seconds(1),
            ..grant()
        };
        assert!(check_grant(&past, Utc::now()).is_err());
    }

    #[test]
    fn scope_and_since_are_checked() {
        assert!(parse_scope(&[]).is_err());
        assert!(parse_scope(&["pixels".into()]).is_err());
        assert_eq!(
            parse_scope(&["images".into(), "images".into()]),
            Ok(vec![GrantScope::Images])
        );
        assert_eq!(since_as_dicom_date("2025-01-31"), Ok("20250131".into()));
        assert_eq!(
            since_as_dicom_date("2025-01-31T00:00:00Z"),
            Ok("20250131".into())
        );
        assert!(since_as_dicom_date("2025-02-31").is_err());
    }
}
