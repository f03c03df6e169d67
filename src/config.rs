//! Server configuration: a TOML file with environment overrides, and defaults that need no other
//! service (objects on the local disk, index in embedded SQLite, loopback-only listeners).
//!
//! Precedence, lowest first: built-in defaults → `--config FILE` → `TRAMY_*` environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything `tramy serve` and `tramy import` need to know.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Folder holding the object store (`objects/`) and the SQLite index (`index.sqlite`).
    /// Environment: `TRAMY_DATA_DIR`.
    pub data_dir: PathBuf,
    /// Where the metadata index lives: absent, the embedded SQLite file `index.sqlite` in
    /// `data_dir`; `sqlite:///path/index.sqlite`; or `postgres://user:password@host:port/db`,
    /// which any number of tramy nodes can share. Environment: `TRAMY_INDEX_URL`.
    pub index_url: Option<String>,
    /// Where instance objects are stored, as a URL: absent or `file:///abs/path` for a local folder
    /// (default `data_dir/objects`), `s3://bucket/prefix` (AWS, Garage, MinIO: credentials, region
    /// and endpoint from the standard `AWS_*` variables), `gs://bucket/prefix` (`GOOGLE_*`) or
    /// `az://container/prefix` (`AZURE_*`). Environment: `TRAMY_OBJECT_STORE_URL`.
    pub object_store_url: Option<String>,
    /// DIMSE settings.
    pub dimse: DimseConfig,
    /// HTTP settings.
    pub http: HttpConfig,
    /// Ingest policy.
    pub ingest: IngestConfig,
    /// AI triage.
    pub triage: TriageConfig,
    /// Background verification of stored objects.
    pub integrity: IntegrityConfig,
    /// Decoding video frames (MPEG-2, H.264, H.265) with ffmpeg.
    pub video: VideoConfig,
    /// Credentials: OpenID Connect access tokens besides tramy's own API tokens, and
    /// brute-force protection.
    pub auth: AuthConfig,
    /// Other servers this one sends to and fetches priors from (`[[peers]]`, issue #10); more can
    /// be added through `POST /api/v1/peers`.
    pub peers: Vec<crate::forward::PeerSpec>,
    /// What is forwarded where (`[[forward]]`): each rule names a peer, with optional filters.
    pub forward: Vec<crate::forward::rules::ForwardRule>,
    /// How the outbox is worked.
    pub forwarding: ForwardingConfig,
    /// De-identified research exports (issue #15).
    pub research: ResearchConfig,
}

/// De-identified research exports (`POST /api/v1/research/exports`, `tramy research export`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResearchConfig {
    /// Most studies one export may hold; more matching is refused (narrow the grant, modality
    /// or dates), never silently cut.
    pub max_studies_per_export: usize,
}

impl Default for ResearchConfig {
    fn default() -> Self {
        ResearchConfig {
            max_studies_per_export: 500,
        }
    }
}

/// How the outbox is worked (issue #10 item 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardingConfig {
    /// The longest wait between attempts after failures (they double from 1 s), e.g. `"5m"`.
    #[serde(with = "duration_text")]
    pub max_backoff: Duration,
    /// Times a peer may refuse an instance before it is dead-lettered (network failures never
    /// dead-letter: sending resumes when the link is back).
    pub max_refusals: u32,
    /// Most instances in one STOW-RS request.
    pub batch_instances: usize,
    /// STOW-RS requests in flight at once to a peer without a bandwidth limit (one with a limit,
    /// and DIMSE peers, get one).
    pub concurrent_requests: usize,
    /// Most megabytes in one STOW-RS request (with a bandwidth limit, about two seconds of it).
    pub batch_mb: u64,
    /// Most studies one `POST /api/v1/peers/{name}/retrieve` fetches (more: the answer says so).
    pub retrieve_max_studies: usize,
    /// Most instances one retrieval fetches or finds here; asking again continues.
    pub retrieve_max_instances: usize,
    /// The time limit of one retrieval, e.g. `"10m"`; what arrived by then stays.
    #[serde(with = "duration_text")]
    pub retrieve_timeout: Duration,
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        ForwardingConfig {
            max_backoff: Duration::from_secs(300),
            max_refusals: 3,
            batch_instances: 32,
            concurrent_requests: 2,
            batch_mb: 32,
            retrieve_max_studies: 50,
            retrieve_max_instances: 5000,
            retrieve_timeout: Duration::from_secs(600),
        }
    }
}

impl ForwardingConfig {
    /// The sender's settings.
    pub fn sender_settings(
        &self,
        calling_ae_title: &str,
    ) -> crate::forward::sender::SenderSettings {
        crate::forward::sender::SenderSettings {
            max_backoff: self.max_backoff,
            max_refusals: i64::from(self.max_refusals.max(1)),
            batch_instances: self.batch_instances.max(1),
            concurrent_requests: self.concurrent_requests.max(1),
            batch_bytes: self.batch_mb.max(1) * 1024 * 1024,
            calling_ae_title: calling_ae_title.to_string(),
            ..Default::default()
        }
    }
}

/// How callers prove who they are (issue #9). tramy's own API tokens always work; an OpenID
/// Connect provider (a facility's Keycloak) is optional. Failed credentials are throttled per
/// client address (`auth::throttle`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept access tokens (JWTs) of this OpenID Connect provider.
    pub oidc: Option<OidcConfig>,
    /// Failed credentials (a bad token, an unregistered calling AE title) from one client
    /// address within `failure_window` after which that address is refused for `lockout`
    /// without its credentials being checked.
    pub max_failed_attempts: u32,
    /// The period failures are counted over, e.g. `"1m"`.
    #[serde(with = "duration_text")]
    pub failure_window: Duration,
    /// How long a locked-out address is refused (HTTP 429 with `Retry-After`), e.g. `"5m"`.
    #[serde(with = "duration_text")]
    pub lockout: Duration,
    /// Most client addresses remembered at once (fixed memory; the least recently seen is
    /// forgotten first).
    pub max_tracked_addresses: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            oidc: None,
            max_failed_attempts: 10,
            failure_window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            max_tracked_addresses: 65_536,
        }
    }
}

impl AuthConfig {
    /// The throttle limits these settings describe.
    pub fn throttle_limits(&self) -> crate::auth::throttle::Limits {
        crate::auth::throttle::Limits {
            max_failures: self.max_failed_attempts,
            window: self.failure_window,
            lockout: self.lockout,
            max_tracked: self.max_tracked_addresses,
        }
    }
}

/// Durations as people write them (`"90s"`, `"1m"`, `"12h"`), through humantime.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"1m\" ({e})"))
        })
    }
}

/// An OpenID Connect provider whose access tokens tramy accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` claim, exactly (Keycloak: `https://HOST/realms/NAME`).
    pub issuer: String,
    /// The `aud` claim must contain this, when given.
    #[serde(default)]
    pub audience: Option<String>,
    /// The provider's JWKS URL (Keycloak: `…/protocol/openid-connect/certs`); or
    pub jwks_url: Option<String>,
    /// a JWKS file on disk (air-gapped sites, tests).
    pub jwks_file: Option<PathBuf>,
    /// Which claims carry the facility code and the roles.
    #[serde(default)]
    pub claims: crate::auth::oidc::ClaimMapping,
    /// Keys are refetched on an unknown `kid` at most this often, in seconds.
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_min_refresh_secs: u64,
    /// The client tramy signs doctors in as, through the provider's own sign-in page
    /// (authorization code flow with PKCE); its redirect URI to register at the provider is
    /// `PUBLIC_URL/login/oidc/callback`. Unset: the sign-in page takes pasted tokens only.
    #[serde(default)]
    pub client_id: Option<String>,
    /// A confidential client's secret, in a file (Keycloak's default client type); a public
    /// client needs none.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The scopes asked for at sign-in, space-separated.
    #[serde(default = "default_sign_in_scopes")]
    pub scopes: String,
    /// The provider's authorization endpoint; default: from its discovery document
    /// (`ISSUER/.well-known/openid-configuration`).
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// The provider's token endpoint; default: from its discovery document.
    #[serde(default)]
    pub token_endpoint: Option<String>,
}

fn default_sign_in_scopes() -> String {
    "openid".into()
}

fn default_jwks_refresh_secs() -> u64 {
    60
}

/// Background verification of stored objects (what `tramy verify` does, on a schedule).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrityConfig {
    /// Hours between background scrubs of every stored object; 0 turns them off. The first
    /// runs one interval after start-up.
    pub scrub_interval_hours: f64,
    /// Read rate of a background scrub, in megabytes per second, so it never starves retrievals.
    pub scrub_rate_mb_per_s: f64,
    /// What start-up reconciles with the index: `full` lists every object and indexes those
    /// without rows (an index file restored from an older copy or missing its WAL heals
    /// itself); `journal` only the writes this node had in flight when it stopped (a bucket of
    /// millions of objects shared by several nodes is never listed; after restoring an older
    /// index run `tramy reindex`); `auto`: `full` on the embedded SQLite index, else `journal`.
    pub reconcile_at_start: ReconcileAtStart,
}

/// See [`IntegrityConfig::reconcile_at_start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReconcileAtStart {
    /// `full` with SQLite, `journal` with PostgreSQL.
    #[default]
    Auto,
    /// Every object in the store.
    Full,
    /// The writes in this node's journal.
    Journal,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            scrub_interval_hours: 168.0,
            scrub_rate_mb_per_s: 50.0,
            reconcile_at_start: ReconcileAtStart::Auto,
        }
    }
}

/// How video frames are decoded: Debian's ffmpeg as a child process (`dicom/video.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoConfig {
    /// The ffmpeg executable: a name looked up in PATH, or a path.
    pub ffmpeg: PathBuf,
    /// Wall-clock limit of one ffmpeg run, in seconds; the child is killed past it.
    pub timeout_secs: u64,
    /// Most frames one decoding call produces.
    pub max_frames_per_call: u32,
    /// Most decoded bytes (rows x columns x 3 x frames) one call may produce, in MiB.
    pub max_decoded_mb: u64,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            ffmpeg: PathBuf::from("ffmpeg"),
            timeout_secs: 60,
            max_frames_per_call: 1024,
            max_decoded_mb: 1024,
        }
    }
}

impl VideoConfig {
    /// What `dicom::video::configure` takes.
    pub fn settings(&self) -> crate::dicom::video::VideoSettings {
        crate::dicom::video::VideoSettings {
            ffmpeg: self.ffmpeg.clone(),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            max_frames_per_call: self.max_frames_per_call.max(1),
            max_decoded_bytes: self.max_decoded_mb.max(1) << 20,
        }
    }
}

/// AI triage settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriageConfig {
    /// Run models on arrival. With no models in `models_dir` nothing runs either way.
    pub enabled: bool,
    /// Folder with one sub-folder per model (`model.toml` + `.onnx`).
    pub models_dir: PathBuf,
    /// Where inference runs.
    pub device: crate::triage::Device,
    /// Attempts before a job is dead-lettered with its last error.
    pub max_attempts: u32,
    /// Calling AE titles (or `DICOMWEB`, `IMPORT`) whose instances are triaged first, e.g. an
    /// emergency department's CT.
    pub priority_sources: Vec<String>,
    /// Most instances of one model inferred together.
    pub max_batch: u32,
    /// How long the worker waits for more arrivals to fill a batch, in milliseconds.
    pub max_wait_ms: u64,
    /// How long a claimed job belongs to its worker (seconds): a job whose worker died is run
    /// by another node (`tramy worker`, `tramy serve`) once this has passed. Longer than the
    /// slowest inference.
    pub lease_seconds: u64,
}

impl Default for TriageConfig {
    fn default() -> Self {
        TriageConfig {
            enabled: true,
            models_dir: PathBuf::from("models"),
            device: crate::triage::Device::Cpu,
            max_attempts: 3,
            priority_sources: Vec::new(),
            max_batch: 8,
            max_wait_ms: 20,
            lease_seconds: 300,
        }
    }
}

/// DIMSE (PS3.7/PS3.8) listener settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DimseConfig {
    /// Listen address. Environment: `TRAMY_DIMSE_ADDR`.
    pub addr: SocketAddr,
    /// Our application entity title. Environment: `TRAMY_AE_TITLE`.
    pub ae_title: String,
    /// Reject associations whose Called AE Title is not ours.
    pub require_called_ae_title: bool,
    /// Calling AE titles allowed to associate; empty means any.
    pub allowed_calling_ae_titles: Vec<String>,
    /// Most associations served at once; more are rejected (transient, "local limit exceeded").
    pub max_associations: usize,
    /// Seconds within which the next whole PDU must arrive, counted from when we start waiting
    /// for it: the association's idle limit, which a trickle of bytes does not reset.
    pub pdu_timeout_secs: u64,
    /// Seconds a new connection has to deliver its whole A-ASSOCIATE-RQ before it is closed
    /// (PS3.8 9.1.5 ARTIM); also how long a rejected requestor has to close the connection.
    pub artim_secs: u64,
    /// Most connections (negotiating or established) from one IP address at once; more are
    /// rejected (transient, "local limit exceeded"), so one host cannot take every slot.
    pub max_associations_per_peer: usize,
    /// Largest PDU we accept, in bytes.
    pub max_pdu_length: u32,
    /// C-MOVE destinations: AE title → `host:port`.
    pub move_destinations: BTreeMap<String, String>,
    /// PEM file of the certificate chain (server certificate first) for DICOM over TLS (PS3.15
    /// B.1, Basic TLS Secure Transport Connection Profile); with `tls_private_key` the DICOM
    /// port speaks only TLS. Unset: plain TCP.
    pub tls_certificate: Option<PathBuf>,
    /// PEM file of the private key (PKCS#8, PKCS#1 or SEC1) of `tls_certificate`.
    pub tls_private_key: Option<PathBuf>,
    /// PEM file of the CA certificates a peer's client certificate must chain to; when set,
    /// every association needs one (mutual TLS, as PS3.15 B.1 expects). Needs TLS on.
    pub tls_client_ca: Option<PathBuf>,
    /// C-FIND (and C-GET/C-MOVE identifiers) match Patient's Name as QIDO-RS
    /// `fuzzymatching=true` does: each word of the key begins a word of the name, in any order,
    /// whatever its accents and case (`nguyen` and `van an` find `Nguyễn^Văn An`), as PS3.4
    /// C.2.2.2.1 allows for PN; a match by the standard's rules always counts too. Most
    /// modalities cannot ask for it (extended negotiation), hence on by default; `false`: the
    /// standard's single value and wildcard matching, case-insensitive.
    pub fuzzy_person_names: bool,
}

/// HTTP listener settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Environment: `TRAMY_HTTP_ADDR`.
    pub addr: SocketAddr,
    /// The URL clients reach tramy at (e.g. `https://pacs.example.org`), used in RetrieveURL
    /// and BulkDataURI values; when empty, taken from each request's Host header.
    pub public_url: String,
    /// Origins a browser viewer may call from (CORS); `["*"]` allows any.
    pub cors_allowed_origins: Vec<String>,
    /// Largest single part a STOW-RS request may carry, in megabytes; `[ingest] max_instance_mb`
    /// applies too, whichever is smaller.
    pub max_part_mb: u64,
    /// Seconds a client has to send a request's whole header; also how long an idle keep-alive
    /// connection waits for its next request.
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may stall (no data arriving) before the request fails.
    pub body_read_timeout_secs: u64,
    /// Most HTTP connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Most results a QIDO-RS request returns (PS3.18 8.3.4.4: the origin server may return
    /// fewer than asked, with a `Warning` header saying so).
    pub max_query_results: u64,
    /// Most results a QIDO-RS request with `includefield=all` returns (each carries the whole
    /// stored metadata of its instance).
    pub max_query_results_all_fields: u64,
    /// Rendered images and heatmaps computed at once; further requests get 503 with
    /// Retry-After. 0 means the number of CPU cores.
    pub max_concurrent_renders: usize,
    /// A browser viewer's built files (OHIF's `dist/`) served beside `/dicomweb` on the same
    /// origin (no CORS), OHIF's routes such as `/viewer?StudyInstanceUIDs=…` included. Unset:
    /// the OHIF Viewer the build fetched from npm (`scripts/fetch-ohif.sh`), when it did; `""`:
    /// no viewer.
    pub viewer_dir: Option<PathBuf>,
    /// PEM file of the certificate chain (server certificate first); with `tls_private_key`
    /// the HTTP port speaks only HTTPS. Unset: plain HTTP (e.g. behind a TLS reverse proxy).
    pub tls_certificate: Option<PathBuf>,
    /// PEM file of the private key (PKCS#8, PKCS#1 or SEC1) of `tls_certificate`.
    pub tls_private_key: Option<PathBuf>,
}

impl HttpConfig {
    /// The viewer's files to serve: `viewer_dir`, else the OHIF Viewer the build fetched
    /// (when it is there); none for `viewer_dir = ""`.
    pub fn viewer_files(&self) -> Option<PathBuf> {
        match &self.viewer_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.clone()),
            None => option_env!("TRAMY_BUNDLED_VIEWER")
                .map(PathBuf::from)
                .filter(|dist| dist.join("index.html").is_file()),
        }
    }
}

/// What to do when an instance arrives under a SOP Instance UID we already hold with other bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicatePolicy {
    /// Keep what we have; answer with a warning status (PS3.4 B.2.3, 0xB000-range).
    KeepFirst,
    /// Replace the stored object and its index rows with the new one.
    Overwrite,
    /// Refuse the new one with a failure status.
    Reject,
}

/// Ingest policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Policy for a different object under an existing SOP Instance UID.
    pub on_conflict: DuplicatePolicy,
    /// New associations and uploads are refused when free space in `data_dir` falls below this.
    pub min_free_disk_mb: u64,
    /// fsync each object and the index commit before acknowledging (power-loss durability).
    /// Turning it off keeps crash (process kill) durability only.
    pub fsync: bool,
    /// Largest instance (data set bytes) accepted over any protocol, in megabytes; a larger one
    /// is read, discarded and refused (C-STORE 0xA700, STOW-RS Failure Reason 0xA700).
    pub max_instance_mb: u64,
    /// A data set larger than this (kilobytes) is received into a staging file under
    /// `data_dir/staging/` instead of memory.
    pub spool_above_kb: u64,
    /// Memory all receptions in progress may hold together (megabytes); past it they spill to
    /// staging files earlier, so many concurrent senders cannot add up.
    pub receive_memory_mb: u64,
    /// A data set received into a staging file is also uploaded to the object store while it
    /// arrives (C-STORE and STOW-RS), so it is stored moments after its last byte; off, it is
    /// uploaded from the staging file once whole.
    pub upload_while_receiving: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./tramy-data"),
            index_url: None,
            object_store_url: None,
            dimse: DimseConfig::default(),
            http: HttpConfig::default(),
            ingest: IngestConfig::default(),
            triage: TriageConfig::default(),
            integrity: IntegrityConfig::default(),
            video: VideoConfig::default(),
            auth: AuthConfig::default(),
            peers: Vec::new(),
            forward: Vec::new(),
            forwarding: ForwardingConfig::default(),
            research: ResearchConfig::default(),
        }
    }
}

impl Default for DimseConfig {
    fn default() -> Self {
        DimseConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 11112)),
            ae_title: "TRAMY".to_string(),
            require_called_ae_title: false,
            allowed_calling_ae_titles: Vec::new(),
            max_associations: 64,
            pdu_timeout_secs: 60,
            artim_secs: 10,
            max_associations_per_peer: 16,
            max_pdu_length: 262_144,
            move_destinations: BTreeMap::new(),
            tls_certificate: None,
            tls_private_key: None,
            tls_client_ca: None,
            fuzzy_person_names: true,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            cors_allowed_origins: Vec::new(),
            max_part_mb: 4096,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
            max_connections: 4096,
            max_query_results: 10_000,
            max_query_results_all_fields: 1_000,
            max_concurrent_renders: 0,
            viewer_dir: None,
            tls_certificate: None,
            tls_private_key: None,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            on_conflict: DuplicatePolicy::KeepFirst,
            min_free_disk_mb: 1024,
            fsync: true,
            max_instance_mb: 4096,
            spool_above_kb: 16 * 1024,
            receive_memory_mb: 128,
            upload_while_receiving: true,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` does not exist.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// The file or an environment variable does not parse, or names an unknown key. figment's
    /// message names the key and where its value came from (the file, or the variable).
    #[error("invalid configuration: {0}")]
    Source(#[from] Box<figment::Error>),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A TLS certificate and its key are set together or not at all.
fn both_or_neither(
    section: &str,
    certificate: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    match (certificate, key) {
        (Some(_), None) => Err(ConfigError::Invalid(format!(
            "{section}.tls_certificate is set but {section}.tls_private_key is not: set both or neither"
        ))),
        (None, Some(_)) => Err(ConfigError::Invalid(format!(
            "{section}.tls_private_key is set but {section}.tls_certificate is not: set both or neither"
        ))),
        _ => Ok(()),
    }
}

/// The environment variables that set configuration keys: the four of the first releases
/// (`TRAMY_DATA_DIR`, `TRAMY_DIMSE_ADDR`, `TRAMY_HTTP_ADDR`, `TRAMY_AE_TITLE`),
/// `TRAMY_INDEX_URL`, `TRAMY_OBJECT_STORE_URL`, and any key as
/// `TRAMY_<SECTION>__<KEY>` (e.g. `TRAMY_INGEST__FSYNC=false`,
/// `TRAMY_DIMSE__MAX_ASSOCIATIONS=128`). Other `TRAMY_*` variables (`TRAMY_CONFIG`, the tests'
/// switches) are not configuration keys and are left alone.
fn environment() -> Env {
    // figment hands these closures the variable name as written (upper case), prefix removed.
    let key_of = |name: &figment::value::UncasedStr| -> Option<String> {
        let name = name.as_str().to_ascii_lowercase();
        Some(match name.as_str() {
            "data_dir" | "index_url" | "object_store_url" => name,
            "dimse_addr" => "dimse.addr".into(),
            "http_addr" => "http.addr".into(),
            "ae_title" => "dimse.ae_title".into(),
            nested if nested.contains("__") => nested.replace("__", "."),
            _ => return None,
        })
    };
    Env::prefixed("TRAMY_").filter_map(move |name| key_of(name).map(Into::into))
}

impl Config {
    /// Loads defaults, then `file` if given, then the `TRAMY_*` environment variables
    /// ([`environment`]).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Missing(path.to_owned()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(environment())
            .extract()
            .map_err(|e| ConfigError::Source(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ae = &self.dimse.ae_title;
        if ae.trim().is_empty() || ae.len() > 16 || !ae.chars().all(|c| c.is_ascii() && c != '\\') {
            return Err(ConfigError::Invalid(format!(
                "AE title {ae:?} must be 1 to 16 ASCII characters without backslash (PS3.5 6.2, AE)"
            )));
        }
        if self.dimse.max_associations == 0 {
            return Err(ConfigError::Invalid(
                "dimse.max_associations must be at least 1".into(),
            ));
        }
        if self.dimse.max_associations_per_peer == 0 || self.http.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "dimse.max_associations_per_peer and http.max_connections must be at least 1"
                    .into(),
            ));
        }
        if self.dimse.max_pdu_length < 4096 {
            return Err(ConfigError::Invalid(
                "dimse.max_pdu_length must be at least 4096 bytes".into(),
            ));
        }
        both_or_neither(
            "http",
            &self.http.tls_certificate,
            &self.http.tls_private_key,
        )?;
        both_or_neither(
            "dimse",
            &self.dimse.tls_certificate,
            &self.dimse.tls_private_key,
        )?;
        if self.dimse.tls_client_ca.is_some() && self.dimse.tls_certificate.is_none() {
            return Err(ConfigError::Invalid(
                "dimse.tls_client_ca needs dimse.tls_certificate and dimse.tls_private_key".into(),
            ));
        }
        Ok(())
    }

    /// The PDU read timeout as a [`Duration`].
    pub fn pdu_timeout(&self) -> Duration {
        Duration::from_secs(self.dimse.pdu_timeout_secs.max(1))
    }

    /// The A-ASSOCIATE-RQ timer (ARTIM) as a [`Duration`].
    pub fn artim(&self) -> Duration {
        Duration::from_secs(self.dimse.artim_secs.max(1))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn defaults_bind_to_loopback_only() {
        let c = Config::default();
        assert!(c.dimse.addr.ip().is_loopback());
        assert!(c.http.addr.ip().is_loopback());
        assert_eq!(c.dimse.ae_title, "TRAMY");
        assert_eq!(c.ingest.on_conflict, DuplicatePolicy::KeepFirst);
    }

    #[test]
    fn environment_overrides_file_values_old_names_and_any_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "tramy.toml",
                "data_dir = \"/srv/a\"\n[dimse]\nae_title = \"FROMFILE\"\n[ingest]\non_conflict = \"reject\"\n",
            )?;
            jail.set_env("TRAMY_AE_TITLE", "FROMENV");
            jail.set_env("TRAMY_DIMSE_ADDR", "127.0.0.1:4242");
            jail.set_env("TRAMY_INGEST__FSYNC", "false");
            jail.set_env("TRAMY_DIMSE__MAX_ASSOCIATIONS", "128");
            jail.set_env("TRAMY_CONFIG", "ignored: not a key");
            jail.set_env("TRAMY_TEST_CUDA", "1");
            jail.set_env("TRAMY_TEST_OBJECT_STORE", "garage");
            jail.set_env("TRAMY_OBJECT_STORE_URL", "s3://bucket/prefix");
            let c = Config::load(Some(Path::new("tramy.toml"))).expect("loads");
            assert_eq!(c.object_store_url.as_deref(), Some("s3://bucket/prefix"));
            assert_eq!(c.dimse.ae_title, "FROMENV");
            assert_eq!(c.dimse.addr.port(), 4242);
            assert_eq!(c.data_dir, PathBuf::from("/srv/a"));
            assert_eq!(c.ingest.on_conflict, DuplicatePolicy::Reject);
            assert!(!c.ingest.fsync);
            assert_eq!(c.dimse.max_associations, 128);
            Ok(())
        });
    }

    #[test]
    fn bad_environment_values_are_clear_errors_naming_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRAMY_HTTP_ADDR", "nonsense");
            let err = Config::load(None).unwrap_err().to_string().to_lowercase();
            assert!(err.contains("http.addr") && err.contains("tramy_"), "{err}");
            jail.clear_env();
            jail.set_env("TRAMY_DIMSE__MAX_ASOCIATIONS", "3");
            let err = Config::load(None).unwrap_err().to_string().to_lowercase();
            assert!(err.contains("max_asociations"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/tramy.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tramy.toml"));
    }

    #[test]
    fn unknown_keys_in_file_are_refused() {
        assert!(toml::from_str::<Config>("dat_dir = \"x\"").is_err());
    }

    #[test]
    fn a_tls_certificate_without_its_key_is_refused_naming_both_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "[http]\ntls_certificate = \"cert.pem\"\n")?;
            let err = Config::load(Some(Path::new("a.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("http.tls_certificate") && err.contains("http.tls_private_key"),
                "{err}"
            );
            jail.create_file("b.toml", "[dimse]\ntls_private_key = \"key.pem\"\n")?;
            let err = Config::load(Some(Path::new("b.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("dimse.tls_private_key"), "{err}");
            jail.create_file("c.toml", "[dimse]\ntls_client_ca = \"ca.pem\"\n")?;
            let err = Config::load(Some(Path::new("c.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("dimse.tls_client_ca"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn auth_durations_are_written_as_people_write_them() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "t.toml",
                "[auth]\nmax_failed_attempts = 5\nfailure_window = \"90s\"\nlockout = \"15m\"\n",
            )?;
            let c = Config::load(Some(Path::new("t.toml"))).expect("loads");
            assert_eq!(c.auth.max_failed_attempts, 5);
            assert_eq!(c.auth.failure_window, Duration::from_secs(90));
            assert_eq!(c.auth.lockout, Duration::from_secs(900));
            jail.set_env("TRAMY_AUTH__LOCKOUT", "soon");
            let err = Config::load(Some(Path::new("t.toml")))
                .unwrap_err()
                .to_string();
            let err = err.to_lowercase();
            assert!(
                err.contains("auth.lockout") && err.contains("soon"),
                "{err}"
            );
            Ok(())
        });
        let defaults = Config::default().auth.throttle_limits();
        assert_eq!(defaults, crate::auth::throttle::Limits::default());
    }
}
