//! The index schema as numbered migrations: on SQLite with `rusqlite_migration`, which keeps the
//! version in SQLite's `user_version`; on PostgreSQL each migration's twin in `migrations/postgres/`,
//! the version in the `tramy_schema` table. `Index::open` runs the pending ones in one transaction before
//! anything else touches the index, and refuses a data folder whose version is newer than this
//! tramy knows (no silent downgrade).
//!
//! The rule: a migration that has shipped is never edited. A schema change is a new file
//! `migrations/NNN_what.sql` appended to `MIGRATIONS`; `tests/upgrade.rs` opens a data folder
//! written before migrations existed and checks that it reaches [`SCHEMA_VERSION`] intact.

use rusqlite_migration::{Migrations, M};

use super::db::{Connection, DbError, Engine};

/// Every migration, in order; migration N brings the schema to version N.
const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/001_initial.sql")),
    M::up(include_str!("migrations/002_registry.sql")),
    M::up(include_str!("migrations/003_tenancy.sql")),
    M::up(include_str!("migrations/004_audit.sql")),
    M::up(include_str!("migrations/005_forwarding.sql")),
    M::up(include_str!("migrations/006_ae_port.sql")),
    M::up(include_str!("migrations/007_stats.sql")),
    M::up(include_str!("migrations/008_peer_oidc.sql")),
    M::up(include_str!("migrations/009_leases.sql")),
    M::up(include_str!("migrations/010_name_matching.sql")),
    M::up(include_str!("migrations/011_intended_use.sql")),
    M::up(include_str!("migrations/012_clip_findings.sql")),
    M::up(include_str!("migrations/013_finding_feedback.sql")),
];

/// The same migrations in PostgreSQL's dialect: entry N is migration N's twin.
const POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/001_initial.sql"),
    include_str!("migrations/postgres/002_registry.sql"),
    include_str!("migrations/postgres/003_tenancy.sql"),
    include_str!("migrations/postgres/004_audit.sql"),
    include_str!("migrations/postgres/005_forwarding.sql"),
    include_str!("migrations/postgres/006_ae_port.sql"),
    include_str!("migrations/postgres/007_stats.sql"),
    include_str!("migrations/postgres/008_peer_oidc.sql"),
    include_str!("migrations/postgres/009_leases.sql"),
    include_str!("migrations/postgres/010_name_matching.sql"),
    include_str!("migrations/postgres/011_intended_use.sql"),
    include_str!("migrations/postgres/012_clip_findings.sql"),
    include_str!("migrations/postgres/013_finding_feedback.sql"),
];

/// The schema version this tramy writes: the number of migrations.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Serializes nodes migrating one PostgreSQL database at the same start-up (any fixed number).
const MIGRATION_LOCK: i64 = 0x7472_616d_795f_6d67;

fn migrations() -> Migrations<'static> {
    Migrations::from_slice(MIGRATIONS)
}

/// The schema version of the index on `conn` (0: written before migrations, or new).
pub(super) fn version(conn: &Connection) -> Result<usize, DbError> {
    match conn.engine() {
        Engine::Sqlite => conn.query_row("PRAGMA user_version", [], |r| r.get(0)),
        Engine::Postgres => {
            let exists: bool =
                conn.query_row("SELECT to_regclass('tramy_schema') IS NOT NULL", [], |r| {
                    r.get(0)
                })?;
            if !exists {
                // Two nodes starting at once may both get here: the loser's unique violation on
                // the catalogue means the table is there.
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS tramy_schema (version BIGINT NOT NULL, applied_at TEXT NOT NULL)",
                )
                .or_else(|e| if e.is_unique_violation() { Ok(()) } else { Err(e) })?;
            }
            conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM tramy_schema",
                [],
                |r| r.get(0),
            )
        }
    }
}

/// Runs the pending migrations on the writer's connection.
pub(super) fn to_latest(conn: &mut Connection) -> Result<(), super::IndexError> {
    if let Some(sqlite) = conn.as_sqlite() {
        return Ok(migrations().to_latest(sqlite)?);
    }
    conn.execute_batch("BEGIN")?;
    let applied = postgres_to_latest(conn);
    conn.execute_batch(if applied.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    })?;
    applied
}

/// Applies the pending PostgreSQL migrations inside the caller's transaction, holding a lock that
/// makes a second node starting at the same time wait, then find nothing left to do.
fn postgres_to_latest(conn: &Connection) -> Result<(), super::IndexError> {
    conn.query_row("SELECT pg_advisory_xact_lock(?1)", [MIGRATION_LOCK], |_| {
        Ok(())
    })?;
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(super::IndexError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (n, sql) in POSTGRES_MIGRATIONS.iter().enumerate().skip(found) {
        conn.execute_batch(sql)?;
        conn.execute(
            "INSERT INTO tramy_schema (version, applied_at) VALUES (?1, ?2)",
            super::db::params![n + 1, super::times::now()],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert_eq!(migrations().validate(), Ok(()));
    }

    #[test]
    fn every_migration_has_its_postgresql_twin() {
        assert_eq!(POSTGRES_MIGRATIONS.len(), MIGRATIONS.len());
    }

    #[test]
    fn a_fresh_index_reaches_the_latest_version() {
        let mut conn = Connection::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        to_latest(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_index_is_refused() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(migrations().to_latest(&mut conn).is_err());
    }
}
