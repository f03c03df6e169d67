//! The rows of consents and grants (issue #9 items 6 and 7); the rules are in
//! `access/sharing.rs`. Every check and the insert run in one writer transaction, so a refused
//! request writes nothing and two requests cannot both pass a check the other breaks.

use super::db::{params, Connection, OptionalExtension};
use chrono::Utc;

use super::index::{Index, IndexError};
use super::registry::facility_exists;
use super::times::{now as now_text, text as time_text};
use super::visibility::{patient_filter, study_visible};
use crate::access::sharing::{
    check_consent, check_grant, parse_scope, since_as_dicom_date, Consent, ConsentSource, Grant,
    IssuedShareLink, NewConsent, NewGrant, NewPatientLink, NewShareLink, PatientLink, Purpose,
    SharingError,
};
use crate::access::{Action, GrantScope, Principal, Visibility};
use crate::audit::PatientRef;

type Shared<T> = Result<Result<T, SharingError>, IndexError>;

/// A new random id (128 bits, hex).
pub(super) fn new_id() -> Result<String, IndexError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| IndexError::Task(e.to_string()))?;
    Ok(hex::encode(bytes))
}

pub(super) fn patient_key(p: &PatientRef) -> String {
    format!("{}\u{1}{}", p.id, p.issuer)
}

fn not_found_patient() -> SharingError {
    SharingError::NotFound("no such patient among the studies you may see".into())
}

/// The row id of `patient` when `v` shows one of their studies.
fn visible_patient(
    c: &Connection,
    v: &Visibility,
    patient: &PatientRef,
) -> super::db::Result<Option<i64>> {
    let visible = patient_filter(v);
    let params =
        std::iter::once(super::db::Value::Text(patient_key(patient))).chain(visible.params);
    c.prepare_cached(&format!(
        "SELECT p.id FROM patients p WHERE p.patient_key = ? AND {}",
        visible.sql
    ))?
    .query_row(super::db::params_from_iter(params), |r| r.get(0))
    .optional()
}

fn consent_from_row(r: &super::db::Row<'_>) -> super::db::Result<Consent> {
    let purpose: String = r.get(1)?;
    let source: String = r.get(5)?;
    Ok(Consent {
        id: r.get(0)?,
        purpose: Purpose::parse(&purpose).unwrap_or(Purpose::Referral),
        recipient: r.get(2)?,
        valid_from: r.get(3)?,
        valid_until: r.get(4)?,
        source: ConsentSource::parse(&source).unwrap_or(ConsentSource::Paper),
        evidence: r.get(6)?,
        recorded_by: r.get(7)?,
        recorded_at: r.get(8)?,
        revoked_at: r.get(9)?,
    })
}

const CONSENT_SELECT: &str = "SELECT id, purpose, recipient, valid_from, valid_until, source, \
     evidence, recorded_by, recorded_at, revoked_at FROM consents";

impl Index {
    /// Runs `f` in the writer's transaction with the row id of `patient`, when `who` may manage
    /// patients and sees one of their studies; "no such patient" otherwise.
    async fn write_for_patient<T, F>(&self, who: &Principal, patient: PatientRef, f: F) -> Shared<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> super::db::Result<Result<T, SharingError>> + Send + 'static,
    {
        self.admit(who, Action::ManagePatients)?;
        let v = who.visibility(Action::Query);
        self.write(move |c| match visible_patient(c, &v, &patient)? {
            Some(patient_fk) => f(c, patient_fk),
            None => Ok(Err(not_found_patient())),
        })
        .await
    }

    /// [`Index::write_for_patient`] on a read-only connection.
    async fn read_for_patient<T, F>(&self, who: &Principal, patient: PatientRef, f: F) -> Shared<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> super::db::Result<Result<T, SharingError>> + Send + 'static,
    {
        self.admit(who, Action::ManagePatients)?;
        let v = who.visibility(Action::Query);
        self.read(move |c| {
            Ok(match visible_patient(c, &v, &patient)? {
                Some(patient_fk) => f(c, patient_fk)?,
                None => Err(not_found_patient()),
            })
        })
        .await
    }
}

impl Index {
    /// Records a consent of `patient`, whom the caller must see.
    pub async fn record_consent(
        &self,
        who: &Principal,
        patient: PatientRef,
        consent: NewConsent,
    ) -> Shared<Consent> {
        self.admit(who, Action::ManagePatients)?;
        if let Err(e) = check_consent(&consent) {
            return Ok(Err(e));
        }
        let (id, by, facility) = (
            new_id()?,
            who.subject().to_string(),
            who.facility().map(str::to_owned),
        );
        self.write_for_patient(who, patient, move |c, patient_fk| {
            if let Some(recipient) = &consent.recipient {
                if !facility_exists(c, recipient)? {
                    return Ok(Err(SharingError::NotFound(format!(
                        "no facility {recipient}"
                    ))));
                }
            }
            let now = now_text();
            c.prepare_cached(
                "INSERT INTO consents (id, patient_fk, purpose, recipient, valid_from, valid_until, \
                 source, evidence, recorded_by, recorded_facility, recorded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                id,
                patient_fk,
                consent.purpose.as_str(),
                consent.recipient,
                consent.valid_from.map(time_text).unwrap_or_else(|| now.clone()),
                consent.valid_until.map(time_text),
                consent.source.as_str(),
                consent.evidence,
                by,
                facility,
                now
            ])?;
            let stored = c
                .prepare_cached(&format!("{CONSENT_SELECT} WHERE id = ?1"))?
                .query_row([&id], consent_from_row)?;
            Ok(Ok(stored))
        })
        .await
    }

    /// The consents of `patient`, whom the caller must see, newest first.
    pub async fn consents(&self, who: &Principal, patient: PatientRef) -> Shared<Vec<Consent>> {
        self.read_for_patient(who, patient, move |c, patient_fk| {
            let list = c
                .prepare_cached(&format!(
                    "{CONSENT_SELECT} WHERE patient_fk = ?1 ORDER BY recorded_at DESC, id"
                ))?
                .query_map([patient_fk], consent_from_row)?
                .collect::<Result<_, _>>()?;
            Ok(Ok(list))
        })
        .await
    }

    /// Revokes a consent of `patient`; the grants resting on it stop at once.
    pub async fn revoke_consent(
        &self,
        who: &Principal,
        patient: PatientRef,
        id: String,
    ) -> Shared<Consent> {
        let by = who.subject().to_string();
        self.write_for_patient(who, patient, move |c, patient_fk| {
            let changed = c
                .prepare_cached(
                    "UPDATE consents SET revoked_at = COALESCE(revoked_at, ?1), \
                     revoked_by = COALESCE(revoked_by, ?2) WHERE id = ?3 AND patient_fk = ?4",
                )?
                .execute(params![now_text(), by, id, patient_fk])?;
            if changed == 0 {
                return Ok(Err(SharingError::NotFound(
                    "no such consent of this patient".into(),
                )));
            }
            Ok(Ok(c
                .prepare_cached(&format!("{CONSENT_SELECT} WHERE id = ?1"))?
                .query_row([&id], consent_from_row)?))
        })
        .await
    }

    /// Makes a grant of the caller's facility's data (a system-wide caller names the facility).
    pub async fn create_grant(&self, who: &Principal, grant: NewGrant) -> Shared<Grant> {
        self.admit(who, Action::Grant)?;
        let now = Utc::now();
        if let Err(e) = check_grant(&grant, now) {
            return Ok(Err(e));
        }
        let scope = match parse_scope(&grant.scope) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let from = match granting_facility(who, &grant) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        let since = match grant.since.as_deref().map(since_as_dicom_date).transpose() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let (id, by) = (new_id()?, who.subject().to_string());
        self.write(move |c| {
            insert_grant(
                c,
                &id,
                &by,
                &from,
                grant,
                Recipient::Facility,
                &scope,
                since,
            )
        })
        .await
    }

    /// Makes a share link to one of the caller's facility's studies: a grant with no recipient
    /// facility and a token of its own.
    pub async fn create_share_link(
        &self,
        who: &Principal,
        link: NewShareLink,
    ) -> Shared<IssuedShareLink> {
        self.admit(who, Action::Grant)?;
        let grant = link.as_grant();
        let now = Utc::now();
        let checked = check_grant(&grant, now)
            .and_then(|()| parse_scope(&grant.scope))
            .and_then(|scope| Ok((scope, granting_facility(who, &grant)?)));
        let (scope, from) = match checked {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let (id, by) = (new_id()?, who.subject().to_string());
        let (token, hash) = crate::auth::share_link::issue(&id)
            .map_err(|e| IndexError::Task(format!("no random source: {e}")))?;
        let made = self
            .write(move |c| {
                insert_grant(
                    c,
                    &id,
                    &by,
                    &from,
                    grant,
                    Recipient::ShareLink(hash),
                    &scope,
                    None,
                )
            })
            .await?;
        Ok(made.map(|g| IssuedShareLink {
            path: format!("/share/{token}"),
            id: g.id,
            token,
            expires_at: g.expires_at,
        }))
    }

    /// The grant a share link names, when it is in force and `presented` is its token: the
    /// facility whose study it opens and the study. One primary-key lookup, on the calling
    /// thread.
    pub fn share_link_now(
        &self,
        who: &Principal,
        grant_id: &str,
        presented: &str,
    ) -> Result<Option<(String, String)>, IndexError> {
        self.admit(who, Action::Authenticate)?;
        let found = self.read_now(|c| {
            Ok(c.prepare_cached(
                "SELECT g.share_token_hash, g.from_facility, g.study_instance_uid FROM grants g \
                 LEFT JOIN consents cs ON cs.id = g.consent_id \
                 WHERE g.id = ?1 AND g.share_token_hash IS NOT NULL AND g.revoked_at IS NULL \
                 AND g.expires_at > ?2 AND cs.revoked_at IS NULL",
            )?
            .query_row(params![grant_id, now_text()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()?)
        })?;
        Ok(found
            .filter(|(hash, _, _)| crate::auth::share_link::matches(presented, hash))
            .map(|(_, facility, study)| (facility, study)))
    }

    /// The grants the caller's facility gave or received (a system-wide caller: all), newest
    /// first, revoked and expired ones included.
    pub async fn grants(&self, who: &Principal) -> Result<Vec<Grant>, IndexError> {
        self.admit(who, Action::Grant)?;
        let facility = (!who.is_system_wide()).then(|| who.facility().unwrap_or("").to_string());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "{GRANT_SELECT} WHERE \
                 (CAST(?1 AS TEXT) IS NULL OR g.from_facility = ?1 OR g.to_facility = ?1) \
                 ORDER BY g.created_at DESC, g.id"
            ))?
            .query_map([facility], grant_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Revokes a grant the caller's facility gave (a system-wide caller: any).
    pub async fn revoke_grant(&self, who: &Principal, id: String) -> Shared<()> {
        self.admit(who, Action::Grant)?;
        let facility = (!who.is_system_wide()).then(|| who.facility().unwrap_or("").to_string());
        let by = who.subject().to_string();
        self.write(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE grants SET revoked_at = COALESCE(revoked_at, ?1), \
                     revoked_by = COALESCE(revoked_by, ?2) \
                     WHERE id = ?3 AND (CAST(?4 AS TEXT) IS NULL OR from_facility = ?4)",
                )?
                .execute(params![now_text(), by, id, facility])?;
            Ok(if changed == 0 {
                Err(SharingError::NotFound(
                    "no such grant given by your facility".into(),
                ))
            } else {
                Ok(())
            })
        })
        .await
    }
}

/// Patients who arrived without an ID are keyed per study (`store/index.rs`).
pub(super) const PROVISIONAL_KEY_PREFIX: &str = "\u{1}unidentified\u{1}";

fn link_from_row(c: &Connection, r: &super::db::Row<'_>) -> super::db::Result<PatientLink> {
    let provisional: i64 = r.get(1)?;
    let studies = c
        .prepare_cached("SELECT study_instance_uid FROM studies WHERE patient_fk = ?1 ORDER BY id")?
        .query_map([provisional], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(PatientLink {
        id: r.get(0)?,
        study_instance_uids: studies,
        linked_by: r.get(2)?,
        linked_at: r.get(3)?,
        unlinked_at: r.get(4)?,
    })
}

const LINK_SELECT: &str =
    "SELECT id, provisional_fk, linked_by, linked_at, unlinked_at FROM patient_links";

impl Index {
    /// Links the provisional patient of `link`'s study to `patient`; both must be the caller's
    /// to see. The provisional patient's studies then answer queries, grants and consents with
    /// the patient's.
    pub async fn link_patient(
        &self,
        who: &Principal,
        patient: PatientRef,
        link: NewPatientLink,
    ) -> Shared<PatientLink> {
        let (id, by) = (new_id()?, who.subject().to_string());
        let v = who.visibility(Action::Query);
        self.write_for_patient(who, patient, move |c, patient_fk| {
            let study = c
                .prepare_cached(
                    "SELECT p.id, p.patient_key FROM studies st JOIN patients p ON p.id = st.patient_fk \
                     WHERE st.study_instance_uid = ?1",
                )?
                .query_row([&link.study_instance_uid], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()?;
            let visible = study.is_some() && study_visible(c, &v, &link.study_instance_uid)?;
            let Some((provisional, key)) = study.filter(|_| visible) else {
                return Ok(Err(SharingError::NotFound(
                    "no such study among those you may see".into(),
                )));
            };
            if !key.starts_with(PROVISIONAL_KEY_PREFIX) {
                return Ok(Err(SharingError::Invalid(
                    "the study's patient has an ID: only patients who arrived without one are linked".into(),
                )));
            }
            let live = c
                .prepare_cached(
                    "SELECT 1 FROM patient_links WHERE provisional_fk = ?1 AND unlinked_at IS NULL",
                )?
                .exists([provisional])?;
            if live {
                return Ok(Err(SharingError::Invalid(
                    "the study's patient is linked already: undo that link first".into(),
                )));
            }
            c.prepare_cached(
                "INSERT INTO patient_links (id, provisional_fk, patient_fk, linked_by, linked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, provisional, patient_fk, by, now_text()])?;
            let row = c
                .prepare_cached(&format!("{LINK_SELECT} WHERE id = ?1"))?
                .query_row([&id], |r| link_from_row(c, r))?;
            Ok(Ok(row))
        })
        .await
    }

    /// The links of `patient`, undone ones included, newest first.
    pub async fn patient_links(
        &self,
        who: &Principal,
        patient: PatientRef,
    ) -> Shared<Vec<PatientLink>> {
        self.read_for_patient(who, patient, move |c, patient_fk| {
            let mut stmt = c.prepare_cached(&format!(
                "{LINK_SELECT} WHERE patient_fk = ?1 ORDER BY linked_at DESC, id"
            ))?;
            let links = stmt
                .query_map([patient_fk], |r| link_from_row(c, r))?
                .collect::<Result<_, _>>()?;
            Ok(Ok(links))
        })
        .await
    }

    /// The unlinked provisional patients the caller may see who may be `patient`: the same
    /// folded name, birth date and sex, or `patient`'s ID among their other IDs (issue #12).
    /// Read-only: a person confirms with [`Index::link_patient`].
    pub async fn link_suggestions(
        &self,
        who: &Principal,
        patient: PatientRef,
    ) -> Shared<Vec<super::names::LinkSuggestion>> {
        let v = who.visibility(Action::Query);
        self.read_for_patient(who, patient, move |c, patient_fk| {
            Ok(Ok(super::names::link_suggestions(c, &v, patient_fk)?))
        })
        .await
    }

    /// Undoes a link of `patient`: the provisional patient answers on its own again.
    pub async fn unlink_patient(
        &self,
        who: &Principal,
        patient: PatientRef,
        id: String,
    ) -> Shared<PatientLink> {
        let by = who.subject().to_string();
        self.write_for_patient(who, patient, move |c, patient_fk| {
            let changed = c
                .prepare_cached(
                    "UPDATE patient_links SET unlinked_at = ?1, unlinked_by = ?2 \
                     WHERE id = ?3 AND patient_fk = ?4 AND unlinked_at IS NULL",
                )?
                .execute(params![now_text(), by, id, patient_fk])?;
            if changed == 0 {
                return Ok(Err(SharingError::NotFound(
                    "no such live link of this patient".into(),
                )));
            }
            Ok(Ok(c
                .prepare_cached(&format!("{LINK_SELECT} WHERE id = ?1"))?
                .query_row([&id], |r| link_from_row(c, r))?))
        })
        .await
    }
}

const GRANT_SELECT: &str = "SELECT g.id, g.from_facility, g.to_facility, g.study_instance_uid, \
     p.patient_id, p.issuer_of_patient_id, g.since, g.scope_metadata, g.scope_images, \
     g.scope_findings, g.purpose, g.expires_at, g.consent_id, g.break_glass_reason, g.created_by, \
     g.created_at, g.revoked_at FROM grants g LEFT JOIN patients p ON p.id = g.patient_fk";

fn grant_from_row(r: &super::db::Row<'_>) -> super::db::Result<Grant> {
    let patient = match (
        r.get::<_, Option<String>>(4)?,
        r.get::<_, Option<String>>(5)?,
    ) {
        (Some(id), Some(issuer)) if !issuer.is_empty() => Some(format!("{issuer}|{id}")),
        (Some(id), _) => Some(id),
        _ => None,
    };
    let scope = [
        (7, GrantScope::Metadata),
        (8, GrantScope::Images),
        (9, GrantScope::Findings),
    ]
    .into_iter()
    .filter_map(|(i, s)| match r.get::<_, bool>(i) {
        Ok(true) => Some(Ok(s.as_str().to_string())),
        Ok(false) => None,
        Err(e) => Some(Err(e)),
    })
    .collect::<super::db::Result<Vec<_>>>()?;
    let purpose: String = r.get(10)?;
    Ok(Grant {
        id: r.get(0)?,
        from_facility: r.get(1)?,
        to_facility: r.get(2)?,
        study_instance_uid: r.get(3)?,
        patient,
        since: r.get(6)?,
        scope,
        purpose: Purpose::parse(&purpose).unwrap_or(Purpose::Emergency),
        expires_at: r.get(11)?,
        consent_id: r.get(12)?,
        break_glass_reason: r.get(13)?,
        created_by: r.get(14)?,
        created_at: r.get(15)?,
        revoked_at: r.get(16)?,
    })
}

/// The checks that need the index, then the row, in the writer's transaction.
/// The facility whose data `grant` opens: the caller's own; a system-wide caller names it.
fn granting_facility(who: &Principal, grant: &NewGrant) -> Result<String, SharingError> {
    match (who.facility(), &grant.from_facility) {
        (Some(own), None) => Ok(own.to_string()),
        (Some(own), Some(named)) if own == named => Ok(own.to_string()),
        (None, Some(named)) if who.is_system_wide() => Ok(named.clone()),
        (None, None) => Err(SharingError::Invalid(
            "a system-wide caller names the facility whose data it grants: from_facility".into(),
        )),
        _ => Err(SharingError::Invalid(
            "from_facility: a facility grants only its own data".into(),
        )),
    }
}

/// A grant about to be written: to a facility, or (a share link) to whoever holds the token
/// whose hash this is.
enum Recipient {
    Facility,
    ShareLink(String),
}

#[allow(clippy::too_many_arguments)] // one transaction's inputs, each named at the one call site
fn insert_grant(
    c: &Connection,
    id: &str,
    by: &str,
    from: &str,
    grant: NewGrant,
    recipient: Recipient,
    scope: &[GrantScope],
    since: Option<String>,
) -> super::db::Result<Result<Grant, SharingError>> {
    let (to, share_hash) = match recipient {
        Recipient::Facility => (Some(grant.to_facility.as_str()), None),
        Recipient::ShareLink(hash) => (None, Some(hash)),
    };
    if to == Some(from) {
        return Ok(Err(SharingError::Invalid(
            "to_facility is the granting facility itself: name the facility that should see the data".into(),
        )));
    }
    if let Some(to) = to.filter(|to| !facility_exists(c, to).unwrap_or(false)) {
        return Ok(Err(SharingError::NotFound(format!("no facility {to}"))));
    }
    // What the grant names must be the granting facility's: its study or a patient it holds.
    let own = Visibility::Facility {
        facility: from.to_string(),
        own: true,
        purposes: &[],
        scope: GrantScope::Metadata,
    };
    let patient_fk: i64 = match (&grant.study_instance_uid, &grant.patient) {
        (Some(study), _) => {
            let found = c
                .prepare_cached(
                    "SELECT st.patient_fk FROM studies st JOIN study_facilities sf \
                     ON sf.study_fk = st.id WHERE st.study_instance_uid = ?1 AND sf.facility = ?2",
                )?
                .query_row(params![study, from], |r| r.get(0))
                .optional()?;
            match found {
                Some(p) => p,
                None => {
                    return Ok(Err(SharingError::NotFound(format!(
                        "facility {from} holds no such study"
                    ))))
                }
            }
        }
        (None, Some(patient)) => {
            let Some(patient) = PatientRef::parse(patient) else {
                return Ok(Err(not_found_patient()));
            };
            match visible_patient(c, &own, &patient)? {
                Some(p) => p,
                None => return Ok(Err(not_found_patient())),
            }
        }
        (None, None) => return Ok(Err(SharingError::Invalid("nothing to grant".into()))),
    };
    let purpose = match &grant.consent_id {
        None => Purpose::Emergency,
        Some(consent_id) => match consent_for(c, consent_id, patient_fk, to)? {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        },
    };
    let has = |s: GrantScope| scope.contains(&s);
    c.prepare_cached(
        "INSERT INTO grants (id, from_facility, to_facility, study_instance_uid, patient_fk, since, \
         scope_metadata, scope_images, scope_findings, purpose, expires_at, consent_id, \
         break_glass_reason, created_by, created_at, share_token_hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        id,
        from,
        to,
        grant.study_instance_uid,
        grant.patient.as_ref().map(|_| patient_fk),
        since,
        has(GrantScope::Metadata),
        has(GrantScope::Images),
        has(GrantScope::Findings),
        purpose.as_str(),
        time_text(grant.expires_at),
        grant.consent_id,
        grant.break_glass_reason,
        by,
        now_text(),
        share_hash
    ])?;
    if grant.break_glass_reason.is_some() {
        tracing::warn!(
            grant = id,
            from,
            to = to.unwrap_or("a share link"),
            "break-glass grant made: review it"
        );
    }
    Ok(Ok(c
        .prepare_cached(&format!("{GRANT_SELECT} WHERE g.id = ?1"))?
        .query_row([id], grant_from_row)?))
}

/// What decides whether a consent can carry a grant.
struct ConsentTerms {
    purpose: String,
    recipient: Option<String>,
    until: Option<String>,
    revoked: Option<String>,
}

/// The purpose of consent `id` when it is this patient's, not revoked, and allows `to`.
fn consent_for(
    c: &Connection,
    id: &str,
    patient_fk: i64,
    to: Option<&str>,
) -> super::db::Result<Result<Purpose, SharingError>> {
    let row = c
        .prepare_cached(
            "SELECT purpose, recipient, valid_until, revoked_at FROM consents \
             WHERE id = ?1 AND (patient_fk = ?2 OR patient_fk IN (SELECT l.patient_fk \
             FROM patient_links l WHERE l.provisional_fk = ?2 AND l.unlinked_at IS NULL))",
        )?
        .query_row(params![id, patient_fk], |r| {
            Ok(ConsentTerms {
                purpose: r.get(0)?,
                recipient: r.get(1)?,
                until: r.get(2)?,
                revoked: r.get(3)?,
            })
        })
        .optional()?;
    let Some(ConsentTerms {
        purpose,
        recipient,
        until,
        revoked,
    }) = row
    else {
        return Ok(Err(SharingError::NotFound(
            "no such consent of this patient".into(),
        )));
    };
    if revoked.is_some() || until.is_some_and(|u| u <= now_text()) {
        return Ok(Err(SharingError::Invalid(
            "the consent is revoked or has ended".into(),
        )));
    }
    // A share link reaches a doctor of no registered facility: only a consent to any facility
    // covers it.
    if recipient.is_some_and(|r| Some(r.as_str()) != to) {
        return Ok(Err(SharingError::Invalid(
            "the consent does not allow this recipient".into(),
        )));
    }
    Ok(Ok(Purpose::parse(&purpose).unwrap_or(Purpose::Referral)))
}
