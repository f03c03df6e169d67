//! A cheap sign that the worklist may have changed, for pages that update themselves (the web
//! UI's event stream polls it every second or so): a few indexed maxima and the count of
//! triage jobs still to run. It says nothing about what changed nor whose it is; a page told
//! of a change re-reads what its caller may see.

use super::index::{Index, IndexError};
use crate::access::{Action, Principal};

/// Moves whenever a study, an instance or a finding is added, or a triage job starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeMarker {
    studies: i64,
    instances: i64,
    findings: i64,
    active_jobs: i64,
}

impl Index {
    /// The index's [`ChangeMarker`] now, for a caller who may read findings. Every part is an
    /// index look-up (primary keys, and the `triage_jobs_ready` index for the jobs).
    pub async fn worklist_marker(&self, who: &Principal) -> Result<ChangeMarker, IndexError> {
        self.admit(who, Action::ReadFindings)?;
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT (SELECT COALESCE(MAX(id), 0) FROM studies), \
                 (SELECT COALESCE(MAX(id), 0) FROM instances), \
                 (SELECT COALESCE(MAX(id), 0) FROM findings), \
                 (SELECT COUNT(*) FROM triage_jobs WHERE state IN ('queued', 'running'))",
                [],
                |r| {
                    Ok(ChangeMarker {
                        studies: r.get(0)?,
                        instances: r.get(1)?,
                        findings: r.get(2)?,
                        active_jobs: r.get(3)?,
                    })
                },
            )?)
        })
        .await
    }
}
