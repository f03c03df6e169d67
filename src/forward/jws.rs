//! Compact JSON Web Signatures (RFC 7515) with Ed25519 (`EdDSA`, RFC 8037) over canonical JSON
//! (RFC 8785: keys sorted, no whitespace), for delivery manifests and receipts.
//!
//! Written here rather than with `jsonwebtoken`: that crate signs JWT claims and wants key
//! material as DER or PEM per call; a manifest is not a JWT (no `exp`, a payload of its own
//! type), and the signature must cover canonical bytes that both sides can recompute.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::facility_keys::{public_jwk, verifying_jwk};

/// The protected header of a signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwsHeader {
    /// Always `EdDSA`.
    pub alg: String,
    /// The payload's type, e.g. `tramy-manifest+json`.
    pub typ: String,
    /// The signing key's RFC 7638 thumbprint.
    pub kid: String,
    /// The signing key, so a receiver that has not seen it yet can pin it (RFC 7515 4.1.3).
    pub jwk: JwkParams,
}

/// The public key members a verifier needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkParams {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
}

impl JwkParams {
    /// The verifying key these members describe.
    pub fn verifying_key(&self) -> Result<VerifyingKey, JwsError> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(JwsError::Malformed("the key is not an Ed25519 OKP key"));
        }
        let bytes = B64
            .decode(&self.x)
            .map_err(|_| JwsError::Malformed("the key is not base64url"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| JwsError::Malformed("the key is not 32 bytes"))?;
        VerifyingKey::from_bytes(&bytes)
            .map_err(|_| JwsError::Malformed("the key is not a valid Ed25519 point"))
    }

    /// Its RFC 7638 thumbprint, which must equal the header's `kid`.
    pub fn thumbprint(&self) -> Result<String, JwsError> {
        Ok(verifying_jwk(&self.verifying_key()?).kid)
    }
}

/// Why a signature was not accepted. Says what is wrong, never echoes the payload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    /// Not a compact JWS this code writes.
    #[error("not a valid signed document: {0}")]
    Malformed(&'static str),
    /// The signature does not match the payload and key: the document was changed.
    #[error("the signature does not match: the document was changed after it was signed, or signed by another key")]
    BadSignature,
    /// The key is not the one pinned for its signer.
    #[error("{0}")]
    UntrustedKey(String),
}

/// RFC 8785 canonical JSON of `value`: object keys sorted by their UTF-16 code units, no
/// whitespace. Payloads here hold strings, integers, booleans and floats only.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).unwrap_or(Value::Null);
    let mut out = Vec::new();
    write_canonical(&value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).unwrap_or_default()),
    }
}

/// Signs `payload` (canonical JSON) with `key`: a compact JWS whose header carries the key.
pub fn sign<T: Serialize>(key: &SigningKey, typ: &str, payload: &T) -> String {
    let jwk = public_jwk(key);
    let header = JwsHeader {
        alg: "EdDSA".into(),
        typ: typ.into(),
        kid: jwk.kid.clone(),
        jwk: JwkParams {
            kty: jwk.kty,
            crv: jwk.crv,
            x: jwk.x,
        },
    };
    let signing_input = format!(
        "{}.{}",
        B64.encode(canonical_json(&header)),
        B64.encode(canonical_json(payload))
    );
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
}

/// A signed document split into its parts, before its signature is checked.
#[derive(Debug, Clone)]
pub struct Unverified {
    /// The protected header.
    pub header: JwsHeader,
    signing_input: String,
    payload: Vec<u8>,
    signature: Signature,
}

/// Splits a compact JWS of type `typ` into header, payload and signature.
pub fn parse(jws: &str, typ: &str) -> Result<Unverified, JwsError> {
    let mut parts = jws.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed("a compact JWS has three parts"));
    };
    let decode = |part: &str| {
        B64.decode(part)
            .map_err(|_| JwsError::Malformed("a part is not base64url"))
    };
    let header: JwsHeader = serde_json::from_slice(&decode(h)?)
        .map_err(|_| JwsError::Malformed("the header is not a JWS header"))?;
    if header.alg != "EdDSA" {
        return Err(JwsError::Malformed("the algorithm is not EdDSA"));
    }
    if header.typ != typ {
        return Err(JwsError::Malformed(
            "the document is not of the expected type",
        ));
    }
    if header.jwk.thumbprint()? != header.kid {
        return Err(JwsError::Malformed("the kid is not the key's thumbprint"));
    }
    let signature = decode(s)?;
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| JwsError::Malformed("the signature is not 64 bytes"))?;
    Ok(Unverified {
        signing_input: format!("{h}.{p}"),
        payload: decode(p)?,
        header,
        signature: Signature::from_bytes(&signature),
    })
}

impl Unverified {
    /// Checks the signature with `key` and returns the payload.
    pub fn verify<T: DeserializeOwned>(&self, key: &VerifyingKey) -> Result<T, JwsError> {
        key.verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwsError::BadSignature)?;
        serde_json::from_slice(&self.payload)
            .map_err(|_| JwsError::Malformed("the payload is not the expected document"))
    }

    /// The payload without checking the signature (only to learn who claims to have signed it,
    /// so that the right pinned key can be looked up).
    pub fn claimed<T: DeserializeOwned>(&self) -> Result<T, JwsError> {
        serde_json::from_slice(&self.payload)
            .map_err(|_| JwsError::Malformed("the payload is not the expected document"))
    }
}

/// SHA-256 (hex) of a signed document as sent, which receipts name the manifest by.
pub fn digest(jws: &str) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        jws.trim().as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Doc {
        z: String,
        a: u64,
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let doc = Doc {
            z: "é\n".into(),
            a: 3,
        };
        assert_eq!(
            String::from_utf8(canonical_json(&doc)).unwrap(),
            "{\"a\":3,\"z\":\"é\\n\"}"
        );
    }

    #[test]
    fn a_signed_document_verifies_and_any_change_is_detected() {
        let k = key(7);
        let jws = sign(
            &k,
            "t",
            &Doc {
                z: "x".into(),
                a: 1,
            },
        );
        let parsed = parse(&jws, "t").unwrap();
        assert_eq!(
            parsed.verify::<Doc>(&k.verifying_key()).unwrap(),
            Doc {
                z: "x".into(),
                a: 1
            }
        );
        // Another payload under the same signature.
        let parts: Vec<&str> = jws.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(br#"{"a":2,"z":"x"}"#),
            parts[2]
        );
        assert_eq!(
            parse(&forged, "t")
                .unwrap()
                .verify::<Doc>(&k.verifying_key()),
            Err(JwsError::BadSignature)
        );
        // Another key.
        assert_eq!(
            parsed.verify::<Doc>(&key(8).verifying_key()),
            Err(JwsError::BadSignature)
        );
        assert!(parse(&jws, "other").is_err());
        assert!(parse("a.b", "t").is_err());
    }

    #[test]
    fn the_header_kid_is_the_rfc_7638_thumbprint_of_its_key() {
        let k = key(9);
        let parsed = parse(&sign(&k, "t", &1), "t").unwrap();
        assert_eq!(parsed.header.kid, public_jwk(&k).kid);
    }
}
