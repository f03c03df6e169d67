//! A peer: another server this one sends studies to and fetches priors from (issue #10 item 1),
//! reached by DICOMweb (tramy or any PS3.18 origin server) or DIMSE, with the credential tramy
//! presents and the facility it is.

use std::path::PathBuf;

use chrono::{NaiveTime, Timelike};

/// What protocol a peer speaks and what it confirms.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// Another tramy: DICOMweb plus signed manifests and receipts (`/api/v1/deliveries`).
    Tramy,
    /// Any PS3.18 origin server (Orthanc, dcm4chee): the STOW-RS response stands in for a receipt.
    Dicomweb,
    /// A DIMSE peer: C-STORE, and Storage Commitment where it supports it.
    Dimse,
}

impl PeerKind {
    /// The name used in configuration, the API and the index.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Tramy => "tramy",
            PeerKind::Dicomweb => "dicomweb",
            PeerKind::Dimse => "dimse",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<PeerKind> {
        [PeerKind::Tramy, PeerKind::Dicomweb, PeerKind::Dimse]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where a peer is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEndpoint {
    /// A DICOMweb service root, e.g. `https://hospital.example/dicomweb`.
    DicomWeb {
        /// The service root, without a trailing `/`.
        url: String,
    },
    /// A DIMSE application entity.
    Dimse {
        /// The peer's AE title.
        ae_title: String,
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
}

/// A daily period, in the server's local time, when sending to a peer is allowed; it may span
/// midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    start: NaiveTime,
    end: NaiveTime,
}

impl TimeWindow {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<TimeWindow, PeerError> {
        let bad = || {
            PeerError::Invalid(format!(
                "window {text:?}: write it as HH:MM-HH:MM, e.g. 22:00-06:00"
            ))
        };
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let time = |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| bad());
        let (start, end) = (time(a)?, time(b)?);
        if start == end {
            return Err(bad());
        }
        Ok(TimeWindow { start, end })
    }

    /// Whether `at` falls in the window.
    pub fn contains(&self, at: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= at && at < self.end
        } else {
            at >= self.start || at < self.end
        }
    }

    /// Seconds from `at` until the window opens (0 when open).
    pub fn seconds_until_open(&self, at: NaiveTime) -> u32 {
        if self.contains(at) {
            return 0;
        }
        let (now, start) = (
            at.num_seconds_from_midnight(),
            self.start.num_seconds_from_midnight(),
        );
        (start + 86_400 - now) % 86_400
    }
}

impl std::fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

/// A peer as configured (TOML `[[peers]]`) or added through `POST /api/v1/peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its name, used by forwarding rules and the API.
    pub name: String,
    /// What it speaks.
    pub kind: PeerKind,
    /// Where it is.
    pub endpoint: PeerEndpoint,
    /// The file holding the bearer token tramy presents (read at each use, so it can be rotated).
    pub token_file: Option<PathBuf>,
    /// Or: the OpenID Connect client tramy gets an access token as.
    pub oidc: Option<super::credential::ClientCredentials>,
    /// The facility the peer is (the destination named in manifests).
    pub facility: String,
    /// Most bytes per second sent to it; `None`: no limit.
    pub max_bytes_per_sec: Option<u64>,
    /// When sending is allowed; empty: always. Urgent instances are sent outside them too.
    pub windows: Vec<TimeWindow>,
    /// Whether it comes from the configuration file (then the API cannot delete it).
    pub configured: bool,
}

/// A peer described in text, as the TOML and the API give it.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// Its name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// `tramy`, `dicomweb` or `dimse`; by default `dimse` with `dimse`, else `tramy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A DICOMweb service root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dicomweb_url: Option<String>,
    /// A DIMSE peer, `AE@host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimse: Option<String>,
    /// The file holding the bearer token tramy presents to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Or: an OpenID Connect client whose access tokens tramy presents (client credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<super::credential::ClientCredentials>,
    /// The facility the peer is.
    pub facility: String,
    /// Most bytes per second sent to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_sec: Option<u64>,
    /// When sending is allowed, `HH:MM-HH:MM` in local time; none: always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<String>,
}

/// A peer description that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    /// A field is not valid; the message says which and how to write it.
    #[error("{0}")]
    Invalid(String),
}

impl PeerSpec {
    /// Checks the description and makes the peer.
    pub fn to_peer(&self, configured: bool) -> Result<Peer, PeerError> {
        let invalid = |m: String| Err(PeerError::Invalid(m));
        if crate::registry::check_facility_code(&self.name).is_err() {
            return invalid(format!(
                "peer name {:?}: use 1 to 32 letters, digits, '-', '_' or '.'",
                self.name
            ));
        }
        if crate::registry::check_facility_code(&self.facility).is_err() {
            return invalid(format!(
                "peer {}: facility {:?} is not a facility code",
                self.name, self.facility
            ));
        }
        let endpoint = match (&self.dicomweb_url, &self.dimse) {
            (Some(url), None) => PeerEndpoint::DicomWeb {
                url: dicomweb_url(&self.name, url)?,
            },
            (None, Some(text)) => dimse_address(&self.name, text)?,
            _ => {
                return invalid(format!(
                    "peer {}: give exactly one of dicomweb_url and dimse",
                    self.name
                ))
            }
        };
        let kind = match (&self.kind, &endpoint) {
            (None, PeerEndpoint::Dimse { .. }) => PeerKind::Dimse,
            (None, PeerEndpoint::DicomWeb { .. }) => PeerKind::Tramy,
            (Some(k), _) => PeerKind::parse(k).ok_or_else(|| {
                PeerError::Invalid(format!(
                    "peer {}: kind {k:?}: use tramy, dicomweb or dimse",
                    self.name
                ))
            })?,
        };
        if (kind == PeerKind::Dimse) != matches!(endpoint, PeerEndpoint::Dimse { .. }) {
            return invalid(format!(
                "peer {}: kind dimse needs `dimse`, the others `dicomweb_url`",
                self.name
            ));
        }
        if self.token_file.is_some() && self.oidc.is_some() {
            return invalid(format!(
                "peer {}: give token_file or oidc, not both",
                self.name
            ));
        }
        if let Some(o) = &self.oidc {
            if !(o.token_url.starts_with("https://") || o.token_url.starts_with("http://"))
                || o.client_id.is_empty()
            {
                return invalid(format!(
                    "peer {}: oidc needs an http(s) token_url and a client_id",
                    self.name
                ));
            }
        }
        if self.max_bytes_per_sec == Some(0) {
            return invalid(format!(
                "peer {}: max_bytes_per_sec must be above 0 (leave it out for no limit)",
                self.name
            ));
        }
        let windows = self
            .windows
            .iter()
            .map(|w| TimeWindow::parse(w))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Peer {
            name: self.name.clone(),
            kind,
            endpoint,
            token_file: self.token_file.as_ref().map(PathBuf::from),
            oidc: self.oidc.clone(),
            facility: self.facility.clone(),
            max_bytes_per_sec: self.max_bytes_per_sec,
            windows,
            configured,
        })
    }
}

fn dicomweb_url(name: &str, url: &str) -> Result<String, PeerError> {
    let trimmed = url.trim().trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://"))
        || trimmed.contains(char::is_whitespace)
    {
        return Err(PeerError::Invalid(format!(
            "peer {name}: dicomweb_url {url:?} must be an http:// or https:// URL of the DICOMweb service root"
        )));
    }
    Ok(trimmed.to_string())
}

fn dimse_address(name: &str, text: &str) -> Result<PeerEndpoint, PeerError> {
    let bad = || {
        PeerError::Invalid(format!(
            "peer {name}: dimse {text:?}: write it as AE@host:port"
        ))
    };
    let (ae, address) = text.trim().split_once('@').ok_or_else(bad)?;
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if ae.is_empty() || ae.len() > 16 || host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(PeerEndpoint::Dimse {
        ae_title: ae.to_string(),
        host: host.trim_matches(['[', ']']).to_string(),
        port,
    })
}

impl Peer {
    /// The description it was made from (without secrets: a token file's path is not a secret).
    pub fn spec(&self) -> PeerSpec {
        let (dicomweb_url, dimse) = match &self.endpoint {
            PeerEndpoint::DicomWeb { url } => (Some(url.clone()), None),
            PeerEndpoint::Dimse {
                ae_title,
                host,
                port,
            } => (None, Some(format!("{ae_title}@{host}:{port}"))),
        };
        PeerSpec {
            name: self.name.clone(),
            kind: Some(self.kind.as_str().to_string()),
            dicomweb_url,
            dimse,
            token_file: self.token_file.as_ref().map(|p| p.display().to_string()),
            oidc: self.oidc.clone(),
            facility: self.facility.clone(),
            max_bytes_per_sec: self.max_bytes_per_sec,
            windows: self.windows.iter().map(ToString::to_string).collect(),
        }
    }

    /// Seconds until sending of non-urgent instances is allowed at local time `at` (0: now).
    pub fn seconds_until_window(&self, at: NaiveTime) -> u32 {
        self.windows
            .iter()
            .map(|w| w.seconds_until_open(at))
            .min()
            .unwrap_or(0)
    }

    /// The base of tramy's own API on a tramy peer: the service root without its last segment
    /// (`https://h/dicomweb` → `https://h`).
    pub fn api_base(&self) -> Option<String> {
        match &self.endpoint {
            PeerEndpoint::DicomWeb { url } => Some(match url.rsplit_once('/') {
                Some((base, "dicomweb")) => base.to_string(),
                _ => url.clone(),
            }),
            PeerEndpoint::Dimse { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PeerSpec {
        PeerSpec {
            name: "hospital".into(),
            dicomweb_url: Some("http://127.0.0.1:8042/dicomweb/".into()),
            facility: "FB".into(),
            ..PeerSpec::default()
        }
    }

    #[test]
    fn a_dicomweb_peer_defaults_to_tramy_and_finds_its_api_base() {
        let peer = spec().to_peer(true).unwrap();
        assert_eq!(peer.kind, PeerKind::Tramy);
        assert_eq!(peer.api_base().unwrap(), "http://127.0.0.1:8042");
    }

    #[test]
    fn a_dimse_peer_is_parsed_from_ae_at_host_port() {
        let mut s = spec();
        s.dicomweb_url = None;
        s.dimse = Some("ORTHANC@127.0.0.1:4242".into());
        let peer = s.to_peer(false).unwrap();
        assert_eq!(peer.kind, PeerKind::Dimse);
        assert_eq!(
            peer.endpoint,
            PeerEndpoint::Dimse {
                ae_title: "ORTHANC".into(),
                host: "127.0.0.1".into(),
                port: 4242
            }
        );
        s.dimse = Some("ORTHANC:4242".into());
        assert!(s.to_peer(false).is_err());
    }

    #[test]
    fn windows_may_span_midnight() {
        let night = TimeWindow::parse("22:00-06:00").unwrap();
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        assert!(night.contains(t(23, 0)) && night.contains(t(5, 59)));
        assert!(!night.contains(t(6, 0)) && !night.contains(t(12, 0)));
        assert_eq!(night.seconds_until_open(t(21, 0)), 3600);
        assert_eq!(night.seconds_until_open(t(23, 0)), 0);
        assert!(TimeWindow::parse("22-06").is_err());
    }

    #[test]
    fn a_peer_needs_exactly_one_endpoint_and_a_valid_kind() {
        let mut s = spec();
        s.dimse = Some("A@h:1".into());
        assert!(s.to_peer(false).is_err());
        let mut s = spec();
        s.kind = Some("ftp".into());
        assert!(s.to_peer(false).is_err());
        let mut s = spec();
        s.kind = Some("dimse".into());
        assert!(s.to_peer(false).is_err());
    }
}
