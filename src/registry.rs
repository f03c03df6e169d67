//! The registry (issue #9): facilities (tenants), the AE titles that speak for them, and tramy's own
//! API tokens. This module holds the domain types and rules (what a valid facility code or AE title
//! is, which roles need a facility, how long a token lives) and the first-start set-up; the rows
//! live in the index (`store/registry.rs`, behind `Index` methods that take the caller).
//!
//! Tokens are issued and checked by [`crate::auth::api_token`]; only their hash is stored.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::access::Principal;
use crate::auth::api_token::{self, IssuedToken};
use crate::auth::{AuthError, Identity, Role};
use crate::store::{Index, IndexError};

/// What a facility is, in the referral pyramid.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FacilityKind {
    /// A commune health station.
    CommuneStation,
    /// A district or provincial hospital.
    Hospital,
    /// A regional or national hub.
    Hub,
}

impl FacilityKind {
    /// The stored and command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            FacilityKind::CommuneStation => "commune_station",
            FacilityKind::Hospital => "hospital",
            FacilityKind::Hub => "hub",
        }
    }
}

impl std::fmt::Display for FacilityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for FacilityKind {
    type Err = RegistryError;

    /// `commune_station` (or `commune-station`), `hospital`, `hub`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "commune_station" => Ok(FacilityKind::CommuneStation),
            "hospital" => Ok(FacilityKind::Hospital),
            "hub" => Ok(FacilityKind::Hub),
            _ => Err(RegistryError::Invalid(format!(
                "unknown facility kind {s:?}: use commune_station, hospital or hub"
            ))),
        }
    }
}

/// A facility as registered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Facility {
    /// The national facility code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Commune station, hospital or hub.
    pub kind: FacilityKind,
    /// The facility it refers patients to, if any.
    pub parent: Option<String>,
    /// When it was registered (RFC 3339).
    pub created_at: String,
}

/// A facility to register.
#[derive(Debug, Clone)]
pub struct NewFacility {
    /// The national facility code: 1-32 ASCII letters, digits, `-`, `_` or `.`.
    pub code: String,
    /// Its name (1-200 characters, no control characters).
    pub name: String,
    /// Commune station, hospital or hub.
    pub kind: FacilityKind,
    /// An already registered facility it refers patients to.
    pub parent: Option<String>,
}

/// An AE title registered for a facility: associations calling with it act for that facility.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ApplicationEntity {
    /// The AE title, without padding.
    pub ae_title: String,
    /// The facility it belongs to.
    pub facility: String,
    /// The host it is expected to call from, if given.
    pub host: Option<String>,
    /// The port it listens on at `host`, if given: where tramy opens associations to it (a
    /// Storage Commitment result after the requesting association ended).
    pub port: Option<u16>,
    /// When it was registered (RFC 3339).
    pub created_at: String,
}

/// An API token's record as listed: never the token, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TokenRecord {
    /// The public id (the part after `tramy_` in the token).
    pub id: String,
    /// The facility it acts for; `None` for a superadmin token.
    pub facility: Option<String>,
    /// Its role.
    pub role: Role,
    /// A note saying whose or what it is.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last accepted.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token to make.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The facility it acts for: required for every role but superadmin, absent for superadmin.
    pub facility: Option<String>,
    /// Its role.
    pub role: Role,
    /// A note saying whose or what it is (at most 200 characters).
    pub name: String,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a registry operation was refused. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A value is malformed (code, name, AE title, host, role, duration).
    #[error("{0}")]
    Invalid(String),
    /// The facility code is taken.
    #[error("facility {0} already exists: choose another code (`tramy facility list` shows them)")]
    DuplicateFacility(String),
    /// The facility named (as owner or parent) is not registered.
    #[error("no facility {0}: add it first with `tramy facility add {0} --name NAME`")]
    UnknownFacility(String),
    /// The AE title is taken.
    #[error("AE title {ae_title} is already registered for facility {facility}: each AE title belongs to one facility")]
    DuplicateAeTitle {
        /// The AE title.
        ae_title: String,
        /// Its facility.
        facility: String,
    },
    /// No AE title of the caller's facility has this name.
    #[error("no AE title {0} among yours: `tramy ae list` shows them")]
    UnknownAeTitle(String),
    /// A facility-scoped role without a facility.
    #[error("a {0} token acts for one facility: give --facility CODE")]
    FacilityRequired(Role),
    /// A superadmin token with a facility.
    #[error("a superadmin token is system-wide: leave out --facility")]
    SuperadminHasNoFacility,
    /// No token has this id.
    #[error("no API token with id {0}: `tramy token list` shows them")]
    UnknownToken(String),
    /// The operating system's random source failed: no secret can be made safely.
    #[error("cannot make a random token: {0}")]
    Random(String),
    /// The first start's token file cannot be written.
    #[error("cannot write {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Most characters in a name or note.
const MAX_TEXT: usize = 200;

/// A facility code: 1-32 ASCII letters, digits, `-`, `_`, `.` (national codes are digits; `LOCAL`
/// is tramy's own).
pub fn check_facility_code(code: &str) -> Result<(), RegistryError> {
    let ok = (1..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "facility code {code:?} is not valid: use 1-32 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// A name or note: at most 200 characters, no control characters.
fn check_text(what: &str, text: &str, required: bool) -> Result<(), RegistryError> {
    if required && text.trim().is_empty() {
        return Err(RegistryError::Invalid(format!("{what} must not be empty")));
    }
    if text.chars().count() > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "{what} must be at most {MAX_TEXT} characters with no control characters"
        )));
    }
    Ok(())
}

impl NewFacility {
    /// Checks the code and name.
    pub fn check(&self) -> Result<(), RegistryError> {
        check_facility_code(&self.code)?;
        if let Some(parent) = &self.parent {
            check_facility_code(parent)?;
        }
        check_text("the facility name", &self.name, true)
    }
}

/// An AE title as PS3.5 6.2 (VR AE) allows: at most 16 characters of the default repertoire
/// (printable ASCII), no backslash, leading and trailing spaces not significant, not all spaces.
/// Returns it without the padding.
pub fn normalise_ae_title(ae_title: &str) -> Result<String, RegistryError> {
    let refuse = |why: &str| {
        Err(RegistryError::Invalid(format!(
            "AE title {ae_title:?} is not valid: {why} (PS3.5 6.2, VR AE)"
        )))
    };
    if ae_title.len() > 16 {
        return refuse("longer than 16 characters");
    }
    if ae_title.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
        return refuse("only printable ASCII characters are allowed");
    }
    if ae_title.contains('\\') {
        return refuse("a backslash is not allowed");
    }
    let trimmed = ae_title.trim_matches(' ');
    if trimmed.is_empty() {
        return refuse("it must not be empty or all spaces");
    }
    Ok(trimmed.to_owned())
}

/// A host an AE calls from: an IP address or a DNS name.
pub fn check_host(host: &str) -> Result<(), RegistryError> {
    let name_ok = (1..=253).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    if host.parse::<std::net::IpAddr>().is_ok() || name_ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "host {host:?} is not an IP address or a DNS name"
        )))
    }
}

impl NewToken {
    /// Checks that the facility matches the role and the note is plain text.
    pub fn check(&self) -> Result<(), RegistryError> {
        match (&self.facility, self.role) {
            (Some(_), Role::Superadmin) => return Err(RegistryError::SuperadminHasNoFacility),
            (None, role) if role != Role::Superadmin => {
                return Err(RegistryError::FacilityRequired(role))
            }
            (Some(code), _) => check_facility_code(code)?,
            (None, _) => {}
        }
        check_text("the token name", &self.name, false)
    }
}

/// When a token given `--expires-in` (`30d`, `12h`, `90m`: humantime's syntax) stops working.
pub fn expiry_after(expires_in: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, RegistryError> {
    let bad = |why: String| {
        RegistryError::Invalid(format!(
            "--expires-in {expires_in:?}: {why} (write e.g. 30d, 12h or 90m)"
        ))
    };
    let span = humantime::parse_duration(expires_in.trim()).map_err(|e| bad(e.to_string()))?;
    if span.is_zero() {
        return Err(bad("a token must live longer than that".into()));
    }
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| bad("too long".into()))
}

/// A new random token (the OS random source).
pub fn new_token() -> Result<IssuedToken, RegistryError> {
    api_token::issue().map_err(|e| RegistryError::Random(e.to_string()))
}

/// Tokens are noted as used at most this often (a write per request would load the writer).
const LAST_USED_GRANULARITY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Checks a presented API token against the registry and notes its use: who it names, or why it
/// is refused (unknown, revoked, expired, malformed; never repeating the token).
pub async fn authenticate_api_token(
    index: &Index,
    presented: &str,
) -> Result<Result<Identity, AuthError>, IndexError> {
    let id = match api_token::id_of(presented) {
        Ok(id) => id,
        Err(e) => return Ok(Err(e)),
    };
    let who = Principal::system();
    let Some((stored, last_used)) = index.stored_token(&who, id).await? else {
        return Ok(Err(AuthError::Invalid("unknown API token".into())));
    };
    let now = Utc::now();
    let identity = api_token::verify(presented, &stored, now);
    if identity.is_ok() && last_used.is_none_or(|at| now - at >= LAST_USED_GRANULARITY) {
        index.token_used(&who, &stored.id, now).await?;
    }
    Ok(identity)
}

/// What the first start did with the registry.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstStart {
    /// The registry already had entries: nothing was made.
    AlreadySetUp,
    /// Facility `LOCAL` and a superadmin token were made; the token is in this file.
    Created(PathBuf),
    /// Facility `LOCAL` was made and this file already existed: it was left alone, and the
    /// token in it, if it holds one, was registered as superadmin again.
    TokenFileExists(PathBuf),
}

/// The facility tramy makes on first start.
pub const LOCAL_FACILITY: &str = "LOCAL";

/// On a registry with no facility and no token: makes facility [`LOCAL_FACILITY`] and a superadmin
/// token, writes the token to `data_dir/admin-token` (mode 0600, never replacing a file), and says
/// what it did. The file is written before the token is stored, so a token is never stored that
/// nobody was given.
pub async fn first_start(index: &Index, data_dir: &Path) -> Result<FirstStart, RegistryError> {
    let who = Principal::system();
    if !index.registry_is_empty(&who).await? {
        return Ok(FirstStart::AlreadySetUp);
    }
    let facility = NewFacility {
        code: LOCAL_FACILITY.into(),
        name: "This tramy server".into(),
        kind: FacilityKind::Hospital,
        parent: None,
    };
    let path = data_dir.join("admin-token");
    let token = new_token()?;
    match write_secret(&path, &token.text) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // An index rebuilt beside its data (`tramy reindex`, a lost index file): the token
            // its admin kept still works, rather than locking them out of their archive.
            let kept = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| api_token::reread(&text));
            let record = NewToken {
                facility: None,
                role: Role::Superadmin,
                name: "first start (kept in admin-token)".into(),
                expires_at: None,
            };
            index
                .bootstrap_registry(&who, facility, kept.map(|token| (token, record)))
                .await?;
            return Ok(FirstStart::TokenFileExists(path));
        }
        Err(source) => return Err(RegistryError::TokenFile { path, source }),
    }
    let record = NewToken {
        facility: None,
        role: Role::Superadmin,
        name: "first start".into(),
        expires_at: None,
    };
    match index
        .bootstrap_registry(&who, facility, Some((token, record)))
        .await
    {
        Ok(true) => Ok(FirstStart::Created(path)),
        // Someone registered something meanwhile (`tramy facility add` beside us): the token
        // written is not stored, so it must not be left behind looking valid.
        Ok(false) => {
            let _ = std::fs::remove_file(&path);
            Ok(FirstStart::AlreadySetUp)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Writes `secret` to a new file only its owner can read (create_new: never replaces a file).
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}

/// A time for tables: RFC 3339 to the second.
fn when(at: Option<DateTime<Utc>>, none: &str) -> String {
    at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| none.to_owned())
}

/// `tramy token list`: one line per token under a header.
pub fn render_tokens(tokens: &[TokenRecord]) -> String {
    let mut out = format!(
        "{:<16}  {:<10}  {:<10}  {:<20}  {:<20}  {:<20}  {:<20}  {}\n",
        "id", "facility", "role", "name", "created", "expires", "last used", "revoked"
    );
    for t in tokens {
        out.push_str(&format!(
            "{:<16}  {:<10}  {:<10}  {:<20}  {:<20}  {:<20}  {:<20}  {}\n",
            t.id,
            t.facility.as_deref().unwrap_or("-"),
            t.role.as_str(),
            if t.name.is_empty() { "-" } else { &t.name },
            when(Some(t.created_at), "-"),
            when(t.expires_at, "never"),
            when(t.last_used_at, "never"),
            when(t.revoked_at, "-"),
        ));
    }
    out
}

/// `tramy facility list`.
pub fn render_facilities(facilities: &[Facility]) -> String {
    let mut out = format!(
        "{:<12}  {:<16}  {:<12}  {:<24}  {}\n",
        "code", "kind", "parent", "created", "name"
    );
    for f in facilities {
        out.push_str(&format!(
            "{:<12}  {:<16}  {:<12}  {:<24}  {}\n",
            f.code,
            f.kind,
            f.parent.as_deref().unwrap_or("-"),
            f.created_at,
            f.name
        ));
    }
    out
}

/// `tramy ae list`.
pub fn render_application_entities(entities: &[ApplicationEntity]) -> String {
    let mut out = format!(
        "{:<16}  {:<12}  {:<24}  {}\n",
        "ae title", "facility", "created", "host"
    );
    for ae in entities {
        out.push_str(&format!(
            "{:<16}  {:<12}  {:<24}  {}\n",
            ae.ae_title,
            ae.facility,
            ae.created_at,
            match (&ae.host, ae.port) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.clone(),
                _ => "-".into(),
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles_follow_the_ae_vr() {
        assert_eq!(normalise_ae_title(" CT1 ").unwrap(), "CT1");
        assert_eq!(normalise_ae_title("ABCDEFGHIJKLMNOP").unwrap().len(), 16);
        for bad in [
            "",
            "   ",
            "ABCDEFGHIJKLMNOPQ",
            "CT\\1",
            "CT\u{1b}1",
            "CT\n",
            "PHÒNG",
        ] {
            assert!(normalise_ae_title(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn facility_codes_and_kinds() {
        for good in ["LOCAL", "79001", "BV-CHO.RAY_1"] {
            check_facility_code(good).unwrap();
        }
        for bad in ["", "a b", "x/y", &"9".repeat(33)] {
            assert!(check_facility_code(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            "commune-station".parse::<FacilityKind>().unwrap(),
            FacilityKind::CommuneStation
        );
        assert!("clinic".parse::<FacilityKind>().is_err());
    }

    #[test]
    fn expiry_reads_days_hours_minutes_and_refuses_nonsense() {
        let now = Utc::now();
        assert_eq!(
            expiry_after("30d", now).unwrap() - now,
            chrono::Duration::days(30)
        );
        assert_eq!(
            expiry_after("90m", now).unwrap() - now,
            chrono::Duration::minutes(90)
        );
        for bad in ["", "0s", "soon", "-1d", "99999999999999d"] {
            let err = expiry_after(bad, now).unwrap_err().to_string();
            assert!(err.contains("30d"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_token_has_a_facility_exactly_when_its_role_is_not_superadmin() {
        let token = |facility: Option<&str>, role| NewToken {
            facility: facility.map(str::to_owned),
            role,
            name: String::new(),
            expires_at: None,
        };
        token(Some("79001"), Role::Clinician).check().unwrap();
        token(None, Role::Superadmin).check().unwrap();
        assert!(matches!(
            token(None, Role::Modality).check(),
            Err(RegistryError::FacilityRequired(Role::Modality))
        ));
        assert!(matches!(
            token(Some("79001"), Role::Superadmin).check(),
            Err(RegistryError::SuperadminHasNoFacility)
        ));
    }
}
