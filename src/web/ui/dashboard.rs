//! The facility dashboard (issue #15 item 5): a facility's arrivals, deliveries and AI flags per
//! day over the last days, as charts and tables, its pending and failed deliveries with their
//! reasons, and each model version's flag rate. The counts are those of
//! `GET /api/v1/facilities/{code}/stats` (the same [`stats::facility_stats`]); who may read
//! them is [`stats::may_read`], as there.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::{Days, NaiveDate};

use super::chart::{self, Bar};
use super::i18n::Lang;
use super::pages::error_page;
use super::{html, Chrome};
use crate::access::Principal;
use crate::forward::stats::{self, FacilityStats, StatsPeriod, MAX_DAYS};
use crate::store::feedback::AgreementByModelVersion;
use crate::store::stats::{ModelFlagRate, OutboxProblem};
use crate::store::IndexError;
use crate::web::auth::Caller;
use crate::web::AppState;

/// The most delivery groups (destination, study, state) the page lists.
const PROBLEMS_SHOWN: usize = 200;

/// The dashboard's choices, from its form (absent or empty: the defaults).
#[derive(Debug, Default, serde::Deserialize)]
pub struct DashboardQuery {
    /// The facility's code (default: the user's own; a superadmin's: the first registered).
    #[serde(default)]
    facility: Option<String>,
    /// How many days back, today included (default 30, at most 366).
    #[serde(default)]
    days: Option<String>,
}

/// `n` with this language's thousands separator (en `1,234`, vi `1.234`).
pub fn integer(lang: Lang, n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mark = match lang {
        Lang::En => ',',
        Lang::Vi => '.',
    };
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(mark);
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// A day as this language writes dates.
fn day_text(lang: Lang, day: NaiveDate) -> String {
    lang.dicom_date(&day.format("%Y%m%d").to_string())
}

/// One day's figures as the page shows them.
pub struct DayRow {
    date: String,
    label: String,
    received: i64,
    studies: i64,
    sent: i64,
    verified: i64,
    received_text: String,
    studies_text: String,
    sent_text: String,
    verified_text: String,
}

/// Every day of `period` with its counts (days without activity as zeros).
fn day_rows(lang: Lang, counts: &FacilityStats, period: &StatsPeriod) -> Vec<DayRow> {
    let mut rows = Vec::new();
    let mut day = period.from;
    while day <= period.to {
        let date = day.format("%Y-%m-%d").to_string();
        let found = counts.days.iter().find(|d| d.date == date);
        let (received, studies, sent, verified) = found.map_or((0, 0, 0, 0), |d| {
            let c = &d.counts;
            (
                c.received.instances,
                c.received.studies,
                c.destinations.iter().map(|x| x.sent.instances).sum(),
                c.destinations.iter().map(|x| x.verified.instances).sum(),
            )
        });
        rows.push(DayRow {
            label: day_text(lang, day),
            date,
            received,
            studies,
            sent,
            verified,
            received_text: integer(lang, received),
            studies_text: integer(lang, studies),
            sent_text: integer(lang, sent),
            verified_text: integer(lang, verified),
        });
        match day.checked_add_days(Days::new(1)) {
            Some(next) => day = next,
            None => break,
        }
    }
    rows
}

/// The four charts (title, SVG), one bar per day each.
fn charts(lang: Lang, rows: &[DayRow]) -> Vec<(String, String)> {
    type Pick = fn(&DayRow) -> (i64, &String);
    let series: [(&str, &str, Pick); 4] = [
        ("chart-received", "dash-chart-received", |r| {
            (r.received, &r.received_text)
        }),
        ("chart-studies", "dash-chart-studies", |r| {
            (r.studies, &r.studies_text)
        }),
        ("chart-sent", "dash-chart-sent", |r| (r.sent, &r.sent_text)),
        ("chart-verified", "dash-chart-verified", |r| {
            (r.verified, &r.verified_text)
        }),
    ];
    series
        .iter()
        .map(|(id, key, pick)| {
            let bars: Vec<Bar> = rows
                .iter()
                .map(|r| {
                    let (value, text) = pick(r);
                    Bar {
                        label: r.label.clone(),
                        value,
                        value_text: text.clone(),
                    }
                })
                .collect();
            let title = lang.t(key);
            let svg = chart::bars(id, &title, &bars);
            (title, svg)
        })
        .collect()
}

/// A pending or failed delivery as listed.
pub struct ProblemRow {
    peer: String,
    study: String,
    href: String,
    state: String,
    failed: bool,
    instances: String,
    attempts: String,
    last_error: String,
    next_retry: String,
}

fn problem_row(lang: Lang, p: &OutboxProblem) -> ProblemRow {
    ProblemRow {
        peer: p.peer.clone(),
        href: format!("/ui/studies/{}", p.study_instance_uid),
        study: p.study_instance_uid.clone(),
        state: lang.t(&format!("delivery-state-{}", p.state)),
        failed: matches!(p.state.as_str(), "failed" | "dead"),
        instances: integer(lang, p.instances),
        attempts: integer(lang, p.attempts),
        last_error: p.last_error.clone(),
        next_retry: p
            .next_retry
            .as_deref()
            .map(|t| lang.timestamp(t))
            .unwrap_or_default(),
    }
}

/// A model version's flag rate as listed.
pub struct RateRow {
    model: String,
    version: String,
    scored: String,
    flagged: String,
    rate: String,
}

fn rate_row(lang: Lang, r: &ModelFlagRate) -> RateRow {
    let rate = if r.scored > 0 {
        format!(
            "{} %",
            lang.number(100.0 * r.flagged as f64 / r.scored as f64, 1)
        )
    } else {
        "–".into()
    };
    RateRow {
        model: r.model.clone(),
        version: r.model_version.clone(),
        scored: integer(lang, r.scored),
        flagged: integer(lang, r.flagged),
        rate,
    }
}

/// Doctors' agreement with one model version's label, ready to show.
struct AgreementRow {
    model: String,
    version: String,
    label: String,
    agree: String,
    disagree: String,
    rate: String,
}

fn agreement_row(lang: Lang, a: &AgreementByModelVersion) -> AgreementRow {
    let reviews = a.agree + a.disagree;
    let rate = if reviews > 0 {
        format!(
            "{} %",
            lang.number(100.0 * a.agree as f64 / reviews as f64, 1)
        )
    } else {
        "–".into()
    };
    AgreementRow {
        model: a.model.clone(),
        version: a.model_version.clone(),
        label: a.label.clone(),
        agree: integer(lang, a.agree),
        disagree: integer(lang, a.disagree),
        rate,
    }
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    facility: String,
    facilities: Vec<String>,
    days: i64,
    max_days: i64,
    period: String,
    charts: Vec<(String, String)>,
    rows: Vec<DayRow>,
    totals: [String; 2],
    problems: Vec<ProblemRow>,
    rates: Vec<RateRow>,
    agreement: Vec<AgreementRow>,
}

/// The number of days asked for, or why it cannot be used.
fn days_of(text: Option<&str>) -> Result<i64, String> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(stats::DEFAULT_DAYS as i64),
        Some(t) => match t.parse::<i64>() {
            Ok(n) if (1..=MAX_DAYS).contains(&n) => Ok(n),
            _ => Err(format!("days: a whole number from 1 to {MAX_DAYS}")),
        },
    }
}

/// The facilities `who` may choose among: their own, or every one for a superadmin.
async fn choices(state: &AppState, who: &Principal) -> Result<Vec<String>, IndexError> {
    if who.is_system_wide() {
        let all = state.archive.index().facilities(who).await?;
        Ok(all.into_iter().map(|f| f.code).collect())
    } else {
        Ok(who.facility().map(str::to_string).into_iter().collect())
    }
}

fn refused(lang: Lang) -> Response {
    error_page(lang, StatusCode::FORBIDDEN, &lang.t("dash-forbidden"))
}

fn failed(lang: Lang, e: IndexError) -> Response {
    match e {
        IndexError::Forbidden { .. } => refused(lang),
        other => {
            let status = crate::web::error::HttpError::internal(other).status;
            error_page(lang, status, &lang.t("error-title"))
        }
    }
}

/// `GET /ui/dashboard?facility=&days=`: the facility's dashboard (its admins and clinicians;
/// a superadmin's for any facility); 403 for anyone else.
pub async fn dashboard(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<DashboardQuery>,
) -> Response {
    let here = uri.path_and_query().map_or("/ui/dashboard", |p| p.as_str());
    let chrome = Chrome::new(&headers, here, true);
    let lang = chrome.lang;
    let days = match days_of(q.days.as_deref()) {
        Ok(days) => days,
        Err(reason) => return error_page(lang, StatusCode::BAD_REQUEST, &reason),
    };
    let facilities = match choices(&state, &who).await {
        Ok(f) => f,
        Err(e) => return failed(lang, e),
    };
    let asked = q.facility.filter(|f| !f.trim().is_empty());
    let Some(facility) = asked.or_else(|| facilities.first().cloned()) else {
        return refused(lang);
    };
    if !stats::may_read(&who, &facility) {
        return refused(lang);
    }
    let index = state.archive.index();
    match index.facility_registered(&who, &facility) {
        Ok(true) => {}
        Ok(false) => return error_page(lang, StatusCode::NOT_FOUND, &lang.t("dash-no-facility")),
        Err(e) => return failed(lang, e),
    }
    let today = chrono::Utc::now().date_naive();
    let from = today
        .checked_sub_days(Days::new(days as u64 - 1))
        .unwrap_or(today);
    let period = StatsPeriod { from, to: today };
    let counts = match stats::facility_stats(index, &who, &facility, &period).await {
        Ok(c) => c,
        Err(e) => return failed(lang, e),
    };
    let problems = index
        .facility_outbox_problems(&who, &facility, PROBLEMS_SHOWN)
        .await;
    let rates = index
        .facility_flag_rates(&who, &facility, &period.start_text(), &period.end_text())
        .await;
    // The current verdicts of the facility's own doctors, all time.
    let agreement = index.feedback_agreement(&who, Some(facility.clone())).await;
    let (problems, rates, agreement) = match (problems, rates, agreement) {
        (Ok(p), Ok(r), Ok(a)) => (p, r, a),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return failed(lang, e),
    };
    let rows = day_rows(lang, &counts, &period);
    let page = DashboardPage {
        facility,
        facilities,
        days,
        max_days: MAX_DAYS,
        period: format!("{} – {}", day_text(lang, from), day_text(lang, today)),
        charts: charts(lang, &rows),
        totals: [
            integer(lang, counts.totals.received.instances),
            integer(lang, counts.totals.received.studies),
        ],
        rows,
        problems: problems.iter().map(|p| problem_row(lang, p)).collect(),
        rates: rates.iter().map(|r| rate_row(lang, r)).collect(),
        agreement: agreement.iter().map(|a| agreement_row(lang, a)).collect(),
        chrome,
    };
    html(page.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_grouped_as_each_language_writes_them() {
        assert_eq!(integer(Lang::En, 1234567), "1,234,567");
        assert_eq!(integer(Lang::Vi, 1234), "1.234");
        assert_eq!(integer(Lang::Vi, 999), "999");
        assert_eq!(integer(Lang::En, -1000), "-1,000");
        assert_eq!(integer(Lang::En, 0), "0");
    }

    #[test]
    fn days_default_to_thirty_and_are_bounded() {
        assert_eq!(days_of(None), Ok(30));
        assert_eq!(days_of(Some("")), Ok(30));
        assert_eq!(days_of(Some("7")), Ok(7));
        assert!(days_of(Some("0")).is_err());
        assert!(days_of(Some("367")).is_err());
        assert!(days_of(Some("x")).is_err());
    }
}
