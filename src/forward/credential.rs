//! The credential tramy presents to a peer: a bearer token from a file (a `node` token the peer
//! issued), or an access token from the facility's OpenID Connect provider by the client
//! credentials grant (RFC 6749 4.4), cached until shortly before it expires.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use super::dicomweb_client::PeerCallError;

/// An OpenID Connect client tramy authenticates as (`[peers.oidc]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    /// The provider's token endpoint, e.g.
    /// `https://sso.example/realms/hcm/protocol/openid-connect/token` for Keycloak.
    pub token_url: String,
    /// The client's id.
    pub client_id: String,
    /// The file holding the client's secret (read at each fetch).
    pub client_secret_file: String,
    /// Scopes to ask for, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Most bytes of a token endpoint's answer.
const MAX_TOKEN_ANSWER: u64 = 64 * 1024;
/// A token is fetched again this long before it expires.
const EARLY: Duration = Duration::from_secs(30);

/// Where the bearer token comes from.
#[derive(Debug)]
pub enum Credential {
    /// None: the peer is open (a test Orthanc).
    None,
    /// The token in this file.
    TokenFile(PathBuf),
    /// Client credentials, with the last token and when it expires.
    Oidc(ClientCredentials, Mutex<Option<(String, Instant)>>),
}

impl Credential {
    /// The `Authorization` header value, if any.
    pub fn authorization(
        &self,
        peer: &str,
        agent: &ureq::Agent,
    ) -> Result<Option<String>, PeerCallError> {
        match self {
            Credential::None => Ok(None),
            Credential::TokenFile(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    PeerCallError::Transient(format!(
                        "peer {peer}: token_file cannot be read ({}): fix the file or the peer's token_file",
                        e.kind()
                    ))
                })?;
                Ok(Some(format!("Bearer {}", token.trim())))
            }
            Credential::Oidc(client, cache) => {
                if let Ok(guard) = cache.lock() {
                    if let Some((token, until)) = guard.as_ref() {
                        if Instant::now() + EARLY < *until {
                            return Ok(Some(format!("Bearer {token}")));
                        }
                    }
                }
                let (token, lifetime) = fetch(peer, client, agent)?;
                if let Ok(mut guard) = cache.lock() {
                    *guard = Some((token.clone(), Instant::now() + lifetime));
                }
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Forgets a cached token the peer refused (revoked or rotated keys): the next call fetches one.
    pub fn refused(&self) {
        if let Credential::Oidc(_, cache) = self {
            if let Ok(mut guard) = cache.lock() {
                *guard = None;
            }
        }
    }
}

/// The client credentials grant: the client authenticates with HTTP Basic (RFC 6749 2.3.1).
fn fetch(
    peer: &str,
    client: &ClientCredentials,
    agent: &ureq::Agent,
) -> Result<(String, Duration), PeerCallError> {
    let failed = |why: String| {
        PeerCallError::Transient(format!(
            "peer {peer}: no access token from {}: {why}",
            client.token_url
        ))
    };
    let secret = std::fs::read_to_string(&client.client_secret_file)
        .map_err(|e| failed(format!("client_secret_file cannot be read ({})", e.kind())))?;
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        encode(&client.client_id),
        encode(secret.trim())
    ));
    let mut form = "grant_type=client_credentials".to_string();
    if let Some(scope) = &client.scope {
        form.push_str(&format!("&scope={}", encode(scope)));
    }
    let mut response = agent
        .post(&client.token_url)
        .header("Authorization", format!("Basic {basic}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Accept", "application/json")
        .send(form)
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_TOKEN_ANSWER)
        .read_to_string()
        .map_err(|e| failed(e.to_string()))?;
    if status != 200 {
        // RFC 6749 5.2: `error` names what is wrong (invalid_client, unauthorized_client, …).
        let error = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        return Err(failed(format!("the provider answered {status} {error}")));
    }
    let answer: serde_json::Value =
        serde_json::from_str(&body).map_err(|_| failed("the answer is not JSON".into()))?;
    let token = answer["access_token"]
        .as_str()
        .ok_or_else(|| failed("the answer has no access_token".into()))?;
    let lifetime = answer["expires_in"].as_u64().unwrap_or(60);
    Ok((token.to_string(), Duration::from_secs(lifetime)))
}
