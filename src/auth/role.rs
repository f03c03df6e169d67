//! Roles an identity can hold (issue #9 item 3).

use std::fmt;
use std::str::FromStr;

/// What an identity may do. Scoped to its facility, except [`Role::Superadmin`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Administers one facility: its AE titles, tokens, grants.
    Admin,
    /// Reads its facility's and granted data; gives feedback on findings.
    Clinician,
    /// Stores only (a modality or a gateway).
    Modality,
    /// Runs evaluations and reads only what is granted for research.
    Researcher,
    /// Another tramy server (forwarding between facilities).
    Node,
    /// Administers the whole server, every facility.
    Superadmin,
}

impl Role {
    /// Every role, in a fixed order (for help texts and tests).
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Clinician,
        Role::Modality,
        Role::Researcher,
        Role::Node,
        Role::Superadmin,
    ];

    /// The name used in tokens, claims and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Modality => "modality",
            Role::Researcher => "researcher",
            Role::Node => "node",
            Role::Superadmin => "superadmin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown role {0:?}: use one of admin, clinician, modality, researcher, node, superadmin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_reads_back_from_its_name_and_unknown_names_are_refused() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{role}\""));
        }
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .to_string()
            .contains("clinician"));
    }
}
