//! The index schema as numbered migrations (`rusqlite_migration`, which keeps the version in
//! SQLite's `user_version`). `Index::open` runs the pending ones in one transaction before
//! anything else touches the index, and refuses a data folder whose version is newer than this
//! tramy knows (no silent downgrade).
//!
//! The rule: a migration that has shipped is never edited. A schema change is a new file
//! `migrations/NNN_what.sql` appended to `MIGRATIONS`; `tests/upgrade.rs` opens a data folder
//! written before migrations existed and checks that it reaches [`SCHEMA_VERSION`] intact.

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

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
];

/// The schema version this tramy writes: the number of migrations.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

fn migrations() -> Migrations<'static> {
    Migrations::from_slice(MIGRATIONS)
}

/// The schema version of the index on `conn` (0: written before migrations, or new).
pub(super) fn version(conn: &Connection) -> rusqlite::Result<usize> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Runs the pending migrations on the writer's connection.
pub(super) fn to_latest(conn: &mut Connection) -> Result<(), rusqlite_migration::Error> {
    migrations().to_latest(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert_eq!(migrations().validate(), Ok(()));
    }

    #[test]
    fn a_fresh_index_reaches_the_latest_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        to_latest(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_index_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(to_latest(&mut conn).is_err());
    }
}
