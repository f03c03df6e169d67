//! A caller's [`Visibility`] as SQL: the one condition every query of the index is narrowed by
//! (issue #9 item 5). A study is visible to a facility that holds instances of it, or to which a
//! grant in force opens it; an instance, to the facility that filed it, or through a grant of
//! that facility's studies. Grants in force: not revoked, not expired, their consent (if any)
//! not revoked and within its validity (`grant_studies` view, migration 3).

use rusqlite::types::Value as SqlValue;

use crate::access::{GrantScope, Visibility};

/// A condition and its parameters, in order.
#[derive(Debug, Default)]
pub(super) struct Condition {
    pub(super) sql: String,
    pub(super) params: Vec<SqlValue>,
}

/// Now, as the index stores times (RFC 3339 UTC with milliseconds; text order is time order).
pub(super) fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
        Visibility::Nothing => c.sql = "0".into(),
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
            let marks = vec!["?"; purposes.len()].join(", ");
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

fn in_force(scope: GrantScope) -> String {
    format!(
        "{} = 1 AND g.expires_at > ? AND (g.consent_from IS NULL OR g.consent_from <= ?) \
         AND (g.consent_until IS NULL OR g.consent_until > ?)",
        scope_column(scope)
    )
}

fn push_times(params: &mut Vec<SqlValue>) {
    let now = now_text();
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
