//! Whose signature a manifest or receipt carries: the key in its header is accepted for a
//! facility only when it is the key pinned for that facility (pinned on first sight, or from the
//! facility's published keys); then the signature is checked with it.

use serde::de::DeserializeOwned;

use super::jws::{JwsError, Unverified};
use crate::access::Principal;
use crate::store::peers::KeyPin;
use crate::store::{Index, IndexError};

/// The payload of `signed`, if its key is `facility`'s pinned key (pinned now when the facility
/// has none) and its signature verifies with it.
pub async fn verify_pinned<T: DeserializeOwned>(
    index: &Index,
    who: &Principal,
    signed: &Unverified,
    facility: &str,
) -> Result<Result<T, JwsError>, IndexError> {
    let jwk = serde_json::to_string(&signed.header.jwk).unwrap_or_default();
    if index
        .pin_remote_key(who, facility, &signed.header.kid, &jwk)
        .await?
        == KeyPin::Conflict
    {
        return Ok(Err(JwsError::UntrustedKey(format!(
            "facility {facility} signed with a key this server has not seen, and another key is \
             pinned for it: if it replaced its key, an administrator must remove the old pin"
        ))));
    }
    Ok(signed
        .header
        .jwk
        .verifying_key()
        .and_then(|key| signed.verify(&key)))
}
