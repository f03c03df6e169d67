//! Who is asking. Every read and write of the archive's index names its caller, a [`Principal`],
//! and what it does, an [`Action`]; the store passes both through one checkpoint
//! (`store::Index::admit`) before touching data, so scoping (which facility's studies a caller
//! sees) and audit can be applied there for every protocol at once (issue #9).
//!
//! Today there are two callers: tramy itself (triage, integrity scrub, re-indexing, the findings
//! report it files) and an anonymous one (every HTTP and DIMSE request, as no credential is asked
//! yet). Authentication adds facility, role and grants to [`Principal`]; nothing at the call sites
//! changes.

/// The caller of an archive operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    kind: PrincipalKind,
}

/// What kind of caller a [`Principal`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// tramy's own work: triage, integrity checks, re-indexing, `tramy import`.
    System,
    /// A protocol client that presented no credential (HTTP, DIMSE).
    Anonymous,
}

impl Principal {
    /// tramy's own work.
    pub fn system() -> Principal {
        Principal {
            kind: PrincipalKind::System,
        }
    }

    /// A client of the HTTP or DIMSE listener that presented no credential.
    pub fn anonymous() -> Principal {
        Principal {
            kind: PrincipalKind::Anonymous,
        }
    }

    /// The kind of caller.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }
}

/// What a caller does with the index: the unit of authorization and, later, of audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Match entities (C-FIND, QIDO-RS) or resolve instances to retrieve (C-GET, C-MOVE, WADO).
    Query,
    /// Read stored metadata (WADO-RS metadata).
    ReadMetadata,
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
    /// Look up a presented API token's record and note its use.
    Authenticate,
}
