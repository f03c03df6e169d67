//! Unique identifiers (PS3.5 9): validated newtypes so a Study UID can never be passed where a SOP
//! Instance UID is expected, and so nothing unvalidated reaches an object key or SQL.

use std::fmt;

/// Why a string is not a valid UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    /// Missing or empty.
    #[error("{0} is missing or empty")]
    Empty(&'static str),
    /// Longer than 64 characters or not digits and dots (PS3.5 9.1).
    #[error("{what} {value:?} is not a valid UID (PS3.5 9.1: up to 64 digits and dots)")]
    Malformed {
        /// Which attribute.
        what: &'static str,
        /// The offending value.
        value: String,
    },
}

fn validate(what: &'static str, raw: &str) -> Result<String, UidError> {
    let v = raw.trim_end_matches(['\0', ' ']).trim_start();
    if v.is_empty() {
        return Err(UidError::Empty(what));
    }
    let well_formed = v.len() <= 64
        && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !v.starts_with('.')
        && !v.ends_with('.')
        && !v.contains("..");
    if !well_formed {
        return Err(UidError::Malformed {
            what,
            value: v.chars().take(80).collect(),
        });
    }
    Ok(v.to_string())
}

macro_rules! uid_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates `raw` (trailing padding removed) as this kind of UID.
            pub fn new(raw: &str) -> Result<Self, UidError> {
                validate($what, raw).map($name)
            }
            /// The UID text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

uid_type!(
    /// Study Instance UID (0020,000D).
    StudyInstanceUid, "StudyInstanceUID"
);
uid_type!(
    /// Series Instance UID (0020,000E).
    SeriesInstanceUid, "SeriesInstanceUID"
);
uid_type!(
    /// SOP Instance UID (0008,0018).
    SopInstanceUid, "SOPInstanceUID"
);
uid_type!(
    /// SOP Class UID (0008,0016).
    SopClassUid, "SOPClassUID"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_padding_is_removed() {
        assert_eq!(StudyInstanceUid::new("1.2.3\0").unwrap().as_str(), "1.2.3");
    }

    #[test]
    fn path_traversal_and_letters_are_rejected() {
        assert!(SopInstanceUid::new("../../etc").is_err());
        assert!(SopInstanceUid::new("1.2.a").is_err());
        assert!(SopInstanceUid::new("1..2").is_err());
        assert!(SopInstanceUid::new(&"1".repeat(65)).is_err());
        assert_eq!(
            SopInstanceUid::new(""),
            Err(UidError::Empty("SOPInstanceUID"))
        );
    }
}
