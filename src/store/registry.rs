//! The registry's rows (migration 002): facilities, AE titles and API tokens, behind `Index`
//! methods that take the caller. The rules (valid codes and AE titles, which roles need a
//! facility) are in `crate::registry`; each write checks them, then its references, inside the
//! writer's transaction, so a refused request writes nothing.

use super::db::{params, Connection, OptionalExtension};
use chrono::{DateTime, Utc};

use super::index::{Index, IndexError};
use crate::access::{Action, Principal};
use crate::auth::api_token::{IssuedToken, StoredToken};
use crate::auth::Role;
use crate::registry::{
    check_host, normalise_ae_title, ApplicationEntity, Facility, FacilityKind, NewFacility,
    NewToken, RegistryError, TokenRecord,
};

use super::times::{now, text as time};

/// Reads a stored RFC 3339 time; a malformed one is a conversion failure of column `col`.
fn parse_time(col: usize, text: Option<String>) -> super::db::Result<Option<DateTime<Utc>>> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| super::db::DbError::Conversion {
                column: col,
                source: e.into(),
            })
    })
    .transpose()
}

pub(super) fn facility_exists(c: &Connection, code: &str) -> super::db::Result<bool> {
    Ok(
        c.prepare_cached("SELECT 1 FROM facilities WHERE code = ?1")?
            .query_row([code], |_| Ok(()))
            .optional()?
            .is_some(),
    )
}

fn insert_facility(
    c: &Connection,
    f: &NewFacility,
    created_at: &str,
) -> super::db::Result<Result<(), RegistryError>> {
    if facility_exists(c, &f.code)? {
        return Ok(Err(RegistryError::DuplicateFacility(f.code.clone())));
    }
    if let Some(parent) = &f.parent {
        if !facility_exists(c, parent)? {
            return Ok(Err(RegistryError::UnknownFacility(parent.clone())));
        }
    }
    c.prepare_cached(
        "INSERT INTO facilities (code, name, kind, parent, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        f.code,
        f.name,
        f.kind.as_str(),
        f.parent,
        created_at
    ])?;
    Ok(Ok(()))
}

fn insert_token(
    c: &Connection,
    token: &IssuedToken,
    t: &NewToken,
) -> super::db::Result<Result<(), RegistryError>> {
    if let Some(code) = &t.facility {
        if !facility_exists(c, code)? {
            return Ok(Err(RegistryError::UnknownFacility(code.clone())));
        }
    }
    c.prepare_cached(
        "INSERT INTO api_tokens (id, hash, facility, role, name, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        token.id,
        token.hash,
        t.facility,
        t.role.as_str(),
        t.name,
        now(),
        t.expires_at.map(time)
    ])?;
    Ok(Ok(()))
}

fn is_empty(c: &Connection) -> super::db::Result<bool> {
    c.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM facilities) AND NOT EXISTS (SELECT 1 FROM api_tokens)",
        [],
        |r| r.get(0),
    )
}

const TOKEN_COLUMNS: &str =
    "id, facility, role, name, created_at, expires_at, last_used_at, revoked_at";

fn token_from_row(r: &super::db::Row<'_>) -> super::db::Result<TokenRecord> {
    let role: String = r.get(2)?;
    let role = role
        .parse::<Role>()
        .map_err(|e| super::db::DbError::Conversion {
            column: 2,
            source: e.into(),
        })?;
    let created: String = r.get(4)?;
    Ok(TokenRecord {
        id: r.get(0)?,
        facility: r.get(1)?,
        role,
        name: r.get(3)?,
        created_at: parse_time(4, Some(created))?.unwrap_or_default(),
        expires_at: parse_time(5, r.get(5)?)?,
        last_used_at: parse_time(6, r.get(6)?)?,
        revoked_at: parse_time(7, r.get(7)?)?,
    })
}

fn facility_from_row(r: &super::db::Row<'_>) -> super::db::Result<Facility> {
    let kind: String = r.get(2)?;
    let kind = kind
        .parse::<FacilityKind>()
        .map_err(|e| super::db::DbError::Conversion {
            column: 2,
            source: e.into(),
        })?;
    Ok(Facility {
        code: r.get(0)?,
        name: r.get(1)?,
        kind,
        parent: r.get(3)?,
        created_at: r.get(4)?,
    })
}

/// A facility's admin acts on its own facility's registrations only; a system-wide caller
/// (superadmin, tramy's own command line) on any.
fn within_own_facility(who: &Principal, facility: Option<&str>) -> Result<(), IndexError> {
    if who.is_system_wide() || (facility.is_some() && who.facility() == facility) {
        Ok(())
    } else {
        Err(IndexError::Forbidden {
            subject: who.subject().to_string(),
            action: Action::Administer,
        })
    }
}

/// The facility a listing is narrowed to: `None` for a system-wide caller.
fn listing_scope(who: &Principal) -> Option<String> {
    (!who.is_system_wide()).then(|| who.facility().unwrap_or_default().to_string())
}

impl Index {
    /// Registers a facility. Its parent must be registered; a taken code is refused.
    pub async fn add_facility(
        &self,
        who: &Principal,
        facility: NewFacility,
    ) -> Result<Facility, RegistryError> {
        self.admit(who, Action::Administer)?;
        within_own_facility(who, None)?;
        facility.check()?;
        let registered = Facility {
            code: facility.code.clone(),
            name: facility.name.clone(),
            kind: facility.kind,
            parent: facility.parent.clone(),
            created_at: now(),
        };
        let created_at = registered.created_at.clone();
        self.write(move |c| insert_facility(c, &facility, &created_at))
            .await??;
        Ok(registered)
    }

    /// Whether facility `code` is registered: what a caller asking for its public key needs to
    /// know (a primary-key lookup on the calling thread).
    pub fn facility_registered(&self, who: &Principal, code: &str) -> Result<bool, IndexError> {
        self.admit(who, Action::Authenticate)?;
        self.read_now(|c| Ok(facility_exists(c, code)?))
    }

    /// Every facility, by code.
    pub async fn facilities(&self, who: &Principal) -> Result<Vec<Facility>, IndexError> {
        self.admit(who, Action::Administer)?;
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT code, name, kind, parent, created_at FROM facilities ORDER BY code",
            )?
            .query_map([], facility_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Registers an AE title (padding removed) for a registered facility.
    pub async fn add_application_entity(
        &self,
        who: &Principal,
        ae_title: &str,
        facility: &str,
        host: Option<&str>,
    ) -> Result<ApplicationEntity, RegistryError> {
        self.add_application_entity_at(who, ae_title, facility, host, None)
            .await
    }

    /// [`Index::add_application_entity`] with the port it listens on (a port needs a host).
    pub async fn add_application_entity_at(
        &self,
        who: &Principal,
        ae_title: &str,
        facility: &str,
        host: Option<&str>,
        port: Option<u16>,
    ) -> Result<ApplicationEntity, RegistryError> {
        self.admit(who, Action::Administer)?;
        within_own_facility(who, Some(facility))?;
        let ae = ApplicationEntity {
            ae_title: normalise_ae_title(ae_title)?,
            facility: facility.to_owned(),
            host: host.map(str::to_owned),
            port,
            created_at: now(),
        };
        crate::registry::check_facility_code(facility)?;
        if let Some(host) = host {
            check_host(host)?;
        }
        if port == Some(0) || (port.is_some() && host.is_none()) {
            return Err(RegistryError::Invalid(
                "a port must be 1-65535 and comes with a host (--host)".into(),
            ));
        }
        let row = ae.clone();
        self.write(move |c| {
            if !facility_exists(c, &row.facility)? {
                return Ok(Err(RegistryError::UnknownFacility(row.facility)));
            }
            let owner: Option<String> = c
                .query_row(
                    "SELECT facility FROM application_entities WHERE ae_title = ?1",
                    [&row.ae_title],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(facility) = owner {
                return Ok(Err(RegistryError::DuplicateAeTitle {
                    ae_title: row.ae_title,
                    facility,
                }));
            }
            c.execute(
                "INSERT INTO application_entities (ae_title, facility, host, port, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    row.ae_title,
                    row.facility,
                    row.host,
                    row.port,
                    row.created_at
                ],
            )?;
            Ok(Ok(()))
        })
        .await??;
        Ok(ae)
    }

    /// Unregisters an AE title of the caller's facility (a superadmin: any): from now on it
    /// may not open an association. An AE title the caller cannot see is unknown.
    pub async fn remove_application_entity(
        &self,
        who: &Principal,
        ae_title: &str,
    ) -> Result<ApplicationEntity, RegistryError> {
        self.admit(who, Action::Administer)?;
        let ae_title = normalise_ae_title(ae_title)?;
        let scope = listing_scope(who);
        self.write(move |c| {
            let found = c
                .query_row(
                    "SELECT ae_title, facility, host, created_at, port FROM application_entities \
                     WHERE ae_title = ?1 AND (CAST(?2 AS TEXT) IS NULL OR facility = ?2)",
                    params![ae_title, scope],
                    |r| {
                        Ok(ApplicationEntity {
                            ae_title: r.get(0)?,
                            facility: r.get(1)?,
                            host: r.get(2)?,
                            port: r.get(4)?,
                            created_at: r.get(3)?,
                        })
                    },
                )
                .optional()?;
            let Some(found) = found else {
                return Ok(Err(RegistryError::UnknownAeTitle(ae_title)));
            };
            c.execute(
                "DELETE FROM application_entities WHERE ae_title = ?1",
                [&found.ae_title],
            )?;
            Ok(Ok(found))
        })
        .await?
    }

    /// Every registered AE title, by title.
    pub async fn application_entities(
        &self,
        who: &Principal,
    ) -> Result<Vec<ApplicationEntity>, IndexError> {
        self.admit(who, Action::Administer)?;
        let scope = listing_scope(who);
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT ae_title, facility, host, created_at, port FROM application_entities \
                 WHERE CAST(?1 AS TEXT) IS NULL OR facility = ?1 ORDER BY ae_title",
            )?
            .query_map([scope], |r| {
                Ok(ApplicationEntity {
                    ae_title: r.get(0)?,
                    facility: r.get(1)?,
                    host: r.get(2)?,
                    port: r.get(4)?,
                    created_at: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// The registration of `ae_title` (as normalised), if any: who a calling AE title is. A
    /// primary-key lookup on the calling thread, once per association.
    pub fn application_entity_now(
        &self,
        who: &Principal,
        ae_title: &str,
    ) -> Result<Option<ApplicationEntity>, IndexError> {
        self.admit(who, Action::Authenticate)?;
        self.read_now(|c| {
            Ok(c.prepare_cached(
                "SELECT ae_title, facility, host, created_at, port FROM application_entities \
                 WHERE ae_title = ?1",
            )?
            .query_row([ae_title], |r| {
                Ok(ApplicationEntity {
                    ae_title: r.get(0)?,
                    facility: r.get(1)?,
                    host: r.get(2)?,
                    port: r.get(4)?,
                    created_at: r.get(3)?,
                })
            })
            .optional()?)
        })
    }

    /// Makes an API token: stores its hash and returns it, its text to be shown once.
    pub async fn create_token(
        &self,
        who: &Principal,
        token: NewToken,
    ) -> Result<IssuedToken, RegistryError> {
        self.admit(who, Action::Administer)?;
        within_own_facility(who, token.facility.as_deref())?;
        token.check()?;
        let issued = crate::registry::new_token()?;
        let stored = issued.clone();
        self.write(move |c| insert_token(c, &stored, &token))
            .await??;
        Ok(issued)
    }

    /// Every API token's record (never the token or its hash), oldest first.
    pub async fn tokens(&self, who: &Principal) -> Result<Vec<TokenRecord>, IndexError> {
        self.admit(who, Action::Administer)?;
        let scope = listing_scope(who);
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE CAST(?1 AS TEXT) IS NULL OR facility = ?1 \
                 ORDER BY created_at, id"
            ))?
            .query_map([scope], token_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Revokes a token from now on. Revoking a revoked token changes nothing (it keeps its first
    /// revocation time); an unknown id is an error.
    pub async fn revoke_token(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<TokenRecord, RegistryError> {
        self.admit(who, Action::Administer)?;
        let id = id.trim().to_owned();
        let scope = listing_scope(who);
        self.write(move |c| {
            c.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL \
                 AND (CAST(?3 AS TEXT) IS NULL OR facility = ?3)",
                params![id, now(), scope],
            )?;
            let record = c
                .query_row(
                    &format!(
                        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1 \
                         AND (CAST(?2 AS TEXT) IS NULL OR facility = ?2)"
                    ),
                    params![id, scope],
                    token_from_row,
                )
                .optional()?;
            Ok(record.ok_or(RegistryError::UnknownToken(id)))
        })
        .await?
    }

    /// The stored record of the token with this id, to verify a presented token against, and
    /// when it was last used.
    pub async fn stored_token(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<Option<(StoredToken, Option<DateTime<Utc>>)>, IndexError> {
        self.admit(who, Action::Authenticate)?;
        // A primary-key lookup for every request: on the calling thread, not a blocking-pool
        // hand-off that would cost more than the query (see `read_now`).
        self.read_now(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS}, hash FROM api_tokens WHERE id = ?1"
            ))?
            .query_row([id], |r| {
                let record = token_from_row(r)?;
                let stored = StoredToken {
                    id: record.id.clone(),
                    hash: r.get(8)?,
                    facility: record.facility.clone(),
                    role: record.role,
                    expires_at: record.expires_at,
                    revoked_at: record.revoked_at,
                };
                Ok((stored, record.last_used_at))
            })
            .optional()?)
        })
    }

    /// Notes that the token `id` was accepted at `at`.
    pub async fn token_used(
        &self,
        who: &Principal,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), IndexError> {
        self.admit(who, Action::Authenticate)?;
        let id = id.to_owned();
        self.write(move |c| {
            c.prepare_cached("UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1")?
                .execute(params![id, time(at)])?;
            Ok(())
        })
        .await
    }

    /// Whether no facility and no token is registered (a first start).
    pub async fn registry_is_empty(&self, who: &Principal) -> Result<bool, IndexError> {
        self.admit(who, Action::Administer)?;
        self.read(|c| Ok(is_empty(c)?)).await
    }

    /// On an empty registry only, in one transaction: registers `facility` and stores `token`.
    /// Returns whether it did (false: something was registered meanwhile).
    pub async fn bootstrap_registry(
        &self,
        who: &Principal,
        facility: NewFacility,
        token: Option<(IssuedToken, NewToken)>,
    ) -> Result<bool, RegistryError> {
        self.admit(who, Action::Administer)?;
        facility.check()?;
        if let Some((_, t)) = &token {
            t.check()?;
        }
        self.write(move |c| {
            if !is_empty(c)? {
                return Ok(Ok(false));
            }
            if let Err(e) = insert_facility(c, &facility, &now())? {
                return Ok(Err(e));
            }
            if let Some((issued, t)) = &token {
                if let Err(e) = insert_token(c, issued, t)? {
                    // Undo the facility: the savepoint commits whatever the closure wrote.
                    c.execute("DELETE FROM facilities WHERE code = ?1", [&facility.code])?;
                    return Ok(Err(e));
                }
            }
            Ok(Ok(true))
        })
        .await?
    }
}
