//! Instances whose stored object failed verification: missing, or not the bytes that were
//! acknowledged (checksum or identity mismatch). Recorded by the read path and by `tramy verify`,
//! cleared when a later check finds the object intact again (restored from a backup).

use super::db::{params, Connection};
use serde::Serialize;

use super::index::{Index, IndexError};
use crate::access::{Action, Principal};

/// What is wrong with a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Problem {
    /// No object under the instance's key.
    Missing,
    /// The object's data set is not the one acknowledged (checksum), or it holds another instance.
    Damaged,
}

impl Problem {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::Damaged => "damaged",
        }
    }

    fn parse(s: &str) -> Problem {
        if s == "missing" {
            Problem::Missing
        } else {
            Problem::Damaged
        }
    }
}

/// A recorded problem with one instance's object.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedInstance {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Missing or damaged.
    pub problem: Problem,
    /// What the check found (never a file path).
    pub reason: String,
    /// When it was first found (RFC 3339).
    pub detected_at: String,
}

/// Records `problem` for `sop` (keeps the first detection time).
fn mark(conn: &Connection, sop: &str, problem: Problem, reason: &str) -> super::db::Result<()> {
    let now = super::times::now();
    conn.prepare_cached(
        "INSERT INTO instance_damage (sop_instance_uid, problem, reason, detected_at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT(sop_instance_uid) DO UPDATE SET \
         problem = excluded.problem, reason = excluded.reason",
    )?
    .execute(params![sop, problem.as_str(), reason, now])?;
    Ok(())
}

/// Removes the mark of `sop`; returns whether there was one.
fn clear(conn: &Connection, sop: &str) -> super::db::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM instance_damage WHERE sop_instance_uid = ?1")?
        .execute([sop])?
        > 0)
}

/// Every marked instance, oldest detection first.
fn all(conn: &Connection) -> super::db::Result<Vec<DamagedInstance>> {
    conn.prepare_cached(
        "SELECT sop_instance_uid, problem, reason, detected_at FROM instance_damage \
         ORDER BY detected_at, sop_instance_uid",
    )?
    .query_map([], from_row)?
    .collect()
}

impl Index {
    /// Records `problem` for `sop` (keeps the first detection time).
    pub async fn mark_damaged(
        &self,
        who: &Principal,
        sop: &str,
        problem: Problem,
        reason: &str,
    ) -> Result<(), IndexError> {
        self.admit(who, Action::Integrity)?;
        let (sop, reason) = (sop.to_owned(), reason.to_owned());
        self.write(move |c| mark(c, &sop, problem, &reason)).await
    }

    /// Removes the mark of `sop`; returns whether there was one.
    pub async fn clear_damage(&self, who: &Principal, sop: &str) -> Result<bool, IndexError> {
        self.admit(who, Action::Integrity)?;
        let sop = sop.to_owned();
        self.write(move |c| clear(c, &sop)).await
    }

    /// Every marked instance, oldest detection first.
    pub async fn damaged_instances(
        &self,
        who: &Principal,
    ) -> Result<Vec<DamagedInstance>, IndexError> {
        self.admit(who, Action::Integrity)?;
        self.read(|c| Ok(all(c)?)).await
    }
}

fn from_row(r: &super::db::Row<'_>) -> super::db::Result<DamagedInstance> {
    Ok(DamagedInstance {
        sop_instance_uid: r.get(0)?,
        problem: Problem::parse(&r.get::<_, String>(1)?),
        reason: r.get(2)?,
        detected_at: r.get(3)?,
    })
}
