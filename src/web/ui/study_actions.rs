//! What a doctor does on the study page (issue #15 items 2-3): agree or disagree with each AI
//! finding (with a comment), see colleagues' verdicts, follow the study's deliveries to peers,
//! and share it: a grant of the patient's studies to another facility, or an expiring link.
//! The forms are plain POSTs (no JavaScript needed; the session cookie is SameSite=Strict) that
//! call the same index methods as `/api/v1/…feedback`, `/api/v1/grants` and
//! `/api/v1/share-links`, with the same checks; handlers here only shape views.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use dicom_dictionary_std::tags;

use super::i18n::Lang;
use super::pages::error_page;
use super::{html, Chrome};
use crate::access::sharing::{NewGrant, NewShareLink, SharingError};
use crate::access::{Action, Principal};
use crate::audit::PatientRef;
use crate::store::feedback::{Feedback, FeedbackError, NewFeedback, Verdict};
use crate::store::findings::Finding;
use crate::store::query::{AttributeQuery, QueryLevel};
use crate::store::IndexError;
use crate::web::auth::Caller;
use crate::web::AppState;

/// Days a share runs for unless the doctor picks another day.
const DEFAULT_SHARE_DAYS: i64 = 7;
/// The longest a share from this page may run.
const MAX_SHARE_DAYS: i64 = 365;

/// A reviewer's verdict, ready to show.
pub struct FeedbackEntry {
    /// The reviewer's name.
    pub name: String,
    /// `agree` or `disagree` (a class name).
    pub verdict: &'static str,
    /// The verdict in the page's language.
    pub verdict_text: String,
    /// The comment.
    pub comment: String,
    /// When, in the page's language.
    pub time: String,
    /// Whether it is the signed-in user's.
    pub mine: bool,
}

/// A finding's feedback: the user's verdict and form, and colleagues' verdicts.
pub struct FindingFeedback {
    /// The finding's id.
    pub id: i64,
    /// Where the form posts.
    pub action: String,
    /// The user's current verdict (`agree`, `disagree`), if any.
    pub mine: Option<&'static str>,
    /// The user's current comment.
    pub my_comment: String,
    /// Every current verdict, the user's included, oldest first.
    pub entries: Vec<FeedbackEntry>,
}

/// One step of a delivery, ready to show.
pub struct StepView {
    /// The state in the page's language.
    pub state: String,
    /// When it was reached (its last instance).
    pub time: String,
}

/// A peer's delivery of the study, ready to show.
pub struct DeliveryView {
    /// The peer's name.
    pub peer: String,
    /// `queued`, `sent`, `stored`, `verified`, `failed` or `dead` (a class name).
    pub state: &'static str,
    /// The state in the page's language.
    pub state_text: String,
    /// Queued → sent → stored → verified, as far as it got.
    pub steps: Vec<StepView>,
    /// Why it failed, if it did.
    pub error: String,
}

/// A consent a grant or link may rest on.
pub struct ConsentOption {
    /// Its id.
    pub id: String,
    /// Its purpose and recipient, in words.
    pub text: String,
}

/// The share dialog.
pub struct ShareDialog {
    /// Where it posts.
    pub action: String,
    /// The first and last day a share may end (`YYYY-MM-DD`), and the default.
    pub min_day: String,
    /// The last day.
    pub max_day: String,
    /// The default day.
    pub default_day: String,
    /// The patient's consents in force.
    pub consents: Vec<ConsentOption>,
}

/// What the study page shows beyond the study and its findings.
pub struct StudyActions {
    /// Each visible finding's feedback.
    pub feedback: Vec<FindingFeedback>,
    /// Whether the user gives feedback (a clinician or an admin).
    pub gives_feedback: bool,
    /// Deliveries to peers.
    pub deliveries: Vec<DeliveryView>,
    /// The share dialog, for a user who may share.
    pub share: Option<ShareDialog>,
}

impl StudyActions {
    /// The feedback of finding `id`.
    pub fn feedback_for(&self, id: &i64) -> Option<&FindingFeedback> {
        self.feedback.iter().find(|f| f.id == *id)
    }

    /// What the study page of `study` shows `who` beyond its findings.
    pub async fn load(
        state: &AppState,
        who: &Principal,
        lang: Lang,
        study: &str,
        findings: &[Finding],
    ) -> Result<StudyActions, IndexError> {
        let index = state.archive.index();
        let all = index
            .finding_feedback(who, study, None)
            .await?
            .unwrap_or_default();
        let feedback = findings
            .iter()
            .map(|f| finding_feedback(lang, who, study, f.id, &all))
            .collect();
        // A role that may not see deliveries sees none; the rest of the page stays.
        let deliveries = match index.study_deliveries(who, study).await {
            Ok(found) => found.unwrap_or_default(),
            Err(IndexError::Forbidden { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let share = if who.permits(Action::Grant) {
            Some(share_dialog(state, who, lang, study).await?)
        } else {
            None
        };
        Ok(StudyActions {
            feedback,
            gives_feedback: crate::store::feedback::reviewer_role(who).is_some(),
            deliveries: deliveries.iter().map(|d| delivery_view(lang, d)).collect(),
            share,
        })
    }
}

fn verdict_key(v: Verdict) -> &'static str {
    match v {
        Verdict::Agree => "feedback-agreed",
        Verdict::Disagree => "feedback-disagreed",
    }
}

fn finding_feedback(
    lang: Lang,
    who: &Principal,
    study: &str,
    id: i64,
    all: &[Feedback],
) -> FindingFeedback {
    let of_finding: Vec<&Feedback> = all.iter().filter(|f| f.finding_id == id).collect();
    let mine = of_finding.iter().find(|f| f.reviewer == who.subject());
    FindingFeedback {
        id,
        action: format!("/ui/studies/{study}/findings/{id}/feedback"),
        mine: mine.map(|f| f.verdict.as_str()),
        my_comment: mine.map(|f| f.comment.clone()).unwrap_or_default(),
        entries: of_finding
            .iter()
            .map(|f| FeedbackEntry {
                name: f.reviewer_name.clone(),
                verdict: f.verdict.as_str(),
                verdict_text: lang.t(verdict_key(f.verdict)),
                comment: f.comment.clone(),
                time: lang.timestamp(&f.created_at),
                mine: f.reviewer == who.subject(),
            })
            .collect(),
    }
}

fn delivery_view(lang: Lang, d: &crate::forward::outbox::DestinationDelivery) -> DeliveryView {
    let state = d.state.as_str();
    DeliveryView {
        peer: d.peer.clone(),
        state,
        state_text: lang.t(&format!("delivery-{state}")),
        steps: d
            .timeline
            .iter()
            .map(|s| StepView {
                state: lang.t(&format!("delivery-{}", s.state)),
                time: lang.timestamp(&s.last),
            })
            .collect(),
        error: d.last_error.clone().unwrap_or_default(),
    }
}

async fn share_dialog(
    state: &AppState,
    who: &Principal,
    lang: Lang,
    study: &str,
) -> Result<ShareDialog, IndexError> {
    let today = chrono::Utc::now().date_naive();
    let day = |days: i64| (today + chrono::Duration::days(days)).to_string();
    let consents = match study_patient(state, who, study).await? {
        Some(patient) => match state.archive.index().consents(who, patient).await? {
            Ok(list) => list
                .into_iter()
                .filter(|c| c.revoked_at.is_none())
                .map(|c| ConsentOption {
                    text: format!(
                        "{} → {}",
                        lang.t(&format!("share-purpose-{}", c.purpose.as_str())),
                        c.recipient
                            .clone()
                            .unwrap_or_else(|| lang.t("share-anyone"))
                    ),
                    id: c.id,
                })
                .collect(),
            Err(_) => Vec::new(),
        },
        None => Vec::new(),
    };
    Ok(ShareDialog {
        action: format!("/ui/studies/{study}/share"),
        min_day: day(1),
        max_day: day(MAX_SHARE_DAYS),
        default_day: day(DEFAULT_SHARE_DAYS),
        consents,
    })
}

/// The patient of `study` (`None`: not visible, or the query failed).
async fn study_patient(
    state: &AppState,
    who: &Principal,
    study: &str,
) -> Result<Option<PatientRef>, IndexError> {
    let query = AttributeQuery {
        level: QueryLevel::Study,
        conditions: vec![
            (tags::STUDY_INSTANCE_UID, study.to_string()),
            (tags::PATIENT_ID, String::new()),
            (tags::ISSUER_OF_PATIENT_ID, String::new()),
        ],
        limit: Some(1),
        offset: 0,
        fuzzy_person_names: false,
    };
    let found = state
        .archive
        .index()
        .query(who, move |scope| scope.find(&query))
        .await?;
    Ok(found.ok().and_then(|matches| {
        let m = matches.into_iter().next()?;
        let value = |tag| m.values.get(&tag).cloned().unwrap_or_default();
        let (id, issuer) = (value(tags::PATIENT_ID), value(tags::ISSUER_OF_PATIENT_ID));
        (!id.trim().is_empty()).then(|| PatientRef {
            id: id.trim().to_string(),
            issuer: issuer.trim().to_string(),
        })
    }))
}

/// The feedback form.
#[derive(Debug, serde::Deserialize)]
pub struct FeedbackForm {
    verdict: String,
    #[serde(default)]
    comment: String,
}

/// `POST /ui/studies/{study}/findings/{finding}/feedback`: records the user's verdict and goes
/// back to the finding on the study page.
pub async fn record_feedback(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path((study, finding)): Path<(String, i64)>,
    Form(form): Form<FeedbackForm>,
) -> Response {
    let lang = Lang::of(&headers);
    if crate::dicom::StudyInstanceUid::new(&study).is_err() {
        return error_page(lang, StatusCode::BAD_REQUEST, "not a valid UID");
    }
    let Some(verdict) = Verdict::parse(&form.verdict) else {
        return error_page(lang, StatusCode::BAD_REQUEST, "verdict: agree or disagree");
    };
    let feedback = NewFeedback {
        verdict,
        comment: form.comment,
    };
    let thresholds = crate::web::feedback::thresholds(&state);
    let recorded = state
        .archive
        .index()
        .record_feedback(&who, &study, finding, feedback, thresholds)
        .await;
    match recorded {
        Ok(Ok(_)) => {
            Redirect::to(&format!("/ui/studies/{study}#finding-{finding}")).into_response()
        }
        Ok(Err(FeedbackError::NotFound)) => {
            error_page(lang, StatusCode::NOT_FOUND, &lang.t("error-not-found"))
        }
        Ok(Err(FeedbackError::Forbidden(_))) => {
            error_page(lang, StatusCode::FORBIDDEN, &lang.t("feedback-forbidden"))
        }
        Ok(Err(FeedbackError::Invalid(reason))) => {
            error_page(lang, StatusCode::BAD_REQUEST, &reason)
        }
        Err(e) => index_failure(lang, e),
    }
}

/// An index failure as a page: a role that may not do it is 403, the rest 500.
fn index_failure(lang: Lang, e: IndexError) -> Response {
    match e {
        IndexError::Forbidden { .. } => {
            error_page(lang, StatusCode::FORBIDDEN, &lang.t("error-forbidden"))
        }
        other => {
            let status = crate::web::error::HttpError::internal(other).status;
            error_page(lang, status, &lang.t("error-title"))
        }
    }
}

/// The share dialog's form.
#[derive(Debug, serde::Deserialize)]
pub struct ShareForm {
    /// `link` (anyone holding it) or `grant` (another facility).
    kind: String,
    /// The facility a grant is for.
    #[serde(default)]
    to_facility: String,
    /// The last day it runs (`YYYY-MM-DD`).
    expires: String,
    /// The consent it rests on (empty: none).
    #[serde(default)]
    consent: String,
    /// Why it is needed without a consent (break-glass).
    #[serde(default)]
    reason: String,
}

/// What was shared, shown once (a link's token is never shown again).
#[derive(Template)]
#[template(path = "shared.html")]
struct SharedPage {
    chrome: Chrome,
    back: String,
    link: Option<String>,
    grant_to: String,
    expires: String,
}

/// The end of `day` (`YYYY-MM-DD`) in UTC, when it is tomorrow or later, within a year.
fn expiry(day: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let day = chrono::NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d")
        .map_err(|_| "expires: a date as YYYY-MM-DD".to_string())?;
    let today = chrono::Utc::now().date_naive();
    if day <= today || day > today + chrono::Duration::days(MAX_SHARE_DAYS) {
        return Err(format!(
            "expires: a day after today, at most {MAX_SHARE_DAYS} days ahead"
        ));
    }
    day.and_hms_opt(23, 59, 59)
        .map(|t| t.and_utc())
        .ok_or_else(|| "expires: not a day".to_string())
}

fn non_empty(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// `POST /ui/studies/{study}/share`: makes a share link to the study, or a grant of its
/// patient's studies to another facility, and shows it.
pub async fn share(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(study): Path<String>,
    Form(form): Form<ShareForm>,
) -> Response {
    let chrome = Chrome::new(&headers, &format!("/ui/studies/{study}"), true);
    let lang = chrome.lang;
    if crate::dicom::StudyInstanceUid::new(&study).is_err() {
        return error_page(lang, StatusCode::BAD_REQUEST, "not a valid UID");
    }
    let expires_at = match expiry(&form.expires) {
        Ok(t) => t,
        Err(reason) => return error_page(lang, StatusCode::BAD_REQUEST, &reason),
    };
    let (consent_id, break_glass_reason) = (non_empty(&form.consent), non_empty(&form.reason));
    let index = state.archive.index();
    let page = |link: Option<String>, grant_to: String, expires: &str| SharedPage {
        back: format!("/ui/studies/{study}"),
        link,
        grant_to,
        expires: lang.timestamp(expires),
        chrome: Chrome::new(&headers, &format!("/ui/studies/{study}"), true),
    };
    match form.kind.as_str() {
        "link" => {
            let link = NewShareLink {
                study_instance_uid: study.clone(),
                scope: None,
                expires_at,
                consent_id,
                break_glass_reason,
                from_facility: None,
            };
            match index.create_share_link(&who, link).await {
                Ok(Ok(made)) => {
                    html(page(Some(made.path), String::new(), &made.expires_at).render())
                }
                Ok(Err(e)) => sharing_error(lang, e),
                Err(e) => index_failure(lang, e),
            }
        }
        "grant" => {
            let Some(to_facility) = non_empty(&form.to_facility) else {
                return error_page(
                    lang,
                    StatusCode::BAD_REQUEST,
                    "to_facility: a facility code",
                );
            };
            let patient = match study_patient(&state, &who, &study).await {
                Ok(Some(p)) if p.issuer.is_empty() => p.id,
                Ok(Some(p)) => format!("{}|{}", p.issuer, p.id),
                Ok(None) => {
                    return error_page(lang, StatusCode::NOT_FOUND, &lang.t("error-not-found"))
                }
                Err(e) => return index_failure(lang, e),
            };
            let grant = NewGrant {
                to_facility,
                study_instance_uid: None,
                patient: Some(patient),
                since: None,
                scope: ["metadata", "images", "findings"]
                    .map(String::from)
                    .to_vec(),
                expires_at,
                consent_id,
                break_glass_reason,
                from_facility: None,
            };
            match index.create_grant(&who, grant).await {
                Ok(Ok(made)) => html(
                    page(None, made.to_facility.unwrap_or_default(), &made.expires_at).render(),
                ),
                Ok(Err(e)) => sharing_error(lang, e),
                Err(e) => index_failure(lang, e),
            }
        }
        _ => error_page(lang, StatusCode::BAD_REQUEST, "kind: link or grant"),
    }
}

/// A refused share as a page: the rule's reason (it never repeats patient data).
fn sharing_error(lang: Lang, e: SharingError) -> Response {
    match e {
        SharingError::Invalid(reason) => error_page(lang, StatusCode::BAD_REQUEST, &reason),
        SharingError::NotFound(reason) => error_page(lang, StatusCode::NOT_FOUND, &reason),
    }
}
