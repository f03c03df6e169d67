//! Pseudonyms for a research set: new UIDs, research subject IDs and each subject's date
//! shift, each an HMAC-SHA-256 of the original under a secret this server keeps
//! (`DATA_DIR/research-secret`, 0600, made at first use, never served). The same original gets
//! the same pseudonym in every export of this server, so sets exported at different times
//! join up; without the secret none can be reversed or recomputed.

use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::ResearchError;

/// The secret's file under the data folder.
pub const SECRET_FILE: &str = "research-secret";

/// The keyed hashes a research export names things by.
#[derive(Clone)]
pub struct Pseudonyms {
    secret: [u8; 32],
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(..)")
    }
}

impl Pseudonyms {
    /// The server's secret from `data_dir`, made (0600) when there is none yet.
    pub fn load_or_create(data_dir: &Path) -> Result<Pseudonyms, ResearchError> {
        let path = data_dir.join(SECRET_FILE);
        let io = |e: std::io::Error| ResearchError::Secret(e.to_string());
        match std::fs::read(&path) {
            Ok(bytes) => {
                let secret = <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| ResearchError::Secret(format!("{SECRET_FILE} is not 32 bytes")))?;
                Ok(Pseudonyms { secret })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| ResearchError::Secret(e.to_string()))?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut file) => {
                        file.write_all(&secret).map_err(io)?;
                        file.sync_all().map_err(io)?;
                        Ok(Pseudonyms { secret })
                    }
                    // Another export made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(data_dir)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Pseudonyms under a given secret (tests).
    pub fn with_secret(secret: [u8; 32]) -> Pseudonyms {
        Pseudonyms { secret }
    }

    fn mac(&self, domain: &str, value: &str) -> [u8; 32] {
        // The key is 32 bytes; HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The new UID for `original`: `2.25.` and a 128-bit integer (PS3.5 B.2), at most 44
    /// characters, under the 64 a UID may have.
    pub fn uid(&self, original: &str) -> String {
        let mac = self.mac("uid", original.trim_end_matches(['\0', ' ']));
        let mut n = [0u8; 16];
        n.copy_from_slice(&mac[..16]);
        // A UID component has no leading zero (PS3.5 9.1): a nonzero top bit rules it out.
        n[0] |= 0x80;
        format!("2.25.{}", u128::from_be_bytes(n))
    }

    /// The research subject ID of a patient (Patient ID with its issuer): `RS` and 12 hex digits.
    pub fn subject_id(&self, patient_id: &str, issuer: &str) -> String {
        let mac = self.mac("subject", &format!("{issuer}|{patient_id}"));
        format!("RS{}", hex::encode_upper(&mac[..6]))
    }

    /// How many days a subject's dates move back: 365 to 3,649, the same in every export, so
    /// intervals between a subject's examinations survive (PS3.15 E.3.6).
    pub fn date_shift_days(&self, subject_id: &str) -> i64 {
        let mac = self.mac("dates", subject_id);
        let n = u16::from_be_bytes([mac[0], mac[1]]);
        -(365 + i64::from(n) % 3285)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_valid_and_keyed() {
        let a = Pseudonyms::with_secret([1; 32]);
        let b = Pseudonyms::with_secret([2; 32]);
        let uid = a.uid("1.2.840.113619.2.1.1");
        assert_eq!(uid, a.uid("1.2.840.113619.2.1.1"));
        assert_ne!(uid, b.uid("1.2.840.113619.2.1.1"));
        assert_ne!(uid, a.uid("1.2.840.113619.2.1.2"));
        assert!(uid.len() <= 64 && uid.starts_with("2.25."), "{uid}");
        assert!(!uid["2.25.".len()..].starts_with('0'));
        assert!(
            crate::dicom::uid::SopInstanceUid::new(&uid).is_ok(),
            "{uid}"
        );
    }

    #[test]
    fn a_subject_keeps_its_id_and_shift() {
        let p = Pseudonyms::with_secret([3; 32]);
        let id = p.subject_id("12345", "HOSP");
        assert_eq!(id, p.subject_id("12345", "HOSP"));
        assert_ne!(id, p.subject_id("12345", "OTHER"));
        let d = p.date_shift_days(&id);
        assert!((-3649..=-365).contains(&d), "{d}");
    }
}
