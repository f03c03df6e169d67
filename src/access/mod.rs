//! Who is asking, and what each caller may do. Every read and write of the archive's index names
//! its caller, a [`Principal`], and what it does, an [`Action`]; the store passes both through
//! one checkpoint (`store::Index::admit`) before touching data, which refuses an action the
//! caller's roles do not allow ([`Principal::permits`]), and narrows every query to what the
//! caller may see ([`Visibility`], applied in `store/query.rs`), for every protocol at once.
//!
//! Callers: tramy itself (triage, integrity scrub, re-indexing, the findings report it files);
//! an authenticated identity (an API token, an OpenID Connect access token, or a registered AE
//! title), acting for one facility with its roles, or system-wide as superadmin; a share link,
//! which sees one study; and, only where no credential is needed (`/healthz`), nobody.

pub mod sharing;

use crate::auth::{Identity, Role};

/// The caller of an archive operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    kind: PrincipalKind,
    /// A stable name for audit: `system`, `token:<id>`, an OIDC `sub`, `ae:<AE title>`, `share:<id>`.
    subject: String,
    /// The facility it acts for; `None`: system-wide (tramy itself, superadmin).
    facility: Option<String>,
    roles: Vec<Role>,
    /// The network address it called from, when it came over the network.
    address: Option<String>,
}

/// What kind of caller a [`Principal`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// tramy's own work: triage, integrity checks, re-indexing, `tramy import`.
    System,
    /// A protocol client that presented no credential (only `/healthz` admits it).
    Anonymous,
    /// A verified credential: an API token, an OIDC access token or a registered AE title.
    Authenticated,
    /// A share link: sees the studies of one grant, nothing else.
    ShareLink {
        /// The grant the link belongs to.
        grant_id: String,
    },
}

/// What a caller does with the index: the unit of authorization and of audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Match entities (C-FIND, QIDO-RS).
    Query,
    /// Read stored metadata (WADO-RS metadata).
    ReadMetadata,
    /// Resolve instances to send their images (C-GET, C-MOVE, WADO-RS, WADO-URI, rendered).
    Retrieve,
    /// File an instance (C-STORE, STOW-RS, import, re-indexing), with the lookups that decide
    /// duplicates and conflicts, which see every filed instance whoever the caller.
    Store,
    /// Read triage results: findings, worklist, job queue.
    ReadFindings,
    /// Run triage: claim jobs, record findings and failures.
    Triage,
    /// Integrity bookkeeping: damage marks, instance listings for scrub and reconciliation.
    Integrity,
    /// Change or list the registry: facilities, AE titles, API tokens.
    Administer,
    /// Look up a presented credential's record and note its use.
    Authenticate,
    /// Record or revoke a patient's consent; link patients.
    ManagePatients,
    /// Grant another facility access, list and revoke grants and share links.
    Grant,
    /// Read the audit trail.
    ReadAudit,
    /// Exchange deliveries with a peer server: ask which instances are held (by SHA-256), hand
    /// over a signed manifest for a signed receipt (issue #10).
    Deliver,
}

/// The part of a study a grant opens, and so what each reading action needs (issue #9 item 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantScope {
    /// Attributes and DICOM JSON metadata (QIDO-RS, C-FIND, WADO-RS metadata).
    Metadata,
    /// Pixel data and whole instances (WADO, C-GET, C-MOVE, rendered, frames).
    Images,
    /// AI findings and heatmaps.
    Findings,
}

impl GrantScope {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantScope::Metadata => "metadata",
            GrantScope::Images => "images",
            GrantScope::Findings => "findings",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<GrantScope> {
        [
            GrantScope::Metadata,
            GrantScope::Images,
            GrantScope::Findings,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
    }
}

impl Action {
    /// The grant scope a reading action needs on another facility's study; `None` for actions
    /// that never read through a grant.
    pub fn grant_scope(self) -> Option<GrantScope> {
        match self {
            Action::Query | Action::ReadMetadata => Some(GrantScope::Metadata),
            Action::Retrieve => Some(GrantScope::Images),
            Action::ReadFindings => Some(GrantScope::Findings),
            _ => None,
        }
    }
}

/// Which studies a caller may see for one action, as the store applies it to every query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Everything (tramy itself, superadmin).
    All,
    /// Nothing.
    Nothing,
    /// Studies of `facility` (when `own`) and those granted to it for `purposes` with `scope`.
    Facility {
        /// The facility's code.
        facility: String,
        /// Whether its own studies are visible (not for a researcher).
        own: bool,
        /// The purposes of grants that open other facilities' studies to this caller.
        purposes: &'static [&'static str],
        /// The part of a granted study the action needs.
        scope: GrantScope,
    },
    /// The studies of one share-link grant, with `scope`.
    Grant {
        /// The grant.
        grant_id: String,
        /// The part of the study the action needs.
        scope: GrantScope,
    },
}

/// Grant purposes that open studies to a clinician: a referral or an emergency (break-glass).
const CLINICAL_PURPOSES: &[&str] = &["referral", "emergency"];
/// Grant purposes that open studies to a researcher.
const RESEARCH_PURPOSES: &[&str] = &["research"];

impl Principal {
    /// tramy's own work.
    pub fn system() -> Principal {
        Principal {
            kind: PrincipalKind::System,
            subject: "system".into(),
            facility: None,
            roles: Vec::new(),
            address: None,
        }
    }

    /// A client that presented no credential.
    pub fn anonymous() -> Principal {
        Principal {
            kind: PrincipalKind::Anonymous,
            subject: "anonymous".into(),
            facility: None,
            roles: Vec::new(),
            address: None,
        }
    }

    /// The caller a verified credential names.
    pub fn authenticated(identity: Identity) -> Principal {
        Principal {
            kind: PrincipalKind::Authenticated,
            subject: identity.subject,
            facility: identity.facility,
            roles: identity.roles,
            address: None,
        }
    }

    /// A share link's holder: may only read, and sees only the studies of `grant_id`, a grant
    /// of `facility`'s data.
    pub fn share_link(grant_id: &str, facility: &str) -> Principal {
        Principal {
            kind: PrincipalKind::ShareLink {
                grant_id: grant_id.to_string(),
            },
            subject: format!("share:{grant_id}"),
            facility: Some(facility.to_string()),
            roles: Vec::new(),
            address: None,
        }
    }

    /// The same caller, noted as calling from `address`.
    pub fn from_address(mut self, address: impl Into<String>) -> Principal {
        self.address = Some(address.into());
        self
    }

    /// The kind of caller.
    pub fn kind(&self) -> &PrincipalKind {
        &self.kind
    }

    /// Its stable name for audit.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The facility it acts for (`None`: system-wide or nobody's).
    pub fn facility(&self) -> Option<&str> {
        self.facility.as_deref()
    }

    /// Its roles.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// The address it called from.
    pub fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// Whether it acts for the whole server (tramy itself or a superadmin).
    pub fn is_system_wide(&self) -> bool {
        matches!(self.kind, PrincipalKind::System) || self.has(Role::Superadmin)
    }

    fn has(&self, role: Role) -> bool {
        matches!(self.kind, PrincipalKind::Authenticated) && self.roles.contains(&role)
    }

    /// Whether its roles allow `action` at all (what it may see is [`Principal::visibility`]).
    pub fn permits(&self, action: Action) -> bool {
        match &self.kind {
            PrincipalKind::System => true,
            PrincipalKind::Anonymous => false,
            PrincipalKind::ShareLink { .. } => action.grant_scope().is_some(),
            PrincipalKind::Authenticated => {
                self.roles.iter().any(|role| role_permits(*role, action))
            }
        }
    }

    /// Which studies it may see when doing `action`.
    pub fn visibility(&self, action: Action) -> Visibility {
        if !self.permits(action) {
            return Visibility::Nothing;
        }
        if self.is_system_wide() {
            return Visibility::All;
        }
        let scope = action.grant_scope().unwrap_or(GrantScope::Metadata);
        match (&self.kind, &self.facility) {
            (PrincipalKind::ShareLink { grant_id }, _) => Visibility::Grant {
                grant_id: grant_id.clone(),
                scope,
            },
            (PrincipalKind::Authenticated, Some(facility)) => {
                let reads_own = self.roles.iter().any(|r| {
                    matches!(r, Role::Admin | Role::Clinician | Role::Node)
                        && role_permits(*r, action)
                });
                let researcher_only = !reads_own && self.has(Role::Researcher);
                Visibility::Facility {
                    facility: facility.clone(),
                    own: reads_own,
                    purposes: if researcher_only {
                        RESEARCH_PURPOSES
                    } else {
                        CLINICAL_PURPOSES
                    },
                    scope,
                }
            }
            _ => Visibility::Nothing,
        }
    }
}

/// What each role may do (issue #9 item 3); facility scoping is applied on top by
/// [`Principal::visibility`].
fn role_permits(role: Role, action: Action) -> bool {
    use Action as A;
    match role {
        Role::Superadmin => true,
        Role::Admin => !matches!(action, A::Triage | A::Integrity),
        Role::Clinician => matches!(
            action,
            A::Query
                | A::ReadMetadata
                | A::Retrieve
                | A::ReadFindings
                | A::Store
                | A::ManagePatients
                | A::Grant
                | A::Authenticate
        ),
        Role::Modality => matches!(action, A::Store | A::Authenticate),
        Role::Researcher => matches!(
            action,
            A::Query | A::ReadMetadata | A::Retrieve | A::ReadFindings | A::Authenticate
        ),
        Role::Node => matches!(
            action,
            A::Store
                | A::Query
                | A::ReadMetadata
                | A::Retrieve
                | A::ReadFindings
                | A::Authenticate
                | A::Deliver
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_role(role: Role) -> Principal {
        Principal::authenticated(Identity {
            subject: "t".into(),
            facility: (role != Role::Superadmin).then(|| "A".to_string()),
            roles: vec![role],
        })
    }

    #[test]
    fn a_modality_stores_but_reads_nothing() {
        let p = as_role(Role::Modality);
        assert!(p.permits(Action::Store));
        for read in [Action::Query, Action::Retrieve, Action::ReadFindings] {
            assert!(!p.permits(read));
            assert_eq!(p.visibility(read), Visibility::Nothing);
        }
    }

    #[test]
    fn a_clinician_sees_its_facility_and_clinical_grants() {
        assert_eq!(
            as_role(Role::Clinician).visibility(Action::Retrieve),
            Visibility::Facility {
                facility: "A".into(),
                own: true,
                purposes: CLINICAL_PURPOSES,
                scope: GrantScope::Images
            }
        );
    }

    #[test]
    fn a_researcher_sees_only_research_grants() {
        assert_eq!(
            as_role(Role::Researcher).visibility(Action::Query),
            Visibility::Facility {
                facility: "A".into(),
                own: false,
                purposes: RESEARCH_PURPOSES,
                scope: GrantScope::Metadata
            }
        );
    }

    #[test]
    fn nobody_without_a_credential_may_do_anything() {
        let p = Principal::anonymous();
        assert!(!p.permits(Action::Query));
        assert!(!p.permits(Action::Store));
        assert_eq!(p.visibility(Action::Query), Visibility::Nothing);
    }

    #[test]
    fn superadmin_and_tramy_itself_see_everything() {
        assert_eq!(
            as_role(Role::Superadmin).visibility(Action::Query),
            Visibility::All
        );
        assert_eq!(
            Principal::system().visibility(Action::Query),
            Visibility::All
        );
    }

    #[test]
    fn a_share_link_reads_its_grant_and_changes_nothing() {
        let p = Principal::share_link("g1", "A");
        assert!(!p.permits(Action::Store));
        assert!(!p.permits(Action::Grant));
        assert_eq!(
            p.visibility(Action::ReadFindings),
            Visibility::Grant {
                grant_id: "g1".into(),
                scope: GrantScope::Findings
            }
        );
    }
}
