//! tramy's own API tokens: random, shown once, kept only as a hash (issue #9 item 3).
//!
//! A token reads `tramy_<id>_<secret>`: the id (8 random bytes, hex) names the stored record, so a
//! lookup never scans; the secret (32 random bytes from the OS, base64url) is what proves
//! possession. Only the SHA-256 of the whole token is stored: 256 bits of entropy need no slow
//! password hash, and a leaked index reveals no usable token. The comparison is constant-time.

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Identity, Role};

/// What every API token starts with (so logs, scanners and [`super::credential_from_authorization`]
/// can tell one from a JWT).
pub const PREFIX: &str = "tramy_";

/// A new token: `text` is shown to its owner once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The public id, stored in clear to find the record.
    pub id: String,
    /// The whole token, for the owner only.
    pub text: String,
    /// What is stored: SHA-256 of `text`, hex.
    pub hash: String,
}

/// A token's stored record.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// The public id.
    pub id: String,
    /// SHA-256 of the whole token, hex.
    pub hash: String,
    /// The facility it acts for; `None` for a system-wide (superadmin) token.
    pub facility: Option<String>,
    /// Its role.
    pub role: Role,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token issued before, read back from where its owner kept it (the first start's
/// `admin-token` file when the index was rebuilt): its id and hash again; `None` when `text` is
/// not a well-formed token.
pub fn reread(text: &str) -> Option<IssuedToken> {
    let text = text.trim();
    let id = id_of(text).ok()?.to_string();
    Some(IssuedToken {
        hash: hash(text),
        id,
        text: text.to_string(),
    })
}

/// Makes a new token from the operating system's random source (which failing means no secret
/// can be made safely on this machine).
pub fn issue() -> Result<IssuedToken, getrandom::Error> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id)?;
    getrandom::fill(&mut secret)?;
    let id = hex::encode(id);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let text = format!("{PREFIX}{id}_{secret}");
    Ok(IssuedToken {
        hash: hash(&text),
        id,
        text,
    })
}

/// The id part of a presented token, to find its record; `Err` when it is not shaped as one.
pub fn id_of(presented: &str) -> Result<&str, AuthError> {
    let rest = presented
        .strip_prefix(PREFIX)
        .ok_or_else(|| AuthError::Invalid("not a tramy API token".into()))?;
    let (id, secret) = rest
        .split_once('_')
        .ok_or_else(|| AuthError::Invalid("malformed API token".into()))?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 43 {
        return Err(AuthError::Invalid("malformed API token".into()));
    }
    Ok(id)
}

/// Checks a presented token against its stored record at `now`.
pub fn verify(
    presented: &str,
    stored: &StoredToken,
    now: DateTime<Utc>,
) -> Result<Identity, AuthError> {
    let matches: bool = hash(presented)
        .as_bytes()
        .ct_eq(stored.hash.as_bytes())
        .into();
    if !matches || id_of(presented)? != stored.id {
        return Err(AuthError::Invalid("unknown API token".into()));
    }
    if stored.revoked_at.is_some() {
        return Err(AuthError::Invalid("this API token was revoked".into()));
    }
    if stored.expires_at.is_some_and(|at| at <= now) {
        return Err(AuthError::Invalid("this API token has expired".into()));
    }
    Ok(Identity {
        subject: format!("token:{}", stored.id),
        facility: stored.facility.clone(),
        roles: vec![stored.role],
    })
}

fn hash(text: &str) -> String {
    sha256_hex(text)
}

/// SHA-256 of `text`, hex: how tramy's credentials are stored.
pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(token: &IssuedToken) -> StoredToken {
        StoredToken {
            id: token.id.clone(),
            hash: token.hash.clone(),
            facility: Some("79001".into()),
            role: Role::Clinician,
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn an_issued_token_verifies_against_its_hash_and_is_not_stored_in_clear() {
        let token = issue().unwrap();
        assert!(token.text.starts_with("tramy_"));
        assert!(!token.hash.contains(&token.text) && token.hash.len() == 64);
        assert_eq!(id_of(&token.text), Ok(token.id.as_str()));
        let who = verify(&token.text, &record(&token), Utc::now()).unwrap();
        assert_eq!(who.subject, format!("token:{}", token.id));
        assert_eq!(
            (who.facility.as_deref(), who.roles.as_slice()),
            (Some("79001"), &[Role::Clinician][..])
        );
        assert_ne!(issue().unwrap().text, token.text, "tokens are random");
    }

    #[test]
    fn a_changed_expired_or_revoked_token_is_refused() {
        let token = issue().unwrap();
        let mut tampered = token.text.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(verify(&tampered, &record(&token), Utc::now()).is_err());

        let mut expired = record(&token);
        expired.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        let err = verify(&token.text, &expired, Utc::now()).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");

        let mut revoked = record(&token);
        revoked.revoked_at = Some(Utc::now());
        let err = verify(&token.text, &revoked, Utc::now()).unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
        assert!(
            !err.to_string().contains(&token.text),
            "the token is never repeated"
        );
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_lookup() {
        for bad in [
            "tramy_",
            "tramy_zz_x",
            "tramy_0123456789abcdef_short",
            "Bearer x",
        ] {
            assert!(id_of(bad).is_err(), "{bad}");
        }
    }
}
