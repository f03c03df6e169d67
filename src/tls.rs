//! TLS for the listeners (rustls on the ring backend): a certificate chain and its private key
//! from PEM files, into a [`TlsAcceptor`] the HTTP and DIMSE accept loops wrap connections with.
//!
//! DICOM over TLS follows PS3.15 B.1 (Basic TLS Secure Transport Connection Profile, as updated
//! by the BCP 195 profiles B.9-B.11): TLS 1.2 or 1.3 only, rustls' AEAD cipher suites, and,
//! when a client CA is configured, a client certificate required of every peer. Errors name the
//! configuration key and the file, never what the file holds (it may be key material).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
pub use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        /// The configuration key, e.g. `http.tls_certificate`.
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind the key needs.
    #[error("{key}: {path} is not a PEM file with {what}")]
    NotPem {
        /// The configuration key.
        key: String,
        /// The file.
        path: PathBuf,
        /// What was expected in it.
        what: &'static str,
    },
    /// rustls refused the certificate, the key or the pair (a key of another certificate, an
    /// unsupported key type); its message never holds key material.
    #[error("{section}.tls_certificate / {section}.tls_private_key: {source}")]
    Refused {
        /// `http` or `dimse`.
        section: &'static str,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The client CA file holds certificates rustls cannot use as trust anchors.
    #[error("{key}: {path}: {reason}")]
    ClientCa {
        /// The configuration key.
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The files one listener's TLS is made of.
pub struct TlsFiles<'a> {
    /// The configuration section, `http` or `dimse`, for messages.
    pub section: &'static str,
    /// PEM certificate chain, server certificate first.
    pub certificate: &'a Path,
    /// PEM private key of that certificate.
    pub private_key: &'a Path,
    /// PEM CA certificates client certificates must chain to; `None`: none asked for.
    pub client_ca: Option<&'a Path>,
    /// ALPN protocols offered (`http/1.1` for HTTP; none for DICOM).
    pub alpn: &'a [&'a [u8]],
}

/// An acceptor for `files`, or the first thing wrong with them.
pub fn acceptor(files: &TlsFiles<'_>) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(files)?)))
}

/// An acceptor for a listener whose certificate and key may be unset (`Ok(None)`: plain TCP).
/// The configuration has already checked they come in pairs.
pub fn optional_acceptor(
    section: &'static str,
    certificate: Option<&Path>,
    private_key: Option<&Path>,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Option<TlsAcceptor>, TlsError> {
    let (Some(certificate), Some(private_key)) = (certificate, private_key) else {
        return Ok(None);
    };
    acceptor(&TlsFiles {
        section,
        certificate,
        private_key,
        client_ca,
        alpn,
    })
    .map(Some)
}

fn server_config(files: &TlsFiles<'_>) -> Result<ServerConfig, TlsError> {
    let section = files.section;
    let chain = certificates(&format!("{section}.tls_certificate"), files.certificate)?;
    let key = private_key(&format!("{section}.tls_private_key"), files.private_key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Refused { section, source })?;
    let builder = match files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let key = format!("{section}.tls_client_ca");
            let mut roots = RootCertStore::empty();
            for cert in certificates(&key, path)? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    key: key.clone(),
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    key,
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // rustls checks that the key belongs to the certificate (InconsistentKeys).
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Refused { section, source })?;
    config.alpn_protocols = files.alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Reads `path` whole, naming `key` when it cannot.
fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file; at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let not_pem = || TlsError::NotPem {
        key: key.to_owned(),
        path: path.to_owned(),
        what: "CERTIFICATE items",
    };
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| not_pem())?;
    if chain.is_empty() {
        return Err(not_pem());
    }
    Ok(chain)
}

/// The first private key of a PEM file. The PEM parser's own error is not passed on: it may
/// quote a line of the file.
fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NotPem {
        key: key.to_owned(),
        path: path.to_owned(),
        what: "a PRIVATE KEY item (PKCS#8, PKCS#1 or SEC1)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PEM private key that is not valid DER, with a recognisable secret in it.
    const SECRET_LOOKING_KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nU0VDUkVUS0VZTUFURVJJQUw=\n-----END PRIVATE KEY-----\n";

    fn files<'a>(cert: &'a Path, key: &'a Path) -> TlsFiles<'a> {
        TlsFiles {
            section: "http",
            certificate: cert,
            private_key: key,
            client_ca: None,
            alpn: &[],
        }
    }

    #[test]
    fn a_missing_file_is_named_with_its_key() {
        let dir = tempfile::tempdir().expect("dir");
        let cert = dir.path().join("nope.pem");
        let err = acceptor(&files(&cert, &cert)).err().expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("http.tls_certificate") && text.contains("nope.pem"),
            "{text}"
        );
    }

    #[test]
    fn a_file_that_is_not_pem_is_named_with_its_key() {
        let dir = tempfile::tempdir().expect("dir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, b"hello, not a certificate").expect("write");
        let text = acceptor(&files(&cert, &cert))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            text.contains("http.tls_certificate") && text.contains("not a PEM file"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_key_is_refused_without_repeating_its_contents() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        std::fs::write(&cert, certified.cert.pem()).expect("write");
        std::fs::write(&key, SECRET_LOOKING_KEY).expect("write");
        let text = acceptor(&files(&cert, &key))
            .err()
            .expect("refused")
            .to_string();
        assert!(text.contains("http.tls_private_key"), "{text}");
        assert!(!text.contains("U0VDUkVU"), "key material in {text}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let one = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        std::fs::write(&cert, one.cert.pem()).expect("write");
        std::fs::write(&key, other.signing_key.serialize_pem()).expect("write");
        let text = acceptor(&files(&cert, &key))
            .err()
            .expect("refused")
            .to_string();
        assert!(text.contains("http.tls_certificate"), "{text}");
    }

    #[test]
    fn a_matching_pair_makes_an_acceptor() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let one = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        std::fs::write(&cert, one.cert.pem()).expect("write");
        std::fs::write(&key, one.signing_key.serialize_pem()).expect("write");
        assert!(acceptor(&files(&cert, &key)).is_ok());
        let with_ca = TlsFiles {
            client_ca: Some(&cert),
            ..files(&cert, &key)
        };
        assert!(acceptor(&with_ca).is_ok());
        assert!(optional_acceptor("http", None, None, None, &[])
            .expect("no TLS")
            .is_none());
    }
}
