//! The UI's pages: the worklist (and its table, which the page re-fetches when told of a
//! change) and a study with its AI findings. Each handler reads the index as its caller and
//! turns the result into a view of display-ready strings; the templates only lay them out.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use dicom_dictionary_std::tags;

use super::i18n::Lang;
use super::{html, Chrome};
use crate::store::findings::{Finding, WorklistEntry};
use crate::store::query::{AttributeQuery, QueryLevel};
use crate::store::IndexError;
use crate::web::auth::Caller;
use crate::web::AppState;

/// The most rows a page shows (the index filters and orders them, most urgent first).
const WORKLIST_SHOWN: i64 = 200;

/// The worklist's filters, from the form's query parameters (an empty field: no filter).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Filters {
    /// Only studies with this modality among theirs (e.g. `DX`).
    #[serde(default)]
    modality: String,
    /// Only studies dated on or after this day (`YYYY-MM-DD`, as a date field sends it).
    #[serde(default)]
    from: String,
    /// Only studies dated on or before this day.
    #[serde(default)]
    to: String,
    /// Only studies the AI flagged (`on` from a checkbox).
    #[serde(default)]
    flagged: String,
    /// Only patients whose names have words beginning with these (accents and case aside).
    #[serde(default)]
    patient: String,
    /// `yes`: only studies with a doctor's feedback on a finding; `no`: only those without.
    #[serde(default)]
    reviewed: String,
    /// Only studies this facility (its code) holds.
    #[serde(default)]
    facility: String,
}

/// Filters checked: dates as DICOM DA (`YYYYMMDD`) for comparing with the study date.
struct Checked {
    modality: String,
    from: Option<String>,
    to: Option<String>,
    flagged: bool,
    reviewed: Option<bool>,
    facility: String,
}

impl Filters {
    fn check(&self) -> Result<Checked, String> {
        let day = |field: &str, text: &str| -> Result<Option<String>, String> {
            if text.is_empty() {
                return Ok(None);
            }
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| Some(d.format("%Y%m%d").to_string()))
                .map_err(|_| format!("{field}: a date as YYYY-MM-DD"))
        };
        if query_words(&self.patient) > crate::dicom::person_name::MAX_QUERY_WORDS {
            return Err("patient: at most 16 words".into());
        }
        Ok(Checked {
            modality: self.modality.trim().to_ascii_uppercase(),
            from: day("from", &self.from)?,
            to: day("to", &self.to)?,
            flagged: !self.flagged.is_empty(),
            reviewed: match self.reviewed.as_str() {
                "" => None,
                "yes" => Some(true),
                "no" => Some(false),
                _ => return Err("reviewed: yes or no".into()),
            },
            facility: self.facility.trim().to_string(),
        })
    }
}

fn query_words(text: &str) -> usize {
    crate::dicom::person_name::query_words(text).len()
}

impl Checked {
    /// The filters as the index applies them.
    fn into_filter(self) -> crate::store::findings::WorklistFilter {
        let some = |text: String| (!text.is_empty()).then_some(text);
        crate::store::findings::WorklistFilter {
            reviewed: self.reviewed,
            facility: some(self.facility),
            modality: some(self.modality),
            study_date_from: self.from,
            study_date_to: self.to,
            flagged_only: self.flagged,
        }
    }
}

/// One worklist row, ready to show.
pub struct Row {
    study: String,
    href: String,
    patient_name: String,
    patient_id: String,
    study_date: String,
    modalities: String,
    urgency: String,
    urgency_text: String,
    flags: String,
    notes: Vec<String>,
    arrived: String,
    reviewed: bool,
}

fn row(state: &AppState, lang: Lang, e: &WorklistEntry) -> Row {
    let mut notes = Vec::new();
    if !e.outside_intended_use.is_empty() {
        notes.push(format!(
            "{} {}",
            lang.t("note-outside"),
            e.outside_intended_use.join(", ")
        ));
    }
    if !e.skipped_reasons.is_empty() {
        notes.push(format!(
            "{} {}",
            lang.t("note-skipped"),
            e.skipped_reasons.join("; ")
        ));
    }
    if e.pending_jobs > 0 {
        notes.push(lang.count("note-pending", e.pending_jobs));
    }
    if e.failed_jobs > 0 {
        notes.push(lang.count("note-failed", e.failed_jobs));
    }
    if e.reviewed {
        notes.push(lang.t("note-reviewed"));
    }
    let urgency = match e.urgency.as_str() {
        u @ ("emergency" | "urgent" | "routine") => u,
        _ => "none",
    };
    Row {
        study: e.study_instance_uid.clone(),
        href: format!("/ui/studies/{}", e.study_instance_uid),
        patient_name: person_name(&e.patient_name),
        patient_id: e.patient_id.clone(),
        study_date: lang.dicom_date(&e.study_date),
        modalities: e.modalities.replace('\\', ", "),
        urgency: urgency.to_string(),
        urgency_text: lang.t(&format!("urgency-{urgency}")),
        flags: e
            .flags
            .iter()
            .map(|l| label_text(state, lang, None, l))
            .collect::<Vec<_>>()
            .join(", "),
        notes,
        arrived: lang.timestamp(&e.arrived_at),
        reviewed: e.reviewed,
    }
}

/// A DICOM person name (PN, PS3.5 6.2: `Family^Given^Middle`) as words.
fn person_name(pn: &str) -> String {
    pn.split('^')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The worklist page.
#[derive(Template)]
#[template(path = "worklist.html")]
struct WorklistPage {
    chrome: Chrome,
    filters: Filters,
    modality_options: Vec<(&'static str, bool)>,
    facility_options: Vec<(String, bool)>,
    table_href: &'static str,
    table_html: String,
    js: &'static str,
}

/// The modalities the filter offers (PS3.3 C.7.3.1.1.1's defined terms a district hospital
/// sends).
const MODALITIES: [&str; 14] = [
    "CR", "CT", "DX", "ES", "MG", "MR", "NM", "OT", "PT", "RF", "SC", "SR", "US", "XA",
];

/// The worklist's table, alone (what the page re-fetches).
#[derive(Template)]
#[template(path = "worklist_table.html")]
struct WorklistTable {
    chrome: Chrome,
    rows: Vec<Row>,
}

/// The rows `who` may see that pass `filters`, most urgent first, then by arrival, and the
/// facilities of all the studies read (for the facility filter).
async fn rows(
    state: &AppState,
    who: &crate::access::Principal,
    lang: Lang,
    filters: &Filters,
) -> Result<(Vec<Row>, Vec<String>), Response> {
    let checked = filters
        .check()
        .map_err(|reason| error_page(lang, StatusCode::BAD_REQUEST, &reason))?;
    let index = state.archive.index();
    let entries = index
        .worklist_filtered(
            who,
            WORKLIST_SHOWN,
            0,
            filters.patient.clone(),
            checked.into_filter(),
        )
        .await
        .map_err(|e| index_error(lang, e))?;
    let facilities = index
        .worklist_facilities(who)
        .await
        .map_err(|e| index_error(lang, e))?;
    let rows = entries.iter().map(|e| row(state, lang, e)).collect();
    Ok((rows, facilities))
}

/// `GET /ui/`: the studies the user may see, most urgent AI flag first, then by arrival.
pub async fn worklist(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    uri: Uri,
    Query(filters): Query<Filters>,
) -> Response {
    let chrome = Chrome::new(&headers, &path_and_query(&uri), true);
    let (rows, facilities) = match rows(&state, &who, chrome.lang, &filters).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    // The facility filter is for users who see several facilities' studies.
    let facility_options = if facilities.len() > 1 {
        let chosen = filters.facility.trim();
        facilities
            .into_iter()
            .map(|f| {
                let selected = f == chosen;
                (f, selected)
            })
            .collect()
    } else {
        Vec::new()
    };
    let table = WorklistTable {
        chrome: Chrome::new(&headers, "/ui/", true),
        rows,
    };
    let table_html = match table.render() {
        Ok(html) => html,
        Err(e) => return server_error(chrome.lang, e),
    };
    let chosen = filters.modality.trim().to_ascii_uppercase();
    let modality_options = MODALITIES.iter().map(|m| (*m, *m == chosen)).collect();
    html(
        WorklistPage {
            chrome,
            filters,
            modality_options,
            facility_options,
            table_href: "/ui/worklist/table",
            table_html,
            js: super::JS,
        }
        .render(),
    )
}

/// `GET /ui/worklist/table`: the worklist's table alone, with the same filters.
pub async fn worklist_table(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let chrome = Chrome::new(&headers, "/ui/", true);
    match rows(&state, &who, chrome.lang, &filters).await {
        Ok((rows, _)) => html(WorklistTable { chrome, rows }.render()),
        Err(response) => response,
    }
}

fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string())
}

/// A series of the study, with its thumbnail.
struct SeriesView {
    thumbnail: String,
    modality: String,
    number: String,
    description: String,
    images: String,
}

/// A finding, ready to show.
struct FindingView {
    id: i64,
    label: String,
    flagged: bool,
    urgency: String,
    verdict: String,
    probability: String,
    threshold: String,
    model: String,
    statement: String,
    intended_use: String,
    intended_use_note: String,
    /// The image and the heatmap over it; none for a finding on a whole clip.
    image: Option<ImagePair>,
}

/// An image and the occlusion heatmap drawn over it.
struct ImagePair {
    image: String,
    heatmap: String,
}

/// The study page.
#[derive(Template)]
#[template(path = "study.html")]
struct StudyPage {
    chrome: Chrome,
    patient_name: String,
    patient_id: String,
    study_date: String,
    description: String,
    accession: String,
    series: Vec<SeriesView>,
    findings: Vec<FindingView>,
    viewer_href: Option<String>,
    actions: super::study_actions::StudyActions,
    js: &'static str,
}

/// `GET /ui/studies/{study}`: the patient and study, its series with thumbnails, and each AI
/// finding with the image and where the model looked.
pub async fn study(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Response {
    let chrome = Chrome::new(&headers, &format!("/ui/studies/{study}"), true);
    let lang = chrome.lang;
    if crate::dicom::StudyInstanceUid::new(&study).is_err() {
        return error_page(lang, StatusCode::BAD_REQUEST, "not a valid UID");
    }
    let index = state.archive.index();
    // The findings first: whoever may not read them (or not see the study) gets no page.
    let findings = match index.findings_for_study(&who, &study).await {
        Ok(Some(findings)) => findings,
        Ok(None) => return error_page(lang, StatusCode::NOT_FOUND, &lang.t("error-not-found")),
        Err(e) => return index_error(lang, e),
    };
    let series = match study_series(&state, &who, &study).await {
        Ok(Ok(series)) => series,
        // A query the index cannot run is this code's mistake, not the user's.
        Ok(Err(e)) => return server_error(lang, e),
        Err(e) => return index_error(lang, e),
    };
    let actions =
        match super::study_actions::StudyActions::load(&state, &who, lang, &study, &findings).await
        {
            Ok(actions) => actions,
            Err(e) => return index_error(lang, e),
        };
    let head = series.first().cloned().unwrap_or_default();
    let value = |tag| head.get(&tag).cloned().unwrap_or_default();
    let page = StudyPage {
        patient_name: person_name(&value(tags::PATIENT_NAME)),
        patient_id: value(tags::PATIENT_ID),
        study_date: lang.dicom_date(&value(tags::STUDY_DATE)),
        description: value(tags::STUDY_DESCRIPTION),
        accession: value(tags::ACCESSION_NUMBER),
        series: series
            .iter()
            .map(|s| series_view(lang, &study, s))
            .collect(),
        findings: findings
            .iter()
            .map(|f| finding_view(&state, lang, &study, f))
            .collect(),
        viewer_href: state
            .config
            .http
            .viewer_files()
            .map(|_| format!("/viewer?StudyInstanceUIDs={study}")),
        actions,
        js: super::JS,
        chrome,
    };
    html(page.render())
}

type Values = std::collections::HashMap<dicom_core::Tag, String>;

/// The study's series with their study's and patient's attributes, as the caller may see them.
async fn study_series(
    state: &AppState,
    who: &crate::access::Principal,
    study: &str,
) -> Result<Result<Vec<Values>, crate::store::query::QueryError>, IndexError> {
    let mut conditions = vec![(tags::STUDY_INSTANCE_UID, study.to_string())];
    conditions.extend(
        [
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            tags::STUDY_DATE,
            tags::STUDY_DESCRIPTION,
            tags::ACCESSION_NUMBER,
            tags::SERIES_INSTANCE_UID,
            tags::MODALITY,
            tags::SERIES_NUMBER,
            tags::SERIES_DESCRIPTION,
            tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        ]
        .map(|tag| (tag, String::new())),
    );
    let query = AttributeQuery {
        level: QueryLevel::Series,
        conditions,
        limit: Some(500),
        offset: 0,
        fuzzy_person_names: false,
    };
    let found = state
        .archive
        .index()
        .query(who, move |scope| scope.find(&query))
        .await?;
    Ok(found.map(|matches| matches.into_iter().map(|m| m.values).collect()))
}

fn series_view(lang: Lang, study: &str, s: &Values) -> SeriesView {
    let value = |tag| s.get(&tag).cloned().unwrap_or_default();
    let images = value(tags::NUMBER_OF_SERIES_RELATED_INSTANCES)
        .parse()
        .map(|n| lang.count("study-series-images", n))
        .unwrap_or_default();
    SeriesView {
        thumbnail: format!(
            "/dicomweb/studies/{study}/series/{}/thumbnail?accept=image%2Fjpeg",
            value(tags::SERIES_INSTANCE_UID)
        ),
        modality: value(tags::MODALITY),
        number: value(tags::SERIES_NUMBER),
        description: value(tags::SERIES_DESCRIPTION),
        images,
    }
}

/// A label's name as doctors read it in `lang`: the translation the manifest of `model` (any
/// loaded model, when unknown) gives, else the label as the model names it.
fn label_text(state: &AppState, lang: Lang, model: Option<&str>, label: &str) -> String {
    state
        .models
        .iter()
        .filter(|m| model.is_none_or(|name| m.manifest.name == name))
        .find_map(|m| m.manifest.label_in(lang.code(), label))
        .unwrap_or(label)
        .to_string()
}

fn finding_view(state: &AppState, lang: Lang, study: &str, f: &Finding) -> FindingView {
    // The loaded manifest speaks for the finding only when it is the version that made it.
    let manifest = state
        .models
        .iter()
        .map(|m| &m.manifest)
        .find(|m| m.name == f.model && m.version == f.model_version);
    let statement = manifest
        .map(|m| m.statement_in(lang.code()).to_string())
        .unwrap_or_else(|| f.statement.clone());
    let threshold = state
        .models
        .iter()
        .find(|m| m.manifest.name == f.model)
        .and_then(|m| m.manifest.labels.iter().find(|l| l.name == f.label))
        .map(|l| lang.number(f64::from(l.threshold), 2))
        .unwrap_or_else(|| "—".into());
    let instance = format!(
        "/studies/{study}/series/{}/instances/{}",
        f.series_instance_uid, f.sop_instance_uid
    );
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("model", &f.model)
        .append_pair("label", &f.label)
        .finish();
    // A clip's finding (frame 0) is on many frames: the viewer shows those.
    let image = (f.frame <= 1 && f.fired_frames.is_empty()).then(|| ImagePair {
        image: format!("/dicomweb{instance}/rendered?accept=image%2Fjpeg"),
        heatmap: format!("/api/v1{instance}/heatmap?{query}"),
    });
    FindingView {
        id: f.id,
        label: label_text(state, lang, Some(&f.model), &f.label),
        flagged: f.flagged,
        urgency: f.urgency.clone(),
        verdict: lang.t(if f.flagged {
            "finding-flagged"
        } else {
            "finding-below"
        }),
        probability: lang.number(f.probability, 3),
        threshold,
        model: format!("{} {}", f.model, f.model_version),
        statement,
        intended_use: lang.t(&format!("intended-{}", f.intended_use.as_str())),
        intended_use_note: f.intended_use_note.clone(),
        image,
    }
}

/// An error as a page in the user's language, with the status the API would answer.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    reason: String,
}

/// The error page for `status` with `reason` (never patient data: reasons are the UI's own).
pub fn error_page(lang: Lang, status: StatusCode, reason: &str) -> Response {
    let chrome = Chrome {
        lang,
        switch_href: format!("/ui/lang/{}", lang.other().code()),
        signed_in: true,
        css: super::CSS,
    };
    let page = ErrorPage {
        chrome,
        reason: reason.to_string(),
    };
    let mut response = html(page.render());
    if response.status() == StatusCode::OK {
        *response.status_mut() = status;
    }
    response
}

/// An index failure as a page: a role that may not read findings is 403, the rest 500.
fn index_error(lang: Lang, e: IndexError) -> Response {
    match e {
        IndexError::Forbidden { .. } => {
            error_page(lang, StatusCode::FORBIDDEN, &lang.t("error-forbidden"))
        }
        other => server_error(lang, other),
    }
}

/// The server's failure as a page: 500, the detail in the log only.
fn server_error(lang: Lang, detail: impl std::fmt::Display) -> Response {
    let status = crate::web::error::HttpError::internal(detail).status;
    error_page(lang, status, &lang.t("error-title"))
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    message: String,
    /// Where the browser goes once signed in.
    next: String,
    /// The identity provider's sign-in, when offered.
    sso_href: Option<String>,
}

/// The page a sign-in through the identity provider ends on: it moves on to `next` from this
/// site itself, so the browser sends the new SameSite=Strict session cookie.
#[derive(Template)]
#[template(path = "continue.html")]
struct ContinuePage {
    chrome: Chrome,
    next: String,
}

/// The page that moves on to `next` (a path on this site) once signed in.
pub fn continue_page(lang: Lang, next: &str) -> Response {
    let chrome = Chrome {
        lang,
        switch_href: next.to_string(),
        signed_in: false,
        css: super::CSS,
    };
    html(
        ContinuePage {
            chrome,
            next: next.to_string(),
        }
        .render(),
    )
}

/// The sign-in page in `lang`, with why the last try was refused (empty: none), leading to
/// `next` once signed in; with the identity provider's sign-in when `sso`.
pub fn login_page(
    lang: Lang,
    status: StatusCode,
    message: &str,
    next: &str,
    sso: bool,
) -> Response {
    let chrome = Chrome {
        lang,
        switch_href: format!("/login?lang={}", lang.other().code()),
        signed_in: false,
        css: super::CSS,
    };
    let mut response = html(
        LoginPage {
            chrome,
            message: message.to_string(),
            next: next.to_string(),
            sso_href: sso.then(|| {
                let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
                format!("/login/oidc?next={next}")
            }),
        }
        .render(),
    );
    if response.status() == StatusCode::OK {
        *response.status_mut() = status;
    }
    response
}
