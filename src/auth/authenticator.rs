//! From a presented credential to the caller ([`Principal`]), for every listener: tramy's API
//! tokens are checked against the registry, OpenID Connect access tokens against the configured
//! provider's keys. A refusal says why without repeating the credential.

use std::sync::Arc;

use super::oidc::OidcVerifier;
use super::{AuthError, Credential};
use crate::access::Principal;
use crate::config::AuthConfig;
use crate::store::{Index, IndexError};

/// Checks credentials; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    index: Index,
    oidc: Option<Arc<OidcVerifier>>,
    /// Failed credentials per address, shared by every listener.
    throttle: Arc<super::throttle::Throttle>,
}

/// Why the provider could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// Neither or both of `jwks_url` and `jwks_file`.
    #[error("[auth.oidc] needs exactly one of jwks_url and jwks_file")]
    KeySource,
    /// The keys could not be read.
    #[error("[auth.oidc] keys: {0}")]
    Keys(#[from] super::jwks::JwksError),
}

impl Authenticator {
    /// An authenticator over `index`'s registry and the provider `config` names, if any.
    pub fn new(index: Index, config: &AuthConfig) -> Result<Authenticator, AuthSetupError> {
        let oidc = match &config.oidc {
            None => None,
            Some(o) => {
                let source = match (&o.jwks_url, &o.jwks_file) {
                    (Some(url), None) => super::jwks::JwksSource::Url(url.clone()),
                    (None, Some(file)) => super::jwks::JwksSource::File(file.clone()),
                    _ => return Err(AuthSetupError::KeySource),
                };
                Some(Arc::new(OidcVerifier::from_source(
                    o.issuer.clone(),
                    o.audience.clone(),
                    source,
                    std::time::Duration::from_secs(o.jwks_min_refresh_secs),
                    o.claims.clone(),
                )?))
            }
        };
        let throttle = Arc::new(super::throttle::Throttle::new(config.throttle_limits()));
        Ok(Authenticator {
            index,
            oidc,
            throttle,
        })
    }

    /// [`Authenticator::principal`] for a caller at `address`: refused without a check while the
    /// address is locked out for too many invalid credentials; an invalid one counts against it.
    pub async fn principal_at(
        &self,
        credential: Credential<'_>,
        address: std::net::IpAddr,
    ) -> Result<Result<Principal, AuthError>, IndexError> {
        if let Err(wait) = self.throttle.check(address) {
            return Ok(Err(AuthError::Throttled(wait)));
        }
        let checked = self.principal(credential).await?;
        match &checked {
            Ok(_) => self.throttle.succeeded(address),
            Err(AuthError::Invalid(_)) => {
                if let Some(wait) = self.throttle.failed(address) {
                    tracing::warn!(%address, seconds = wait.as_secs(), "too many invalid credentials: address locked out");
                }
            }
            Err(_) => {}
        }
        Ok(checked)
    }

    /// Whether `address` may present a credential now (for DIMSE, whose credential is the
    /// calling AE title), and noting an unregistered title as a failure.
    pub fn address_allowed(&self, address: std::net::IpAddr) -> Result<(), AuthError> {
        self.throttle.check(address).map_err(AuthError::Throttled)
    }

    /// Notes a failed credential (an unregistered calling AE title) from `address`.
    pub fn failed_at(&self, address: std::net::IpAddr) {
        if let Some(wait) = self.throttle.failed(address) {
            tracing::warn!(%address, seconds = wait.as_secs(), "too many refused AE titles: address locked out");
        }
    }

    /// Who `credential` names, or why it is refused. `Err` only when the index fails.
    pub async fn principal(
        &self,
        credential: Credential<'_>,
    ) -> Result<Result<Principal, AuthError>, IndexError> {
        let identity = match credential {
            Credential::ShareLink(token) => return Ok(self.share_link(token).map(|(who, _)| who)),
            Credential::ApiToken(token) => {
                crate::registry::authenticate_api_token(&self.index, token).await?
            }
            Credential::Jwt(token) => match &self.oidc {
                None => Err(AuthError::Invalid(
                    "OpenID Connect access tokens are not accepted here: no [auth.oidc] provider is configured".into(),
                )),
                Some(oidc) => {
                    let (oidc, token) = (oidc.clone(), token.to_string());
                    // May fetch the provider's keys: never on an async worker.
                    tokio::task::spawn_blocking(move || oidc.verify_refreshing(&token))
                        .await
                        .map_err(|e| IndexError::Task(e.to_string()))?
                }
            },
        };
        Ok(identity.and_then(|identity| {
            if identity.roles.is_empty() {
                Err(AuthError::Invalid(
                    "the credential names no tramy role (admin, clinician, modality, researcher, node, superadmin)".into(),
                ))
            } else {
                Ok(Principal::authenticated(identity))
            }
        }))
    }

    /// The holder of a share link in force, who reads the one study its grant opens, and that
    /// study's Study Instance UID.
    pub fn share_link(&self, token: &str) -> Result<(Principal, String), AuthError> {
        let refused =
            || AuthError::Invalid("this share link is unknown, revoked or expired".into());
        let grant_id = super::share_link::grant_id_of(token)?;
        match self
            .index
            .share_link_now(&Principal::system(), grant_id, token)
        {
            Ok(Some((facility, study))) => Ok((Principal::share_link(grant_id, &facility), study)),
            Ok(None) => Err(refused()),
            Err(e) => {
                tracing::error!(error = %e, "share link lookup failed");
                Err(refused())
            }
        }
    }
}
