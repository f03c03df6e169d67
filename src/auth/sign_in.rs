//! Signing a doctor in through the facility's OpenID Connect provider (issue #15 item 1): the
//! OAuth 2.0 authorization code flow (RFC 6749 4.1) with PKCE (RFC 7636, S256) and a `state`
//! that binds the provider's answer to the browser that asked. The `oauth2` crate builds the
//! requests and reads the answers; its HTTP calls go through ureq like tramy's other calls out.
//!
//! What comes back is the provider's access token, which tramy then checks exactly like one sent
//! in an `Authorization` header ([`super::oidc`]: signature, issuer, audience, expiry, facility
//! and roles): signing in through the browser grants nothing a token would not. The ID token is
//! not used, so there is no nonce to check.

use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};

use crate::config::OidcConfig;

/// Most bytes read from the provider's discovery document or token answer.
const MAX_ANSWER_BYTES: u64 = 256 * 1024;
/// How long one call to the provider may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a sign-in through the provider could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// No client is configured for this server.
    #[error("sign-in through the identity provider is not configured: set [auth.oidc] client_id")]
    NotConfigured,
    /// The provider's endpoints could not be found.
    #[error("the identity provider's endpoints are unknown: {0}")]
    Discovery(String),
    /// A configured or discovered URL is not one.
    #[error("the identity provider's {what} is not a valid URL: {reason}")]
    BadUrl {
        /// Which URL.
        what: &'static str,
        /// Why it is not one.
        reason: String,
    },
    /// The provider answered with an error (RFC 6749 5.2).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The answer's `state` is not the one this browser was sent with.
    #[error("the sign-in expired or was started in another browser: start again")]
    StateMismatch,
    /// The provider did not answer.
    #[error("the identity provider could not be reached: {0}")]
    Unreachable(String),
}

/// A sign-in the browser is sent to the provider for: where to send it, and what the browser
/// keeps (in a short-lived cookie) until the provider sends it back.
pub struct Started {
    /// The provider's authorization URL with this request's parameters.
    pub authorization_url: String,
    /// What the callback must see again.
    pub pending: Pending,
}

/// What a started sign-in keeps until the provider answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// The `state` sent; the answer must carry the same.
    pub state: String,
    /// The PKCE code verifier whose challenge was sent.
    pub verifier: String,
    /// The page to go on to once signed in.
    pub next: String,
}

/// The provider's two endpoints the flow uses.
#[derive(Debug, Clone)]
struct Endpoints {
    authorization: String,
    token: String,
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Starts a sign-in: the authorization request for `redirect_uri`, leading to `next` afterwards.
pub fn start(config: &OidcConfig, redirect_uri: &str, next: &str) -> Result<Started, SignInError> {
    let client = client(config, redirect_uri)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge);
    for scope in config.scopes.split_whitespace() {
        request = request.add_scope(Scope::new(scope.to_string()));
    }
    let (url, state) = request.url();
    Ok(Started {
        authorization_url: url.to_string(),
        pending: Pending {
            state: state.secret().clone(),
            verifier: verifier.secret().clone(),
            next: next.to_string(),
        },
    })
}

/// Finishes a sign-in: checks `state` against what the browser kept and trades `code` (with
/// the PKCE verifier) for the provider's access token.
pub fn finish(
    config: &OidcConfig,
    redirect_uri: &str,
    pending: &Pending,
    state: &str,
    code: &str,
) -> Result<String, SignInError> {
    // Compared in constant time: the state is a secret of this browser until it comes back.
    if !constant_time_eq(pending.state.as_bytes(), state.as_bytes()) {
        return Err(SignInError::StateMismatch);
    }
    let client = client(config, redirect_uri)?;
    let http = |request: oauth2::HttpRequest| call(request);
    let answer = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
        .request(&http)
        .map_err(|e| match e {
            oauth2::RequestTokenError::ServerResponse(r) => {
                SignInError::Refused(r.error().to_string())
            }
            oauth2::RequestTokenError::Request(e) => SignInError::Unreachable(e.to_string()),
            other => SignInError::Refused(other.to_string()),
        })?;
    Ok(answer.access_token().secret().clone())
}

/// The OAuth client for `config`, its endpoints given or discovered.
fn client(config: &OidcConfig, redirect_uri: &str) -> Result<Client, SignInError> {
    let client_id = config.client_id.clone().ok_or(SignInError::NotConfigured)?;
    let endpoints = endpoints(config)?;
    let url_error = |what| {
        move |e: oauth2::url::ParseError| SignInError::BadUrl {
            what,
            reason: e.to_string(),
        }
    };
    let mut client = BasicClient::new(ClientId::new(client_id))
        .set_auth_uri(
            AuthUrl::new(endpoints.authorization).map_err(url_error("authorization_endpoint"))?,
        )
        .set_token_uri(TokenUrl::new(endpoints.token).map_err(url_error("token_endpoint"))?)
        .set_redirect_uri(
            RedirectUrl::new(redirect_uri.to_string()).map_err(url_error("redirect URI"))?,
        );
    if let Some(file) = &config.client_secret_file {
        let secret = std::fs::read_to_string(file).map_err(|e| {
            SignInError::Discovery(format!("client_secret_file cannot be read ({})", e.kind()))
        })?;
        client = client.set_client_secret(ClientSecret::new(secret.trim().to_string()));
    }
    Ok(client)
}

/// The endpoints from the configuration, else from the provider's discovery document
/// (OpenID Connect Discovery 1.0 section 4: `ISSUER/.well-known/openid-configuration`).
fn endpoints(config: &OidcConfig) -> Result<Endpoints, SignInError> {
    if let (Some(authorization), Some(token)) =
        (&config.authorization_endpoint, &config.token_endpoint)
    {
        return Ok(Endpoints {
            authorization: authorization.clone(),
            token: token.clone(),
        });
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        config.issuer.trim_end_matches('/')
    );
    let failed = |why: String| SignInError::Discovery(format!("{url}: {why}"));
    let text = agent()
        .get(&url)
        .call()
        .map_err(|e| failed(e.to_string()))?
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_string()
        .map_err(|e| failed(e.to_string()))?;
    let document: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| failed("not JSON".into()))?;
    let field = |name: &str| {
        document[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| failed(format!("no {name}")))
    };
    Ok(Endpoints {
        authorization: config
            .authorization_endpoint
            .clone()
            .map_or_else(|| field("authorization_endpoint"), Ok)?,
        token: config
            .token_endpoint
            .clone()
            .map_or_else(|| field("token_endpoint"), Ok)?,
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(CALL_TIMEOUT))
        .build()
        .into()
}

/// One HTTP call of the `oauth2` crate through ureq; the provider's error answers (4xx) are
/// handed back for the crate to read (RFC 6749 5.2), not turned into transport errors.
fn call(request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, SignInError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(CALL_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .run(request)
        .map_err(|e| SignInError::Unreachable(e.to_string()))?;
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(|e| SignInError::Unreachable(e.to_string()))?;
    let mut answer = oauth2::HttpResponse::new(body);
    *answer.status_mut() = response.status();
    *answer.headers_mut() = response.headers().clone();
    Ok(answer)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OidcConfig {
        toml::from_str(
            "issuer = \"https://sso.example/realms/hcm\"\nclient_id = \"tramy\"\n\
             authorization_endpoint = \"https://sso.example/realms/hcm/auth\"\n\
             token_endpoint = \"https://sso.example/realms/hcm/token\"\n",
        )
        .unwrap()
    }

    #[test]
    fn the_authorization_request_carries_an_s256_challenge_and_a_fresh_state() {
        let redirect = "https://pacs.example/login/oidc/callback";
        let a = start(&config(), redirect, "/ui/").unwrap();
        let b = start(&config(), redirect, "/ui/").unwrap();
        let url = oauth2::url::Url::parse(&a.authorization_url).unwrap();
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["client_id"], "tramy");
        assert_eq!(query["redirect_uri"], redirect);
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["scope"], "openid");
        assert_eq!(query["state"], a.pending.state);
        // RFC 7636 4.2: the challenge is BASE64URL(SHA256(verifier)).
        use base64::Engine;
        use sha2::Digest;
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(a.pending.verifier.as_bytes()));
        assert_eq!(query["code_challenge"], expected);
        assert_ne!(a.pending.state, b.pending.state);
        assert_ne!(a.pending.verifier, b.pending.verifier);
    }

    #[test]
    fn an_answer_with_another_state_is_refused_before_any_call() {
        let started = start(&config(), "https://pacs.example/cb", "/ui/").unwrap();
        let err = finish(
            &config(),
            "https://pacs.example/cb",
            &started.pending,
            "forged",
            "code",
        )
        .unwrap_err();
        assert!(matches!(err, SignInError::StateMismatch), "{err}");
    }
}
