//! The lookup Storage Commitment needs (PS3.4 Annex J): which of the SOP instances a caller asks
//! to be committed are filed and visible to it, narrowed like every retrieval (invariant 20), so
//! another facility's instance reads as unknown.

use super::db::OptionalExtension;
use super::db::Value as SqlValue;

use super::index::{stored_instance_from_row, STORED_INSTANCE_SELECT};
use super::visibility::study_filter;
use super::{Index, IndexError, StoredInstance};
use crate::access::{Action, Principal};

impl Index {
    /// For each SOP Instance UID of `sops`, in order, its filed instance when `who` may retrieve
    /// it, else `None`. One primary-key lookup per UID on one read connection.
    pub async fn visible_instances(
        &self,
        who: &Principal,
        sops: Vec<String>,
    ) -> Result<Vec<Option<StoredInstance>>, IndexError> {
        self.admit(who, Action::Retrieve)?;
        let visibility = who.visibility(Action::Retrieve);
        self.read(move |conn| {
            let visible = study_filter(&visibility, "st.id", Some("i.facility"));
            let mut stmt = conn.prepare(&format!(
                "{STORED_INSTANCE_SELECT} WHERE i.sop_instance_uid = ? AND {}",
                visible.sql
            ))?;
            let mut found = Vec::with_capacity(sops.len());
            for sop in sops {
                let params =
                    std::iter::once(SqlValue::Text(sop)).chain(visible.params.iter().cloned());
                found.push(
                    stmt.query_row(
                        super::db::params_from_iter(params),
                        stored_instance_from_row,
                    )
                    .optional()?,
                );
            }
            Ok(found)
        })
        .await
    }
}
