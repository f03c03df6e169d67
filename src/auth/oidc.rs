//! OpenID Connect access tokens (JWTs) from a facility's identity provider, e.g. Keycloak
//! (issue #9 item 3).
//!
//! A token is accepted when its signature verifies with a key of the provider's JWKS (RFC 7517),
//! chosen by the token's `kid`, under an algorithm that key allows (never `none`, never a
//! symmetric algorithm with a public key: RFC 8725 3.1-3.2), and when `iss`, `aud` and `exp` hold
//! (RFC 9068 4). Claims are then mapped to a facility and roles by configurable claim paths, since
//! every provider names them differently (Keycloak puts roles under `realm_access.roles`).
//! Signature checks are the `jsonwebtoken` crate's; nothing here does cryptography.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm};

use super::jwks::{JwksError, JwksSource, ProviderKeys};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{AuthError, Identity, Role};

/// Which claims carry what tramy needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ClaimMapping {
    /// Dotted path of the claim holding the facility code (a string).
    pub facility: String,
    /// Dotted path of the claim holding the roles (a string or an array of strings); names that
    /// are not tramy roles are ignored.
    pub roles: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            facility: "facility".into(),
            roles: "roles".into(),
        }
    }
}

/// Checks access tokens of one issuer.
#[derive(Debug)]
pub struct OidcVerifier {
    issuer: String,
    audience: Option<String>,
    keys: ProviderKeys,
    claims: ClaimMapping,
}

impl OidcVerifier {
    /// A verifier for tokens of `issuer` (the `iss` claim, exactly), for `audience` when given
    /// (the `aud` claim must then contain it), signed by a key of `keys`.
    pub fn new(
        issuer: impl Into<String>,
        audience: Option<String>,
        keys: JwkSet,
        claims: ClaimMapping,
    ) -> Self {
        Self::with_keys(issuer, audience, ProviderKeys::fixed(keys), claims)
    }

    /// A verifier whose keys are read from `source` now and refetched when a token names a key
    /// they lack (at most once per `min_refresh`; see [`Self::verify_refreshing`]).
    pub fn from_source(
        issuer: impl Into<String>,
        audience: Option<String>,
        source: JwksSource,
        min_refresh: std::time::Duration,
        claims: ClaimMapping,
    ) -> Result<Self, JwksError> {
        let keys = ProviderKeys::load(source, min_refresh)?;
        Ok(Self::with_keys(issuer, audience, keys, claims))
    }

    fn with_keys(
        issuer: impl Into<String>,
        audience: Option<String>,
        keys: ProviderKeys,
        claims: ClaimMapping,
    ) -> Self {
        OidcVerifier {
            issuer: issuer.into(),
            audience,
            keys,
            claims,
        }
    }

    /// A verifier whose keys are read from a JWKS document (`{"keys": [...]}`).
    pub fn from_jwks_json(
        issuer: impl Into<String>,
        audience: Option<String>,
        jwks: &str,
        claims: ClaimMapping,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new(
            issuer,
            audience,
            serde_json::from_str(jwks)?,
            claims,
        ))
    }

    /// Checks `token` and says who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let invalid = |why: String| AuthError::Invalid(why);
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| invalid(format!("not a JWT: {e}")))?;
        let jwk = self.key_for(header.kid.as_deref())?;
        let allowed = algorithms_of(&jwk);
        if !allowed.contains(&header.alg) {
            return Err(invalid(format!(
                "the token is signed with {:?}, which its key does not allow",
                header.alg
            )));
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| invalid(format!("the provider's key cannot be used: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = allowed;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| invalid(format!("the access token is not valid: {e}")))?
            .claims;
        Ok(self.identity(&claims))
    }

    fn key_for(&self, kid: Option<&str>) -> Result<Jwk, AuthError> {
        self.keys.find(kid).ok_or_else(|| {
            AuthError::Invalid("the token's signing key is not among the provider's keys".into())
        })
    }

    /// [`Self::verify`], rereading the provider's keys first when the token names a key they lack
    /// (the provider rotated its keys). Blocking: it may fetch the JWKS.
    pub fn verify_refreshing(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token);
        if header.is_ok_and(|h| self.keys.find(h.kid.as_deref()).is_none()) {
            if let Err(e) = self.keys.refresh() {
                tracing::warn!(error = %e, "the identity provider's keys could not be reread");
            }
        }
        self.verify(token)
    }

    fn identity(&self, claims: &Value) -> Identity {
        let subject = claims["sub"].as_str().unwrap_or_default().to_string();
        let facility = claim(claims, &self.claims.facility)
            .and_then(Value::as_str)
            .map(str::to_string);
        let roles = match claim(claims, &self.claims.roles) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut roles: Vec<Role> = roles.into_iter().filter_map(|r| r.parse().ok()).collect();
        roles.sort();
        roles.dedup();
        Identity {
            subject,
            facility,
            roles,
        }
    }
}

/// The claim at a dotted path (`realm_access.roles`).
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, key| v.get(key))
}

/// The asymmetric algorithms a key may verify: its declared `alg`, else every one of its family.
/// Symmetric keys (`oct`) are never accepted from a provider's JWKS.
fn algorithms_of(jwk: &Jwk) -> Vec<Algorithm> {
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(_) => &[Algorithm::ES256, Algorithm::ES384],
        AlgorithmParameters::OctetKeyPair(_) => &[Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => &[],
    };
    match jwk.common.key_algorithm.map(signing_algorithm) {
        Some(Some(declared)) if family.contains(&declared) => vec![declared],
        Some(_) => Vec::new(),
        None => family.to_vec(),
    }
}

/// The signature algorithm a JWK's `alg` names; `None` for encryption algorithms and unknown
/// names (the crate's own conversion is private).
fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    /// A P-256 key made for these tests only (`openssl ecparam -name prime256v1 -genkey`).
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkPemz4J4O4dcQIp8
MBr8aoHHRsOnb4iZ2uA4JTMsv5yhRANCAARdlF1aTkQrrEFVB/6Lve73G3KfWIiF
53jRvZ3VBmPqyYhaC9D4PwLVGr1D3ibUXfHPsiBfAj6oSsnySrZXNV30
-----END PRIVATE KEY-----";
    /// Another, not in the provider's JWKS.
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgF+liTut8jSYAbkqC
H/jHj2J7U3zhbNt/ige/+WxsVkWhRANCAAT2lkwSh+Ws1CIshnf5t+kNBxhUqeI9
qXIsOxLjQLokPNXP+8mUSH9gatocwq3V07CXwW6jevCFq7AlXfsVgnHl
-----END PRIVATE KEY-----";
    const ISSUER: &str = "https://sso.benhvien.example/realms/so-y-te";

    fn provider() -> OidcVerifier {
        let key = EncodingKey::from_ec_pem(TEST_KEY.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let jwks = json!({ "keys": [jwk] }).to_string();
        let claims = ClaimMapping {
            facility: "facility".into(),
            roles: "realm_access.roles".into(),
        };
        OidcVerifier::from_jwks_json(ISSUER, Some("tramy".into()), &jwks, claims).unwrap()
    }

    fn token(key: &str, kid: &str, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        encode(
            &header,
            &claims,
            &EncodingKey::from_ec_pem(key.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn claims(exp_in: i64) -> Value {
        json!({
            "iss": ISSUER, "aud": "tramy", "sub": "bs.lan",
            "exp": chrono::Utc::now().timestamp() + exp_in,
            "facility": "79001",
            "realm_access": { "roles": ["clinician", "offline_access", "researcher"] },
        })
    }

    #[test]
    fn a_keycloak_style_token_maps_to_its_facility_and_tramy_roles() {
        let who = provider()
            .verify(&token(TEST_KEY, "k1", claims(300)))
            .unwrap();
        assert_eq!(who.subject, "bs.lan");
        assert_eq!(who.facility.as_deref(), Some("79001"));
        assert_eq!(who.roles, vec![Role::Clinician, Role::Researcher]);
    }

    #[test]
    fn wrong_key_issuer_audience_expiry_or_algorithm_is_refused() {
        let p = provider();
        let refused = |t: String, why: &str| {
            let err = p.verify(&t).unwrap_err();
            assert!(matches!(err, AuthError::Invalid(_)), "{why}: {err}");
        };
        refused(token(OTHER_KEY, "k1", claims(300)), "signed by another key");
        refused(token(TEST_KEY, "k2", claims(300)), "unknown kid");
        refused(token(TEST_KEY, "k1", claims(-3600)), "expired");
        let mut c = claims(300);
        c["iss"] = json!("https://evil.example");
        refused(token(TEST_KEY, "k1", c), "another issuer");
        let mut c = claims(300);
        c["aud"] = json!("another-app");
        refused(token(TEST_KEY, "k1", c), "another audience");
        // alg "none" and an HMAC token claiming the public key as its secret (RFC 8725 2.1).
        let unsigned = format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none","kid":"k1"}"#),
            base64_url(&claims(300).to_string())
        );
        refused(unsigned, "alg none");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hs = encode(&header, &claims(300), &EncodingKey::from_secret(b"k1")).unwrap();
        refused(hs, "HS256 with a provider's public key");
    }

    /// A JWKS endpoint on loopback serving whatever `keys` holds; counts the requests.
    fn jwks_endpoint(
        keys: std::sync::Arc<std::sync::Mutex<String>>,
        hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/certs", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = keys.lock().unwrap().clone();
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    fn jwks_of(pem: &str, kid: &str) -> String {
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.into());
        json!({ "keys": [jwk] }).to_string()
    }

    #[test]
    fn keys_from_the_providers_url_are_refetched_once_when_it_rotates_them() {
        use std::sync::{atomic::AtomicUsize, atomic::Ordering, Arc, Mutex};
        let served = Arc::new(Mutex::new(jwks_of(TEST_KEY, "k1")));
        let hits = Arc::new(AtomicUsize::new(0));
        let url = jwks_endpoint(served.clone(), hits.clone());
        let mapping = ClaimMapping {
            facility: "facility".into(),
            roles: "realm_access.roles".into(),
        };
        let p = OidcVerifier::from_source(
            ISSUER,
            Some("tramy".into()),
            JwksSource::Url(url),
            std::time::Duration::ZERO,
            mapping,
        )
        .unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(p
            .verify_refreshing(&token(TEST_KEY, "k1", claims(300)))
            .is_ok());
        assert_eq!(hits.load(Ordering::SeqCst), 1, "a known key needs no fetch");

        // The provider rotates: k1 is gone, k2 signs.
        *served.lock().unwrap() = jwks_of(OTHER_KEY, "k2");
        let who = p.verify_refreshing(&token(OTHER_KEY, "k2", claims(300)));
        assert_eq!(who.unwrap().subject, "bs.lan");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "one refetch for the new kid"
        );
        assert!(p
            .verify_refreshing(&token(TEST_KEY, "k1", claims(300)))
            .is_err());
    }

    #[test]
    fn an_unknown_kid_refetches_at_most_once_per_interval() {
        use std::sync::{atomic::AtomicUsize, atomic::Ordering, Arc, Mutex};
        let served = Arc::new(Mutex::new(jwks_of(TEST_KEY, "k1")));
        let hits = Arc::new(AtomicUsize::new(0));
        let url = jwks_endpoint(served, hits.clone());
        let p = OidcVerifier::from_source(
            ISSUER,
            Some("tramy".into()),
            JwksSource::Url(url),
            std::time::Duration::from_secs(3600),
            ClaimMapping::default(),
        )
        .unwrap();
        for kid in ["made-up-1", "made-up-2", "made-up-3"] {
            assert!(p
                .verify_refreshing(&token(TEST_KEY, kid, claims(300)))
                .is_err());
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "no request flood to the provider"
        );
    }

    #[test]
    fn keys_from_a_file_verify_and_a_missing_or_bad_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks_of(TEST_KEY, "k1")).unwrap();
        let source = |p: &std::path::Path| JwksSource::File(p.to_path_buf());
        let hour = std::time::Duration::from_secs(3600);
        let mapping = ClaimMapping {
            facility: "facility".into(),
            roles: "realm_access.roles".into(),
        };
        let p = OidcVerifier::from_source(ISSUER, None, source(&path), hour, mapping).unwrap();
        assert!(p.verify(&token(TEST_KEY, "k1", claims(300))).is_ok());

        let missing = dir.path().join("nowhere.json");
        let err = OidcVerifier::from_source(
            ISSUER,
            None,
            source(&missing),
            hour,
            ClaimMapping::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nowhere.json"), "{err}");
        std::fs::write(&path, "{\"not\": \"keys\"}").unwrap();
        let err =
            OidcVerifier::from_source(ISSUER, None, source(&path), hour, ClaimMapping::default())
                .unwrap_err();
        assert!(err.to_string().contains("not a key set"), "{err}");
    }

    fn base64_url(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }
}
