//! Authentication: from the credential a request presents to who is asking ([`Identity`]).
//!
//! Two kinds of credential are first-class (issue #9): tramy's own API tokens
//! ([`api_token`]: random, stored only as a hash) and OpenID Connect access tokens
//! ([`oidc`]: JWTs from a facility's identity provider, checked against its JWKS). This module
//! decides only *who* a credential names. What that identity may see or do (facility scoping,
//! consent, grants) is authorization, applied where the archive's data is read and written; this
//! layer must not know about studies, instances or SQL.

pub mod api_token;
pub mod authenticator;
pub mod jwks;
pub mod oidc;
pub mod role;
pub mod share_link;
pub mod sign_in;
pub mod throttle;

pub use role::Role;

/// Who a verified credential names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// A stable name for audit: `token:<id>` for an API token, the `sub` claim for OIDC.
    pub subject: String,
    /// The national facility code the identity acts for; `None` for a system-wide identity.
    pub facility: Option<String>,
    /// What it may do, as granted by the credential.
    pub roles: Vec<Role>,
}

/// A credential as presented, before it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// One of tramy's API tokens (`tramy_…`).
    ApiToken(&'a str),
    /// A JWT (three base64url parts), checked as an OpenID Connect access token.
    Jwt(&'a str),
    /// A share link's token (`tramyshare_…`), limited to one grant.
    ShareLink(&'a str),
}

/// Why a credential was not accepted. The text is safe to send to the client: it never repeats
/// the credential.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no credential: send `Authorization: Bearer <token>`")]
    Missing,
    /// Not a bearer credential tramy knows.
    #[error("unsupported credential: send `Authorization: Bearer <token>` with a tramy API token or an OpenID Connect access token")]
    Unsupported,
    /// The credential is malformed, unknown, expired or revoked.
    #[error("invalid credential: {0}")]
    Invalid(String),
    /// This address presented too many invalid credentials lately (`throttle.rs`); no
    /// credential is checked until the wait is over.
    #[error("too many refused credentials from this address: try again in {} s", .0.as_secs().max(1))]
    Throttled(std::time::Duration),
}

/// Reads the credential of an `Authorization` header value (RFC 6750 2.1: `Bearer <token>`).
pub fn credential_from_authorization(header: Option<&str>) -> Result<Credential<'_>, AuthError> {
    let header = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = header.split_once(' ').ok_or(AuthError::Unsupported)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Unsupported);
    }
    credential_from_token(token).ok_or(AuthError::Unsupported)
}

/// What kind of credential a bare token is (from a header or a session cookie), by its shape.
pub fn credential_from_token(token: &str) -> Option<Credential<'_>> {
    let token = token.trim();
    if token.starts_with(share_link::PREFIX) {
        Some(Credential::ShareLink(token))
    } else if token.starts_with(api_token::PREFIX) {
        Some(Credential::ApiToken(token))
    } else if token.split('.').count() == 3 {
        Some(Credential::Jwt(token))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials_are_told_apart_and_other_schemes_refused() {
        let token = api_token::issue().unwrap().text;
        let header = format!("Bearer {token}");
        assert_eq!(
            credential_from_authorization(Some(&header)),
            Ok(Credential::ApiToken(&token))
        );
        assert_eq!(
            credential_from_authorization(Some("bearer a.b.c")),
            Ok(Credential::Jwt("a.b.c"))
        );
        assert_eq!(credential_from_authorization(None), Err(AuthError::Missing));
        for refused in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer just-a-string"] {
            assert_eq!(
                credential_from_authorization(Some(refused)),
                Err(AuthError::Unsupported),
                "{refused}"
            );
        }
    }
}
