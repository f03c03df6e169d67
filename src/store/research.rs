//! What a research grant opens, for research exports (`src/research/`): the studies of one
//! grant made for research to the caller's facility. Whether each is in force and shows its
//! images is decided by the caller's visibility, as for every read.

use super::db::params;
use super::index::{Index, IndexError};
use crate::access::{Action, Principal};

impl Index {
    /// The Study Instance UIDs of grant `grant_id`, when it is a research grant to the caller's
    /// facility (a system-wide caller: any research grant); `None` when there is no such grant
    /// (another facility's grant is not told apart from none).
    pub async fn research_grant_studies(
        &self,
        who: &Principal,
        grant_id: String,
    ) -> Result<Option<Vec<String>>, IndexError> {
        self.admit(who, Action::Retrieve)?;
        let facility = (!who.is_system_wide()).then(|| who.facility().unwrap_or("").to_string());
        self.read(move |c| {
            let known = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM grants g WHERE g.id = ?1 AND g.purpose = 'research' \
                     AND (CAST(?2 AS TEXT) IS NULL OR g.to_facility = ?2)",
                )?
                .query_row(params![grant_id, facility], |r| r.get::<_, i64>(0))?;
            if known == 0 {
                return Ok(None);
            }
            let uids = c
                .prepare_cached(
                    "SELECT DISTINCT s.study_instance_uid FROM grant_studies g \
                     JOIN studies s ON s.id = g.study_fk WHERE g.grant_id = ?1 \
                     ORDER BY s.study_instance_uid",
                )?
                .query_map(params![grant_id], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(uids))
        })
        .await
    }
}
