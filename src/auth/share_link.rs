//! Share links (issue #9 item 7): a revocable, expiring credential limited to one grant, for a
//! doctor with no account. It reads `tramyshare_<grant id>_<secret>`; like an API token, only
//! its SHA-256 is stored (with the grant) and the comparison is constant-time.

use base64::Engine;
use subtle::ConstantTimeEq;

use super::AuthError;

/// What every share-link token starts with.
pub const PREFIX: &str = "tramyshare_";

/// A new share-link token for `grant_id`: its text (shown once) and the hash to store.
pub fn issue(grant_id: &str) -> Result<(String, String), getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let text = format!("{PREFIX}{grant_id}_{secret}");
    let hash = super::api_token::sha256_hex(&text);
    Ok((text, hash))
}

/// The grant a presented share-link token names; `Err` when it is not shaped as one.
pub fn grant_id_of(presented: &str) -> Result<&str, AuthError> {
    let malformed = || AuthError::Invalid("malformed share link".into());
    let rest = presented.strip_prefix(PREFIX).ok_or_else(malformed)?;
    let (id, secret) = rest.split_once('_').ok_or_else(malformed)?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 43 {
        return Err(malformed());
    }
    Ok(id)
}

/// Whether `presented` is the token whose hash is `stored_hash`.
pub fn matches(presented: &str, stored_hash: &str) -> bool {
    super::api_token::sha256_hex(presented)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_link_names_its_grant_and_matches_only_its_hash() {
        let id = "0123456789abcdef0123456789abcdef";
        let (text, hash) = issue(id).unwrap();
        assert_eq!(grant_id_of(&text), Ok(id));
        assert!(matches(&text, &hash));
        let (other, _) = issue(id).unwrap();
        assert!(!matches(&other, &hash));
        assert!(grant_id_of("tramyshare_x_y").is_err());
        assert!(grant_id_of("tramy_0123_abc").is_err());
    }
}
