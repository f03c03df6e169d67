//! Priors from peers (issue #10 item 5): a clinician asks a peer for a study or a patient's
//! studies in a period; what the peer's grants let this facility see is retrieved instance by
//! instance and filed here through the one ingest path, as the caller's facility's.
//!
//! The peer decides: tramy presents the credential the peer issued to this facility (the peer's
//! `token_file`), so the peer's own grants (issue #9) scope what its QIDO-RS lists and its
//! WADO-RS returns, and the peer audits each request itself. Here, each study retrieved is one
//! `forward` audit event.
//!
//! Bounded: at most `max_studies` studies and `max_instances` instances per call, one instance in
//! flight at a time through the staging area, and one deadline for the whole call. An instance
//! already stored here (by SOP Instance UID) is not fetched; one fetched whose SHA-256 matches
//! what is stored is a duplicate for ingest, which writes nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use tokio::time::Instant;

use super::dicomweb_client::{PeerCallError, PeerClient, Throttle};
use super::dicomweb_retrieve::ListedInstance;
use super::peer::{Peer, PeerKind};
use crate::access::Principal;
use crate::audit::{AuditAction, AuditOutcome, NewAuditEvent, PatientRef};
use crate::auth::Role;
use crate::dicom::{SeriesInstanceUid, SopInstanceUid, StudyInstanceUid};
use crate::ingest::{Archive, Expected, IngestOutcome, Sender};
use crate::store::IndexError;

/// Most instances of one study listed per call (a peer's QIDO-RS answer stays well under the
/// client's answer cap).
const MAX_LISTED: usize = 10_000;

/// Retrievals running at once on this server; more are refused (503) rather than queued, so
/// that callers cannot pile up threads and connections to peers.
const MAX_RUNNING: usize = 4;
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_RUNNING);

/// What to ask the peer for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriorsQuery {
    /// One study.
    Study(StudyInstanceUid),
    /// A patient's studies, optionally within a period of study dates (inclusive).
    Patient {
        /// PatientID and IssuerOfPatientID (empty: any issuer).
        patient: PatientRef,
        /// First study date.
        since: Option<NaiveDate>,
        /// Last study date.
        until: Option<NaiveDate>,
    },
}

/// Why a retrieval could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PriorsError {
    /// The request is not valid; the message says how to write it.
    #[error("{0}")]
    Invalid(String),
    /// Only a facility's clinician or admin, or a superadmin, fetches priors.
    #[error(
        "fetching priors from a peer needs a clinician or admin of a facility, or a superadmin"
    )]
    Forbidden,
    /// The peer cannot be asked this way.
    #[error("{0}")]
    Unsupported(String),
    /// The peer could not be asked, or refused the query.
    #[error("{0}")]
    Peer(PeerCallError),
    /// Too many retrievals are running; try again shortly.
    #[error("{MAX_RUNNING} retrievals from peers are running; try again in a minute")]
    Busy,
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// How much one call may do.
#[derive(Debug, Clone, Copy)]
pub struct RetrieveLimits {
    /// Most studies retrieved.
    pub max_studies: usize,
    /// Most instances fetched (those found here already do not count).
    pub max_instances: usize,
    /// The whole call's time limit.
    pub timeout: Duration,
    /// Largest instance, in bytes (the archive's own limit).
    pub max_instance_bytes: u64,
}

/// An instance that could not be retrieved, and why (no patient data).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FailedInstance {
    /// SOP Instance UID, as the peer listed it.
    pub sop_instance_uid: String,
    /// Why.
    pub reason: String,
}

/// What became of one study.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StudyRetrieval {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Instances fetched and stored here now.
    pub retrieved: usize,
    /// Instances stored here already (not fetched, or fetched and identical).
    pub already_here: usize,
    /// Instances not retrieved, with reasons.
    pub failed: Vec<FailedInstance>,
}

/// The answer of a retrieval.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RetrieveReport {
    /// The peer asked.
    pub peer: String,
    /// One entry per study the peer listed (none: nothing the peer lets this facility see
    /// matched).
    pub studies: Vec<StudyRetrieval>,
    /// Totals over the studies.
    pub retrieved: usize,
    /// Totals over the studies.
    pub already_here: usize,
    /// Totals over the studies.
    pub failed: usize,
    /// The peer matched more studies than one call takes: narrow the period or ask again.
    pub more_studies: bool,
    /// The call's time limit or instance limit stopped it; what was stored stays, and asking
    /// again continues where it stopped (what is here is not fetched again).
    pub incomplete: bool,
}

impl PriorsQuery {
    /// From the request's fields: a study, or a patient (`ISSUER|ID` or `ID`) with an optional
    /// period (`YYYYMMDD`).
    pub fn parse(
        study: Option<&str>,
        patient: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<PriorsQuery, PriorsError> {
        let invalid = |m: &str| Err(PriorsError::Invalid(m.to_string()));
        match (study, patient) {
            (Some(study), None) => {
                if since.is_some() || until.is_some() {
                    return invalid("since and until go with patient, not with study");
                }
                StudyInstanceUid::new(study)
                    .map(PriorsQuery::Study)
                    .map_err(|e| PriorsError::Invalid(format!("study: {e}")))
            }
            (None, Some(patient)) => {
                // An exact ID: a wildcard would ask for every patient the peer allows.
                if patient.contains(['*', '?']) {
                    return invalid("patient: give an exact ID, without * or ?");
                }
                let patient = PatientRef::parse(patient).ok_or_else(|| {
                    PriorsError::Invalid(
                        "patient: write ISSUER|ID or ID (at most 64 characters, no backslash)"
                            .into(),
                    )
                })?;
                let (since, until) = (date(since, "since")?, date(until, "until")?);
                if let (Some(a), Some(b)) = (since, until) {
                    if a > b {
                        return invalid("since is after until");
                    }
                }
                Ok(PriorsQuery::Patient {
                    patient,
                    since,
                    until,
                })
            }
            _ => invalid("give exactly one of study and patient"),
        }
    }

    /// QIDO-RS matching keys (PS3.18 8.3.4; a StudyDate range, PS3.4 C.2.2.2.5).
    fn qido_params(&self) -> Vec<(&'static str, String)> {
        match self {
            PriorsQuery::Study(uid) => vec![("StudyInstanceUID", uid.to_string())],
            PriorsQuery::Patient {
                patient,
                since,
                until,
            } => {
                let mut p = vec![("PatientID", patient.id.clone())];
                if !patient.issuer.is_empty() {
                    p.push(("IssuerOfPatientID", patient.issuer.clone()));
                }
                if since.is_some() || until.is_some() {
                    let d = |d: &Option<NaiveDate>| {
                        d.map(|d| d.format("%Y%m%d").to_string())
                            .unwrap_or_default()
                    };
                    p.push(("StudyDate", format!("{}-{}", d(since), d(until))));
                }
                p
            }
        }
    }
}

fn date(text: Option<&str>, field: &str) -> Result<Option<NaiveDate>, PriorsError> {
    text.map(|t| {
        NaiveDate::parse_from_str(t.trim(), "%Y%m%d")
            .map_err(|_| PriorsError::Invalid(format!("{field}: write a date as YYYYMMDD")))
    })
    .transpose()
}

/// Whether `who` may fetch priors: a facility's clinician or admin (filed as its facility's),
/// or a superadmin (filed under no facility).
pub fn may_retrieve(who: &Principal) -> bool {
    who.roles().contains(&Role::Superadmin)
        || (who.facility().is_some()
            && who
                .roles()
                .iter()
                .any(|r| matches!(r, Role::Clinician | Role::Admin)))
}

/// Fetches what `query` matches at `peer` and files it here as `who`'s.
pub async fn retrieve(
    archive: &Archive,
    peer: Peer,
    who: &Principal,
    query: &PriorsQuery,
    limits: RetrieveLimits,
) -> Result<RetrieveReport, PriorsError> {
    if !may_retrieve(who) {
        return Err(PriorsError::Forbidden);
    }
    if peer.kind == PeerKind::Dimse {
        return Err(PriorsError::Unsupported(format!(
            "peer {} is a DIMSE peer: fetching priors over C-FIND/C-GET is not available yet; give it a dicomweb_url",
            peer.name
        )));
    }
    let _running = RUNNING.try_acquire().map_err(|_| PriorsError::Busy)?;
    let deadline = Instant::now() + limits.timeout;
    let client = PeerClient::new(peer.clone(), Arc::new(Throttle::new(None)));
    let params = query.qido_params();
    let asked = limits.max_studies.max(1);
    let find = {
        let client = client.clone();
        blocking(move || client.find_studies(&params, asked + 1))
    };
    let mut studies = tokio::time::timeout_at(deadline, find)
        .await
        .map_err(|_| {
            PriorsError::Peer(PeerCallError::Transient(format!(
                "peer {} did not answer the query in time",
                peer.name
            )))
        })?
        .map_err(PriorsError::Peer)?;
    let more_studies = studies.len() > asked;
    studies.truncate(asked);
    let mut run = Run {
        archive,
        client,
        who,
        sender: Sender {
            principal: who.clone(),
            source: format!("peer:{}", peer.name),
            address: peer.api_base().unwrap_or_default(),
            // Their Patient IDs without an issuer are the peer facility's local IDs.
            origin_facility: Some(peer.facility.clone()),
        },
        deadline,
        budget: limits.max_instances,
        max_instance_bytes: limits.max_instance_bytes,
        incomplete: false,
    };
    let mut report = RetrieveReport {
        peer: peer.name.clone(),
        studies: Vec::with_capacity(studies.len()),
        retrieved: 0,
        already_here: 0,
        failed: 0,
        more_studies,
        incomplete: false,
    };
    for study in studies {
        let done = run.study(&study).await?;
        report.retrieved += done.retrieved;
        report.already_here += done.already_here;
        report.failed += done.failed.len();
        report.studies.push(done);
    }
    report.incomplete = run.incomplete;
    Ok(report)
}

/// One call's state.
struct Run<'a> {
    archive: &'a Archive,
    client: PeerClient,
    who: &'a Principal,
    sender: Sender,
    deadline: Instant,
    /// Instances this call may still fetch.
    budget: usize,
    max_instance_bytes: u64,
    incomplete: bool,
}

impl Run<'_> {
    /// Retrieves one study's instances and audits it.
    async fn study(&mut self, study: &str) -> Result<StudyRetrieval, PriorsError> {
        let mut done = StudyRetrieval {
            study_instance_uid: study.to_string(),
            retrieved: 0,
            already_here: 0,
            failed: Vec::new(),
        };
        let listed = match self.list(study).await {
            Ok(l) => l,
            Err(reason) => {
                done.failed.push(FailedInstance {
                    sop_instance_uid: String::new(),
                    reason,
                });
                self.audit(&done).await?;
                return Ok(done);
            }
        };
        for instance in listed {
            match self.instance(study, &instance).await? {
                Ok(true) => done.retrieved += 1,
                Ok(false) => done.already_here += 1,
                Err(reason) => done.failed.push(FailedInstance {
                    sop_instance_uid: instance.sop,
                    reason,
                }),
            }
        }
        self.audit(&done).await?;
        Ok(done)
    }

    /// The study's instances at the peer (what its grants show), with valid UIDs.
    async fn list(&mut self, study: &str) -> Result<Vec<ListedInstance>, String> {
        if StudyInstanceUid::new(study).is_err() {
            return Err("the peer listed a study whose UID is not valid".into());
        }
        let client = self.client.clone();
        let (uid, limit) = (study.to_string(), MAX_LISTED + 1);
        let listed = tokio::time::timeout_at(
            self.deadline,
            blocking(move || client.study_instances(&uid, limit)),
        )
        .await;
        match listed {
            Err(_) => {
                self.incomplete = true;
                Err("not attempted: this call's time limit was reached; ask again".into())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(mut l)) => {
                if l.len() > MAX_LISTED {
                    // The rest waits for the next call, once these are here.
                    self.incomplete = true;
                    l.truncate(MAX_LISTED);
                }
                Ok(l.into_iter()
                    .filter(|i| {
                        SeriesInstanceUid::new(&i.series).is_ok()
                            && SopInstanceUid::new(&i.sop).is_ok()
                    })
                    .collect())
            }
        }
    }

    /// One instance: `Ok(true)` stored now, `Ok(false)` here already, `Err` why not.
    async fn instance(
        &mut self,
        study: &str,
        instance: &ListedInstance,
    ) -> Result<Result<bool, String>, PriorsError> {
        let sop =
            SopInstanceUid::new(&instance.sop).map_err(|e| PriorsError::Invalid(e.to_string()))?;
        if self
            .archive
            .index()
            .instance(self.who, &sop)
            .await?
            .is_some()
        {
            return Ok(Ok(false));
        }
        if self.budget == 0 || Instant::now() >= self.deadline {
            self.incomplete = true;
            return Ok(Err(
                "not attempted: this call's instance or time limit was reached; ask again".into(),
            ));
        }
        self.budget -= 1;
        // A transfer between facilities that breaks off is tried once more before it is
        // reported (links drop; fetching an instance again is harmless).
        let mut attempt = 0;
        let received = loop {
            attempt += 1;
            let fetch = self.client.fetch_instance(
                &self.archive.staging,
                study,
                instance,
                self.max_instance_bytes,
            );
            match tokio::time::timeout_at(self.deadline, fetch).await {
                Err(_) => {
                    self.incomplete = true;
                    return Ok(Err(
                        "this call's time limit was reached while fetching it; ask again".into(),
                    ));
                }
                Ok(Err(e)) if attempt < 2 => {
                    tracing::warn!(error = %e, "fetching a prior instance failed; trying once more");
                }
                Ok(Err(e)) => return Ok(Err(e.to_string())),
                Ok(Ok(r)) => break r,
            }
        };
        let expected = Expected {
            study_instance_uid: Some(study),
            sop_instance_uid: Some(&instance.sop),
            ..Expected::NOTHING
        };
        Ok(
            match self.archive.ingest(received, &self.sender, &expected).await {
                Ok(r) => match r.outcome {
                    IngestOutcome::Stored | IngestOutcome::Replaced => Ok(true),
                    IngestOutcome::Duplicate => Ok(false),
                    IngestOutcome::ConflictKept => Err(
                        "another data set is stored here under this SOP Instance UID and was kept"
                            .into(),
                    ),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "a retrieved instance was refused");
                    Err(e.to_string())
                }
            },
        )
    }

    /// One `forward` event for the study: the peer and the counts, no patient data.
    async fn audit(&self, done: &StudyRetrieval) -> Result<(), PriorsError> {
        let outcome = if done.failed.is_empty() {
            AuditOutcome::Success
        } else {
            AuditOutcome::Failed
        };
        self.archive
            .index()
            // Committed before the answer: what was fetched is on record when the caller hears of it.
            .record_audit_committed(NewAuditEvent {
                actor: self.who.clone(),
                action: AuditAction::Forward,
                outcome,
                study_instance_uid: Some(done.study_instance_uid.clone()),
                patient: None,
                detail: format!(
                    "retrieve from {}: {} retrieved, {} already here, {} failed",
                    self.sender.source,
                    done.retrieved,
                    done.already_here,
                    done.failed.len()
                ),
            })
            .await?;
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PeerCallError> + Send + 'static,
) -> Result<T, PeerCallError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(PeerCallError::Transient(format!("query task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_a_study_or_a_patient_with_a_period() {
        let q = PriorsQuery::parse(None, Some("CCCD|0790"), Some("20240101"), None).unwrap();
        assert_eq!(
            q.qido_params(),
            vec![
                ("PatientID", "0790".to_string()),
                ("IssuerOfPatientID", "CCCD".to_string()),
                ("StudyDate", "20240101-".to_string())
            ]
        );
        let q = PriorsQuery::parse(Some("1.2.3"), None, None, None).unwrap();
        assert_eq!(
            q.qido_params(),
            vec![("StudyInstanceUID", "1.2.3".to_string())]
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        let bad = [
            PriorsQuery::parse(None, None, None, None),
            PriorsQuery::parse(Some("1.2.3"), Some("P"), None, None),
            PriorsQuery::parse(Some("1.2.x"), None, None, None),
            PriorsQuery::parse(Some("1.2.3"), None, Some("20240101"), None),
            PriorsQuery::parse(None, Some("P"), Some("2024-01-01"), None),
            PriorsQuery::parse(None, Some("P"), Some("20250101"), Some("20240101")),
            PriorsQuery::parse(None, Some(""), None, None),
            PriorsQuery::parse(None, Some("P*"), None, None),
        ];
        for b in bad {
            assert!(matches!(b, Err(PriorsError::Invalid(_))), "{b:?}");
        }
    }
}
