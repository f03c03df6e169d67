//! The admin pages (issue #15 item 5): facilities, AE titles, API tokens and peers, for a
//! facility's admin (their own facility's) and a superadmin (all). Each form calls the same
//! domain method as the JSON API in `web/admin.rs` and `web/peers.rs`, so the same checks apply
//! and the audit middleware records the request the same way; a refusal is shown in the page
//! with the API's status and reason. Forms are POSTs, protected by the session cookie's
//! SameSite=Strict.

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::dashboard::integer;
use super::i18n::Lang;
use super::pages::error_page;
use super::{html, Chrome};
use crate::access::Principal;
use crate::auth::Role;
use crate::registry::{expiry_after, FacilityKind, NewFacility, NewToken};
use crate::web::auth::Caller;
use crate::web::error::HttpError;
use crate::web::AppState;

/// Whether `who` may use the admin pages (the store still scopes each action).
fn is_admin(who: &Principal) -> bool {
    who.is_system_wide() || who.roles().contains(&Role::Admin)
}

/// The 403 page for anyone else.
fn refused(lang: Lang) -> Response {
    error_page(lang, StatusCode::FORBIDDEN, &lang.t("admin-forbidden"))
}

/// What a section shows besides its list: a refusal's reason, or a token shown once.
#[derive(Default)]
struct Outcome {
    status: Option<StatusCode>,
    error: String,
    token_id: String,
    secret: String,
}

impl Outcome {
    fn failed(e: HttpError) -> Outcome {
        Outcome {
            status: Some(e.status),
            error: e.reason,
            ..Outcome::default()
        }
    }
}

/// A facility as listed.
struct FacilityRow {
    code: String,
    name: String,
    kind: String,
    parent: String,
    created: String,
}

/// An AE title as listed.
struct AeRow {
    ae_title: String,
    facility: String,
    host: String,
    port: String,
    created: String,
}

/// A token record as listed (never its text).
struct TokenRow {
    id: String,
    facility: String,
    role: String,
    name: String,
    created: String,
    expires: String,
    last_used: String,
    revoked: String,
}

/// A peer as listed.
struct PeerRow {
    name: String,
    kind: String,
    facility: String,
    endpoint: String,
    configured: bool,
    pending: String,
    failed: String,
    dead: String,
    last_error: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    chrome: Chrome,
    section: &'static str,
    superadmin: bool,
    outcome: Outcome,
    choices: Vec<String>,
    roles: Vec<&'static str>,
    facilities: Vec<FacilityRow>,
    aes: Vec<AeRow>,
    tokens: Vec<TokenRow>,
    peers: Vec<PeerRow>,
}

impl AdminPage {
    fn new(headers: &HeaderMap, section: &'static str, who: &Principal) -> AdminPage {
        AdminPage {
            chrome: Chrome::new(headers, &format!("/ui/admin/{section}"), true),
            section,
            superadmin: who.is_system_wide(),
            outcome: Outcome::default(),
            choices: Vec::new(),
            roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
            facilities: Vec::new(),
            aes: Vec::new(),
            tokens: Vec::new(),
            peers: Vec::new(),
        }
    }

    /// The page with its lists read as `who`, with the outcome's status.
    async fn finish(mut self, state: &AppState, who: &Principal, outcome: Outcome) -> Response {
        let lang = self.chrome.lang;
        if let Err(e) = self.load(state, who).await {
            return error_page(lang, e.status, &e.reason);
        }
        let status = outcome.status;
        self.outcome = outcome;
        let mut response = html(self.render());
        if let Some(status) = status {
            if response.status() == StatusCode::OK {
                *response.status_mut() = status;
            }
        }
        response
    }

    async fn load(&mut self, state: &AppState, who: &Principal) -> Result<(), HttpError> {
        let lang = self.chrome.lang;
        let index = state.archive.index();
        let day = |t: &str| lang.timestamp(t);
        self.choices = if who.is_system_wide() {
            index
                .facilities(who)
                .await?
                .into_iter()
                .map(|f| f.code)
                .collect()
        } else {
            who.facility().map(str::to_string).into_iter().collect()
        };
        match self.section {
            "facilities" => {
                self.facilities = index
                    .facilities(who)
                    .await?
                    .into_iter()
                    .map(|f| FacilityRow {
                        created: day(&f.created_at),
                        code: f.code,
                        name: f.name,
                        kind: f.kind.as_str().into(),
                        parent: f.parent.unwrap_or_default(),
                    })
                    .collect()
            }
            "ae-titles" => {
                self.aes = index
                    .application_entities(who)
                    .await?
                    .into_iter()
                    .map(|a| AeRow {
                        created: day(&a.created_at),
                        ae_title: a.ae_title,
                        facility: a.facility,
                        host: a.host.unwrap_or_default(),
                        port: a.port.map(|p| p.to_string()).unwrap_or_default(),
                    })
                    .collect()
            }
            "tokens" => {
                let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map(|t| day(&t.to_rfc3339())).unwrap_or_default()
                };
                self.tokens = index
                    .tokens(who)
                    .await?
                    .into_iter()
                    .map(|t| TokenRow {
                        created: day(&t.created_at.to_rfc3339()),
                        expires: when(t.expires_at),
                        last_used: when(t.last_used_at),
                        revoked: when(t.revoked_at),
                        id: t.id,
                        facility: t.facility.unwrap_or_default(),
                        role: t.role.as_str().into(),
                        name: t.name,
                    })
                    .collect()
            }
            _ => self.peers = peer_rows(state, who, lang).await?,
        }
        Ok(())
    }
}

/// The peers, as `GET /api/v1/peers` lists them (superadmin), with how their outbox stands.
async fn peer_rows(
    state: &AppState,
    who: &Principal,
    lang: Lang,
) -> Result<Vec<PeerRow>, HttpError> {
    if !who.is_system_wide() {
        return Err(HttpError::forbidden());
    }
    let states = state.archive.index().peer_outbox_states(who).await?;
    let mut rows = Vec::new();
    for p in state.peers.list() {
        let spec = p.spec();
        let now = states
            .iter()
            .find(|s| s.peer == spec.name)
            .cloned()
            .unwrap_or_default();
        rows.push(PeerRow {
            kind: spec.kind.clone().unwrap_or_default(),
            endpoint: spec
                .dicomweb_url
                .clone()
                .or(spec.dimse.clone())
                .unwrap_or_default(),
            facility: spec.facility.clone(),
            configured: p.configured,
            pending: integer(lang, now.pending),
            failed: integer(lang, now.failed),
            dead: integer(lang, now.dead),
            last_error: now.last_error,
            name: spec.name,
        });
    }
    Ok(rows)
}

/// A section's page, or 403 for a caller who is not an admin.
async fn section_page(
    state: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    section: &'static str,
    outcome: Outcome,
) -> Response {
    let page = AdminPage::new(headers, section, who);
    if !is_admin(who) {
        return refused(page.chrome.lang);
    }
    page.finish(state, who, outcome).await
}

/// `GET /ui/admin/`: the first section (403 for anyone but an admin).
pub async fn home(Caller(who): Caller, headers: HeaderMap) -> Response {
    if !is_admin(&who) {
        return refused(Lang::of(&headers));
    }
    Redirect::to("/ui/admin/facilities").into_response()
}

/// `GET /ui/admin/facilities`
pub async fn facilities(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
) -> Response {
    section_page(&state, &who, &headers, "facilities", Outcome::default()).await
}

/// `GET /ui/admin/ae-titles`
pub async fn ae_titles(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
) -> Response {
    section_page(&state, &who, &headers, "ae-titles", Outcome::default()).await
}

/// `GET /ui/admin/tokens`
pub async fn tokens(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
) -> Response {
    section_page(&state, &who, &headers, "tokens", Outcome::default()).await
}

/// `GET /ui/admin/peers` (superadmin; a facility's admin sees the 403 reason in the page).
pub async fn peers(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
) -> Response {
    section_page(&state, &who, &headers, "peers", Outcome::default()).await
}

/// A form's text fields; an absent field is empty.
type Fields = std::collections::HashMap<String, String>;

fn field(form: &Fields, name: &str) -> String {
    form.get(name)
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn optional(form: &Fields, name: &str) -> Option<String> {
    Some(field(form, name)).filter(|v| !v.is_empty())
}

/// The form's fields, or the 400 its rejection means.
fn fields(form: Result<Form<Fields>, FormRejection>) -> Result<Fields, HttpError> {
    form.map(|f| f.0)
        .map_err(|e| HttpError::bad_request(e.body_text()))
}

/// After a change that worked: back to the section's list (POST → redirect → GET, so a reload
/// does not repeat it).
fn done(section: &str) -> Response {
    Redirect::to(&format!("/ui/admin/{section}")).into_response()
}

/// `POST /ui/admin/facilities` (superadmin): as `POST /api/v1/facilities`.
pub async fn add_facility(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    form: Result<Form<Fields>, FormRejection>,
) -> Response {
    if !is_admin(&who) {
        return refused(Lang::of(&headers));
    }
    let result = async {
        let form = fields(form)?;
        let kind = match optional(&form, "kind") {
            Some(k) => k.parse::<FacilityKind>()?,
            None => FacilityKind::Hospital,
        };
        let facility = NewFacility {
            code: field(&form, "code"),
            name: field(&form, "name"),
            kind,
            parent: optional(&form, "parent"),
        };
        let made = state.archive.index().add_facility(&who, facility).await?;
        crate::facility_keys::ensure(&state.config.data_dir, &made.code)
            .map_err(HttpError::internal)?;
        Ok::<_, HttpError>(())
    }
    .await;
    match result {
        Ok(()) => done("facilities"),
        Err(e) => section_page(&state, &who, &headers, "facilities", Outcome::failed(e)).await,
    }
}

/// `POST /ui/admin/ae-titles`: as `POST /api/v1/ae-titles`.
pub async fn add_ae_title(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    form: Result<Form<Fields>, FormRejection>,
) -> Response {
    if !is_admin(&who) {
        return refused(Lang::of(&headers));
    }
    let result = async {
        let form = fields(form)?;
        let port = optional(&form, "port")
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| HttpError::bad_request("port: a number from 1 to 65535"))
            })
            .transpose()?;
        let host = optional(&form, "host");
        state
            .archive
            .index()
            .add_application_entity_at(
                &who,
                &field(&form, "ae_title"),
                &field(&form, "facility"),
                host.as_deref(),
                port,
            )
            .await
            .map_err(HttpError::from)
    }
    .await;
    match result {
        Ok(_) => done("ae-titles"),
        Err(e) => section_page(&state, &who, &headers, "ae-titles", Outcome::failed(e)).await,
    }
}

/// `POST /ui/admin/ae-titles/{ae_title}/remove`: as `DELETE /api/v1/ae-titles/{ae_title}`.
pub async fn remove_ae_title(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(ae_title): Path<String>,
) -> Response {
    if !is_admin(&who) {
        return refused(Lang::of(&headers));
    }
    let index = state.archive.index();
    match index.remove_application_entity(&who, &ae_title).await {
        Ok(_) => done("ae-titles"),
        Err(e) => {
            let e = HttpError::from(e);
            section_page(&state, &who, &headers, "ae-titles", Outcome::failed(e)).await
        }
    }
}

/// `POST /ui/admin/peers` (superadmin): as `POST /api/v1/peers`, a peer to forward to.
pub async fn add_peer(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    form: Result<Form<Fields>, FormRejection>,
) -> Response {
    if !who.is_system_wide() {
        return refused(Lang::of(&headers));
    }
    let result = async {
        let form = fields(form)?;
        let max_bytes_per_sec = optional(&form, "max_bytes_per_sec")
            .map(|b| {
                b.parse::<u64>().map_err(|_| {
                    HttpError::bad_request("max_bytes_per_sec: a whole number of bytes")
                })
            })
            .transpose()?;
        let spec = crate::forward::peer::PeerSpec {
            name: field(&form, "name"),
            kind: optional(&form, "kind"),
            dicomweb_url: optional(&form, "dicomweb_url"),
            dimse: optional(&form, "dimse"),
            token_file: optional(&form, "token_file"),
            oidc: None,
            facility: field(&form, "facility"),
            max_bytes_per_sec,
            windows: field(&form, "windows")
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect(),
        };
        state.peers.add(&who, spec).await.map_err(HttpError::from)
    }
    .await;
    match result {
        Ok(_) => done("peers"),
        Err(e) => section_page(&state, &who, &headers, "peers", Outcome::failed(e)).await,
    }
}

/// `POST /ui/admin/peers/{name}/remove` (superadmin): as `DELETE /api/v1/peers/{name}`; a peer
/// of the configuration file stays (409 with why).
pub async fn remove_peer(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if !who.is_system_wide() {
        return refused(Lang::of(&headers));
    }
    let outcome = match state.peers.remove(&who, &name).await {
        Ok(true) => return done("peers"),
        Ok(false) => Outcome::failed(HttpError::not_found("no such peer")),
        Err(e) => Outcome::failed(HttpError::from(e)),
    };
    section_page(&state, &who, &headers, "peers", outcome).await
}

/// `POST /ui/admin/tokens`: as `POST /api/v1/tokens`; the page shows the token this once.
pub async fn create_token(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    form: Result<Form<Fields>, FormRejection>,
) -> Response {
    if !is_admin(&who) {
        return refused(Lang::of(&headers));
    }
    let result = async {
        let form = fields(form)?;
        let role = field(&form, "role")
            .parse::<Role>()
            .map_err(|e| HttpError::bad_request(format!("role: {e}")))?;
        let expires_at = optional(&form, "expires_in")
            .map(|e| expiry_after(&e, chrono::Utc::now()))
            .transpose()?;
        let request = NewToken {
            facility: optional(&form, "facility"),
            role,
            name: field(&form, "name"),
            expires_at,
        };
        let issued = state.archive.index().create_token(&who, request).await?;
        Ok::<_, HttpError>(issued)
    }
    .await;
    let outcome = match result {
        Ok(issued) => Outcome {
            status: None,
            token_id: issued.id,
            secret: issued.text,
            error: String::new(),
        },
        Err(e) => Outcome::failed(e),
    };
    section_page(&state, &who, &headers, "tokens", outcome).await
}

/// `POST /ui/admin/tokens/{id}/revoke`: as `DELETE /api/v1/tokens/{id}`.
pub async fn revoke_token(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !is_admin(&who) {
        return refused(Lang::of(&headers));
    }
    match state.archive.index().revoke_token(&who, &id).await {
        Ok(_) => done("tokens"),
        Err(e) => {
            let e = HttpError::from(e);
            section_page(&state, &who, &headers, "tokens", Outcome::failed(e)).await
        }
    }
}
