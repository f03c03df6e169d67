//! Each facility's Ed25519 signing key (issue #10 item 3): what its manifests and delivery
//! receipts will be signed with, so a peer can check that they come from it and were not changed.
//! The private key is a PKCS#8 PEM file `DATA_DIR/keys/CODE.pem` (mode 0600, never replaced, never
//! served); the public key is published as a JWK (RFC 8037: `kty` OKP, `crv` Ed25519) whose `kid`
//! is its RFC 7638 thumbprint.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

/// Why a facility's key could not be made or read. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be written or read.
    #[error("facility key {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The file is not a PKCS#8 Ed25519 private key.
    #[error("facility key {0} is not a PKCS#8 Ed25519 private key: restore it from a backup, or move it away to make a new one")]
    Malformed(PathBuf),
    /// The operating system's random source failed.
    #[error("cannot make a facility key: {0}")]
    Random(String),
}

/// A facility's public key as a JWK (RFC 8037 2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PublicJwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// Its RFC 7638 thumbprint, base64url.
    pub kid: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// `EdDSA`.
    pub alg: String,
}

/// A JWK Set (RFC 7517 5).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PublicJwkSet {
    /// The keys.
    pub keys: Vec<PublicJwk>,
}

/// Where facility `code`'s key lives (codes are checked: letters, digits, `-`, `_`, `.`).
pub fn key_path(data_dir: &Path, code: &str) -> PathBuf {
    data_dir.join("keys").join(format!("{code}.pem"))
}

/// Facility `code`'s signing key: read from its file, or made and written there when there is
/// none (a file that exists is never replaced).
pub fn ensure(data_dir: &Path, code: &str) -> Result<SigningKey, KeyError> {
    let path = key_path(data_dir, code);
    match std::fs::read_to_string(&path) {
        Ok(pem) => SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Malformed(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(source) => Err(KeyError::File { path, source }),
    }
}

fn create(path: &Path) -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| KeyError::Random(e.to_string()))?;
    let file_error = |source| KeyError::File {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(file_error)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(pem.as_bytes()).map_err(file_error)?;
            file.sync_all().map_err(file_error)?;
            Ok(key)
        }
        // Made meanwhile by another process (`tramy facility add` beside the server): use it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let pem = std::fs::read_to_string(path).map_err(file_error)?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Malformed(path.to_owned()))
        }
        Err(source) => Err(file_error(source)),
    }
}

/// The public half of `key` as a JWK, `kid` its RFC 7638 thumbprint.
pub fn public_jwk(key: &SigningKey) -> PublicJwk {
    verifying_jwk(&key.verifying_key())
}

/// `key` as a JWK, `kid` its RFC 7638 thumbprint.
pub fn verifying_jwk(key: &ed25519_dalek::VerifyingKey) -> PublicJwk {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let x = b64(key.as_bytes());
    // RFC 7638 3.2: the required members, lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    PublicJwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        kid: b64(&Sha256::digest(canonical.as_bytes())),
        x,
        use_: "sig".into(),
        alg: "EdDSA".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, Verifier};

    #[test]
    fn a_key_is_made_once_kept_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let made = ensure(dir.path(), "79001").unwrap();
        let again = ensure(dir.path(), "79001").unwrap();
        assert_eq!(made.to_bytes(), again.to_bytes());
        let path = key_path(dir.path(), "79001");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = ensure(dir.path(), "79002").unwrap();
        assert_ne!(made.to_bytes(), other.to_bytes());
        let signature = made.sign(b"manifest");
        assert!(again
            .verifying_key()
            .verify(b"manifest", &signature)
            .is_ok());
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_path(dir.path(), "A");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            ensure(dir.path(), "A"),
            Err(KeyError::Malformed(_))
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }

    #[test]
    fn the_jwk_thumbprint_follows_rfc_7638() {
        // RFC 8037 A.1 and A.3: this private key's public JWK and its thumbprint.
        let seed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let key = SigningKey::from_bytes(&seed.try_into().unwrap());
        let jwk = public_jwk(&key);
        assert_eq!(jwk.x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!(jwk.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }
}
