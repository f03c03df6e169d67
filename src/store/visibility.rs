//! A caller's [`Visibility`] as SQL: the one condition every query of the index is narrowed by
//! (issue #9 item 5). A study is visible to a facility that holds instances of it, or to which a
//! grant in force opens it; an instance, to the facility that filed it, or through a grant of
//! that facility's studies. Grants in force: not revoked, not expired, their consent (if any)
//! not revoked and within its validity (`grant_studies` view, migration 3).

use super::db::Value as SqlValue;

use crate::access::{GrantScope, Visibility};

/// A condition and its parameters, in order.
#[derive(Debug, Default)]
pub(super) struct Condition {
    pub(super) sql: String,
    pub(super) params: Vec<SqlValue>,
}

fn scope_column(scope: GrantScope) -> &'static str {
    match scope {
        GrantScope::Metadata => "g.scope_metadata",
        GrantScope::Images => "g.scope_images",
        GrantScope::Findings => "g.scope_findings",
    }
}

/// The condition that the study with row id `study` (an SQL expression) is visible; at the
/// instance level `instance_facility` names the instance's facility column, so that a study
/// several facilities hold shows only what the caller's own facility or a grant covers. `None`:
/// no condition (everything is visible).
pub(super) fn study_condition(
    v: &Visibility,
    study: &str,
    instance_facility: Option<&str>,
) -> Option<Condition> {
    let mut c = Condition::default();
    match v {
        Visibility::All => return None,
        Visibility::Nothing => c.sql = "1 = 0".into(),
        Visibility::Facility {
            facility,
            own,
            purposes,
            scope,
        } => {
            let mut either = Vec::new();
            if *own {
                match instance_facility {
                    Some(column) => either.push(format!("{column} = ?")),
                    None => either.push(format!(
                        "EXISTS (SELECT 1 FROM study_facilities sf WHERE sf.study_fk = {study} AND sf.facility = ?)"
                    )),
                }
                c.params.push(SqlValue::Text(facility.clone()));
            }
            // `IN ()` is SQLite's alone; `IN (NULL)` matches nothing on both engines.
            let marks = if purposes.is_empty() {
                "NULL".to_string()
            } else {
                vec!["?"; purposes.len()].join(", ")
            };
            either.push(format!(
                "EXISTS (SELECT 1 FROM grant_studies g WHERE g.study_fk = {study} AND g.to_facility = ? \
                 AND g.purpose IN ({marks}) AND {}{})",
                in_force(*scope),
                from_facility(instance_facility)
            ));
            c.params.push(SqlValue::Text(facility.clone()));
            c.params
                .extend(purposes.iter().map(|p| SqlValue::Text(p.to_string())));
            push_times(&mut c.params);
            c.sql = format!("({})", either.join(" OR "));
        }
        Visibility::Grant { grant_id, scope } => {
            c.sql = format!(
                "EXISTS (SELECT 1 FROM grant_studies g WHERE g.study_fk = {study} AND g.grant_id = ? AND {}{})",
                in_force(*scope),
                from_facility(instance_facility)
            );
            c.params.push(SqlValue::Text(grant_id.clone()));
            push_times(&mut c.params);
        }
    }
    Some(c)
}

/// The condition for a patient row `p`: one of its studies is visible.
pub(super) fn patient_condition(v: &Visibility) -> Option<Condition> {
    let inner = study_condition(v, "vs.id", None)?;
    Some(Condition {
        sql: format!(
            "EXISTS (SELECT 1 FROM studies vs WHERE vs.patient_fk = p.id AND {})",
            inner.sql
        ),
        params: inner.params,
    })
}

/// A condition that always holds (what `None` from the functions above means).
fn always() -> Condition {
    Condition {
        sql: "1 = 1".into(),
        params: Vec::new(),
    }
}

/// [`study_condition`], or one that always holds when everything is visible.
pub(super) fn study_filter(
    v: &Visibility,
    study: &str,
    instance_facility: Option<&str>,
) -> Condition {
    study_condition(v, study, instance_facility).unwrap_or_else(always)
}

/// [`patient_condition`], or one that always holds when everything is visible.
pub(super) fn patient_filter(v: &Visibility) -> Condition {
    patient_condition(v).unwrap_or_else(always)
}

/// Whether a study with this Study Instance UID exists and `v` shows it.
pub(super) fn study_visible(
    c: &super::db::Connection,
    v: &Visibility,
    uid: &str,
) -> super::db::Result<bool> {
    let visible = study_filter(v, "st.id", None);
    let params = std::iter::once(SqlValue::Text(uid.to_string())).chain(visible.params);
    c.prepare_cached(&format!(
        "SELECT 1 FROM studies st WHERE st.study_instance_uid = ? AND {}",
        visible.sql
    ))?
    .exists(super::db::params_from_iter(params))
}

fn in_force(scope: GrantScope) -> String {
    format!(
        "{} = 1 AND g.expires_at > ? AND (g.consent_from IS NULL OR g.consent_from <= ?) \
         AND (g.consent_until IS NULL OR g.consent_until > ?)",
        scope_column(scope)
    )
}

fn push_times(params: &mut Vec<SqlValue>) {
    let now = super::times::now();
    params.extend([
        SqlValue::Text(now.clone()),
        SqlValue::Text(now.clone()),
        SqlValue::Text(now),
    ]);
}

fn from_facility(instance_facility: Option<&str>) -> String {
    instance_facility
        .map(|column| format!(" AND g.from_facility = {column}"))
        .unwrap_or_default()
}
