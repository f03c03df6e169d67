//! What each DIMSE operation is, for the audit trail (issue #9 item 9). C-FIND, C-GET and
//! C-MOVE are an event each, with the study and patient their identifier names; C-STOREs are
//! gathered per study over the association and recorded when it ends, one event per study as
//! DICOM's own audit message "DICOM Instances Transferred" does (PS3.15 A.5.3.12), so that
//! auditing costs a modality's push one write per study, not one per image.

use std::collections::BTreeMap;

use dicom_dictionary_std::tags;

use super::message::status;
use crate::access::Principal;
use crate::audit::{AuditAction, AuditOutcome, NewAuditEvent, PatientRef};
use crate::store::Index;

/// Studies one association may accumulate before their events are written early (memory bound).
const MAX_PENDING_STUDIES: usize = 256;

/// The outcome a DIMSE status reads as (PS3.7 C: 0000 success, FF00/FF01 pending, Bxxx warning).
pub fn outcome_of(status_code: u16) -> AuditOutcome {
    match status_code {
        status::SUCCESS => AuditOutcome::Success,
        s if s & 0xF000 == 0xB000 => AuditOutcome::Success,
        status::NOT_AUTHORIZED => AuditOutcome::Denied,
        _ => AuditOutcome::Failed,
    }
}

/// The study and patient a query or retrieve identifier names (single values only: a wildcard
/// or a list names no one study).
pub fn identifier_subject(
    transfer_syntax: &str,
    identifier: &bytes::Bytes,
) -> (Option<String>, Option<PatientRef>) {
    let Ok(obj) = super::find::decode_identifier(transfer_syntax, identifier) else {
        return (None, None);
    };
    let value = |tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|v| v.trim_matches(['\0', ' ']).to_string())
            .filter(|v| !v.is_empty() && !v.contains(['*', '?', '\\']))
    };
    let patient = value(tags::PATIENT_ID).map(|id| PatientRef {
        id,
        issuer: value(tags::ISSUER_OF_PATIENT_ID).unwrap_or_default(),
    });
    (value(tags::STUDY_INSTANCE_UID), patient)
}

/// The C-STOREs of one association, by study, until they are recorded.
#[derive(Debug, Default)]
pub struct StoredStudies {
    by_study: BTreeMap<String, (u32, u32)>,
    unreadable: u32,
}

impl StoredStudies {
    /// Notes one C-STORE of `study` (`None`: its data set did not parse) with `status_code`.
    pub fn note(&mut self, study: Option<String>, status_code: u16) -> bool {
        let ok = outcome_of(status_code) == AuditOutcome::Success;
        match study {
            Some(study) => {
                let counts = self.by_study.entry(study).or_default();
                if ok {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
            }
            None => self.unreadable += 1,
        }
        self.by_study.len() >= MAX_PENDING_STUDIES
    }

    /// Records an event per study (and one for unreadable data sets) and forgets them.
    pub async fn record(&mut self, index: &Index, who: &Principal) {
        let studies = std::mem::take(&mut self.by_study);
        for (study, (stored, refused)) in studies {
            let outcome = if stored > 0 {
                AuditOutcome::Success
            } else {
                AuditOutcome::Failed
            };
            let detail = format!("C-STORE {stored} stored, {refused} refused");
            record(
                index,
                event(who, AuditAction::Store, outcome, Some(study), None, detail),
            )
            .await;
        }
        let unreadable = std::mem::take(&mut self.unreadable);
        if unreadable > 0 {
            let detail = format!("C-STORE {unreadable} refused before a study could be read");
            record(
                index,
                event(
                    who,
                    AuditAction::Store,
                    AuditOutcome::Failed,
                    None,
                    None,
                    detail,
                ),
            )
            .await;
        }
    }
}

/// An event of `who`.
pub fn event(
    who: &Principal,
    action: AuditAction,
    outcome: AuditOutcome,
    study: Option<String>,
    patient: Option<PatientRef>,
    detail: String,
) -> NewAuditEvent {
    NewAuditEvent {
        actor: who.clone(),
        action,
        outcome,
        study_instance_uid: study,
        patient,
        detail,
    }
}

/// Appends `event`; a failure to queue it is logged, never fails the association.
pub async fn record(index: &Index, event: NewAuditEvent) {
    if let Err(e) = index.record_audit(event).await {
        tracing::error!(error = %e, "an audit event could not be recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_successes_and_refusals_are_told_apart() {
        assert_eq!(outcome_of(0x0000), AuditOutcome::Success);
        assert_eq!(outcome_of(0xB007), AuditOutcome::Success);
        assert_eq!(outcome_of(0x0124), AuditOutcome::Denied);
        assert_eq!(outcome_of(0xA700), AuditOutcome::Failed);
    }

    #[test]
    fn stores_are_gathered_per_study() {
        let mut s = StoredStudies::default();
        s.note(Some("1.2".into()), 0);
        s.note(Some("1.2".into()), 0xA700);
        s.note(Some("1.3".into()), 0);
        s.note(None, 0xC000);
        assert_eq!(s.by_study["1.2"], (1, 1));
        assert_eq!(s.by_study.len(), 2);
        assert_eq!(s.unreadable, 1);
    }
}
