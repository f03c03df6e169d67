//! A provider's signing keys (JWKS, RFC 7517 5) from a file or its URL, refreshed when it
//! rotates them.
//!
//! Identity providers rotate keys: Keycloak publishes the new key at its `jwks_uri` and starts
//! signing with it. A token whose `kid` is unknown therefore asks for one refetch, at most once
//! per `min_refresh` so that tokens with made-up `kid`s cannot turn tramy into a flood of requests
//! to the provider. Fetching is blocking (ureq, rustls with the Mozilla roots) with a timeout and
//! a size cap; callers on an async runtime run it on a blocking thread.

use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};

/// Most bytes a JWKS document may have (a handful of keys is a few kB).
const MAX_JWKS_BYTES: u64 = 1024 * 1024;
/// How long one fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS document on disk (tests, air-gapped sites).
    File(PathBuf),
    /// The provider's `jwks_uri`, e.g.
    /// `https://sso.example/realms/NAME/protocol/openid-connect/certs` for Keycloak.
    Url(String),
}

/// Why the keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file cannot be read.
    #[error("cannot read the JWKS file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The URL did not answer with a document.
    #[error("cannot fetch the JWKS from {url}: {reason} (check the provider's jwks_uri and that tramy can reach it)")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The document is not a JWKS.
    #[error("the JWKS from {from} is not a key set ({{\"keys\": [...]}}): {source}")]
    Parse {
        /// File or URL.
        from: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// The current keys of one provider.
#[derive(Debug)]
pub struct ProviderKeys {
    source: Option<JwksSource>,
    keys: RwLock<JwkSet>,
    last_fetch: Mutex<Option<Instant>>,
    min_refresh: Duration,
}

impl ProviderKeys {
    /// Keys given once, never refreshed.
    pub fn fixed(keys: JwkSet) -> Self {
        ProviderKeys {
            source: None,
            keys: RwLock::new(keys),
            last_fetch: Mutex::new(None),
            min_refresh: Duration::MAX,
        }
    }

    /// Keys read now from `source`, refetched on an unknown `kid` at most once per `min_refresh`.
    pub fn load(source: JwksSource, min_refresh: Duration) -> Result<Self, JwksError> {
        let keys = read(&source)?;
        Ok(ProviderKeys {
            source: Some(source),
            keys: RwLock::new(keys),
            last_fetch: Mutex::new(Some(Instant::now())),
            min_refresh,
        })
    }

    /// The key named `kid` (or the only key, when the token names none), cloned.
    pub fn find(&self, kid: Option<&str>) -> Option<Jwk> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        match kid {
            Some(kid) => keys.find(kid).cloned(),
            None if keys.keys.len() == 1 => keys.keys.first().cloned(),
            None => None,
        }
    }

    /// Rereads the keys if a source is configured and the last read is older than
    /// `min_refresh`; says whether it reread them. A failed reread keeps the old keys.
    pub fn refresh(&self) -> Result<bool, JwksError> {
        let Some(source) = &self.source else {
            return Ok(false);
        };
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.min_refresh) {
                return Ok(false);
            }
            *last = Some(Instant::now());
        }
        let keys = read(source)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(true)
    }
}

fn read(source: &JwksSource) -> Result<JwkSet, JwksError> {
    let (text, from) = match source {
        JwksSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| JwksError::File {
                path: path.clone(),
                source,
            })?;
            (text, path.display().to_string())
        }
        JwksSource::Url(url) => (fetch(url)?, url.clone()),
    };
    serde_json::from_str(&text).map_err(|source| JwksError::Parse { from, source })
}

fn fetch(url: &str) -> Result<String, JwksError> {
    let failed = |reason: String| JwksError::Fetch {
        url: url.to_string(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .build()
        .into();
    agent
        .get(url)
        .call()
        .map_err(|e| failed(e.to_string()))?
        .body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES)
        .read_to_string()
        .map_err(|e| failed(e.to_string()))
}
