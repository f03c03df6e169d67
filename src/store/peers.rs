//! Peers added through the API, other facilities' pinned keys, manifests received from peers,
//! and the presence check peers make before sending (issue #10).

use super::db::{params, OptionalExtension};

use super::index::{Index, IndexError};
use super::times::now;
use crate::access::{Action, Principal};
use crate::forward::manifest::ManifestLink;
use crate::forward::peer::{PeerError, PeerSpec};

/// What pinning a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPin {
    /// The key was pinned before: trusted.
    Known,
    /// First key seen for the facility: pinned now.
    PinnedNow,
    /// The facility has other keys pinned, not this one: not trusted.
    Conflict,
}

/// What a peer server sent this one, as recorded with the receipt signed for it.
#[derive(Debug, Clone)]
pub struct ReceivedDelivery {
    /// The manifest's id.
    pub id: String,
    /// The sending facility.
    pub sender_facility: String,
    /// The destination facility (this server's).
    pub destination: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// SHA-256 of the manifest's JWS.
    pub manifest_sha256: String,
    /// Instances confirmed.
    pub stored: i64,
    /// Instances not confirmed.
    pub failed: i64,
    /// The signed receipt.
    pub receipt_jws: String,
}

impl Index {
    /// Peers added through the API, by name.
    pub async fn api_peers(&self, who: &Principal) -> Result<Vec<PeerSpec>, IndexError> {
        self.admit(who, Action::Administer)?;
        self.read(|c| {
            Ok(c.prepare(
                "SELECT name, kind, dicomweb_url, dimse_ae_title, dimse_host, dimse_port, token_file, facility, \
                 max_bytes_per_sec, windows, oidc FROM peers ORDER BY name",
            )?
            .query_map([], |r| {
                let dimse = match (r.get::<_, Option<String>>(3)?, r.get::<_, Option<String>>(4)?, r.get::<_, Option<i64>>(5)?) {
                    (Some(ae), Some(host), Some(port)) => Some(format!("{ae}@{host}:{port}")),
                    _ => None,
                };
                let windows: String = r.get(9)?;
                Ok(PeerSpec {
                    name: r.get(0)?,
                    kind: Some(r.get(1)?),
                    dicomweb_url: r.get(2)?,
                    dimse,
                    token_file: r.get(6)?,
                    facility: r.get(7)?,
                    max_bytes_per_sec: r.get::<_, Option<i64>>(8)?.map(|v| v.max(1) as u64),
                    windows: windows.split(',').filter(|w| !w.is_empty()).map(str::to_string).collect(),
                    oidc: r
                        .get::<_, Option<String>>(10)?
                        .and_then(|j| serde_json::from_str(&j).ok()),
                })
            })?
            .collect::<super::db::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Adds a peer; refused when the name is taken.
    pub async fn add_peer(
        &self,
        who: &Principal,
        spec: PeerSpec,
    ) -> Result<Result<(), PeerError>, IndexError> {
        self.admit(who, Action::Administer)?;
        let peer = match spec.to_peer(false) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let by = who.subject().to_string();
        self.write(move |c| {
            let taken: bool = c.query_row("SELECT count(*) FROM peers WHERE name = ?1", [&peer.name], |r| r.get::<_, i64>(0))? > 0;
            if taken {
                return Ok(Err(PeerError::Invalid(format!("a peer named {} exists: delete it first or choose another name", peer.name))));
            }
            let (url, ae, host, port) = match &peer.endpoint {
                crate::forward::PeerEndpoint::DicomWeb { url } => (Some(url.clone()), None, None, None),
                crate::forward::PeerEndpoint::Dimse { ae_title, host, port } => {
                    (None, Some(ae_title.clone()), Some(host.clone()), Some(i64::from(*port)))
                }
            };
            c.execute(
                "INSERT INTO peers (name, kind, dicomweb_url, dimse_ae_title, dimse_host, dimse_port, token_file, \
                 facility, max_bytes_per_sec, windows, created_by, created_at, oidc) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    peer.name,
                    peer.kind.as_str(),
                    url,
                    ae,
                    host,
                    port,
                    peer.token_file.as_ref().map(|p| p.display().to_string()),
                    peer.facility,
                    peer.max_bytes_per_sec.map(|v| v.min(i64::MAX as u64) as i64),
                    peer.windows.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                    by,
                    now(),
                    peer.oidc.as_ref().and_then(|o| serde_json::to_string(o).ok())
                ],
            )?;
            Ok(Ok(()))
        })
        .await
    }

    /// Removes a peer added through the API; whether there was one. What is queued for it stays
    /// queued (counted as pending) until a peer of that name exists again.
    pub async fn remove_peer(&self, who: &Principal, name: &str) -> Result<bool, IndexError> {
        self.admit(who, Action::Administer)?;
        let name = name.to_string();
        self.write(move |c| Ok(c.execute("DELETE FROM peers WHERE name = ?1", [name])? > 0))
            .await
    }

    /// Pins `jwk` (kid `kid`) as a key of `facility` if it has none yet; says whether it is trusted.
    pub async fn pin_remote_key(
        &self,
        who: &Principal,
        facility: &str,
        kid: &str,
        jwk: &str,
    ) -> Result<KeyPin, IndexError> {
        self.admit(who, Action::Deliver)?;
        let (facility, kid, jwk) = (facility.to_string(), kid.to_string(), jwk.to_string());
        self.write(move |c| {
            let known: Option<String> = c
                .query_row(
                    "SELECT jwk FROM remote_keys WHERE facility = ?1 AND kid = ?2",
                    params![facility, kid],
                    |r| r.get(0),
                )
                .optional()?;
            if known.is_some() {
                return Ok(KeyPin::Known);
            }
            let others: i64 = c.query_row(
                "SELECT count(*) FROM remote_keys WHERE facility = ?1",
                [&facility],
                |r| r.get(0),
            )?;
            if others > 0 {
                return Ok(KeyPin::Conflict);
            }
            c.execute(
                "INSERT INTO remote_keys (facility, kid, jwk, first_seen) VALUES (?1, ?2, ?3, ?4)",
                params![facility, kid, jwk, now()],
            )?;
            Ok(KeyPin::PinnedNow)
        })
        .await
    }

    /// Records a manifest received and the receipt signed for it (again for a manifest sent twice).
    pub async fn record_received_delivery(
        &self,
        who: &Principal,
        d: ReceivedDelivery,
    ) -> Result<(), IndexError> {
        self.admit(who, Action::Deliver)?;
        let by = who.subject().to_string();
        self.write(move |c| {
            c.execute(
                "INSERT INTO received_deliveries (id, sender_facility, destination, study_instance_uid, \
                 manifest_sha256, stored, failed, receipt_jws, received_by, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (id) DO UPDATE SET sender_facility = excluded.sender_facility, \
                 destination = excluded.destination, study_instance_uid = excluded.study_instance_uid, \
                 manifest_sha256 = excluded.manifest_sha256, stored = excluded.stored, \
                 failed = excluded.failed, receipt_jws = excluded.receipt_jws, \
                 received_by = excluded.received_by, received_at = excluded.received_at",
                params![
                    d.id,
                    d.sender_facility,
                    d.destination,
                    d.study_instance_uid,
                    d.manifest_sha256,
                    d.stored,
                    d.failed,
                    d.receipt_jws,
                    by,
                    now()
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// For each (SOP Instance UID, SHA-256): whether an instance with those bytes is filed. A
    /// peer asks before sending, so nothing it sent before is sent again.
    pub async fn instances_present(
        &self,
        who: &Principal,
        instances: Vec<(String, String)>,
    ) -> Result<Vec<bool>, IndexError> {
        self.admit(who, Action::Deliver)?;
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT sha256 FROM instances WHERE sop_instance_uid = ?1")?;
            let mut out = Vec::with_capacity(instances.len());
            for (sop, sha) in &instances {
                let stored: Option<String> = stmt.query_row([sop], |r| r.get(0)).optional()?;
                out.push(stored.is_some_and(|s| s.eq_ignore_ascii_case(sha)));
            }
            Ok(out)
        })
        .await
    }

    /// The live patient links that concern `study`'s patient (as the provisional or the
    /// identified side), to travel in the study's next manifest.
    pub async fn study_patient_links(
        &self,
        who: &Principal,
        study: &str,
    ) -> Result<Vec<ManifestLink>, IndexError> {
        self.admit(who, Action::Integrity)?;
        let study = study.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT pst.study_instance_uid, ip.patient_id, ip.issuer_of_patient_id FROM patient_links l \
                 JOIN patients ip ON ip.id = l.patient_fk JOIN studies pst ON pst.patient_fk = l.provisional_fk \
                 WHERE l.unlinked_at IS NULL AND ( \
                   l.provisional_fk = (SELECT patient_fk FROM studies WHERE study_instance_uid = ?1) \
                   OR l.patient_fk = (SELECT patient_fk FROM studies WHERE study_instance_uid = ?1)) \
                 ORDER BY l.linked_at LIMIT 1000",
            )?
            .query_map([study], |r| {
                Ok(ManifestLink {
                    provisional_study_instance_uid: r.get(0)?,
                    patient_id: r.get(1)?,
                    issuer_of_patient_id: r.get(2)?,
                })
            })?
            .collect::<super::db::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Makes here the links a peer's manifest carries, where both patients are here and the
    /// provisional one has no live link yet; returns how many were made.
    pub async fn apply_peer_links(
        &self,
        who: &Principal,
        links: Vec<ManifestLink>,
    ) -> Result<usize, IndexError> {
        self.admit(who, Action::Deliver)?;
        let by = who.subject().to_string();
        let ids = links
            .iter()
            .map(|_| super::sharing::new_id())
            .collect::<Result<Vec<_>, _>>()?;
        self.write(move |c| {
            let mut made = 0;
            for (link, id) in links.iter().zip(ids) {
                let provisional: Option<(i64, String)> = c
                    .prepare_cached(
                        "SELECT p.id, p.patient_key FROM studies st JOIN patients p ON p.id = st.patient_fk \
                         WHERE st.study_instance_uid = ?1",
                    )?
                    .query_row([&link.provisional_study_instance_uid], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let Some((provisional, _)) = provisional.filter(|(_, k)| k.starts_with(super::sharing::PROVISIONAL_KEY_PREFIX)) else {
                    continue;
                };
                let identified: Option<i64> = c
                    .prepare_cached("SELECT id FROM patients WHERE patient_key = ?1")?
                    .query_row(
                        [super::sharing::patient_key(&crate::audit::PatientRef {
                            id: link.patient_id.clone(),
                            issuer: link.issuer_of_patient_id.clone(),
                        })],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(identified) = identified else { continue };
                let live = c
                    .prepare_cached("SELECT 1 FROM patient_links WHERE provisional_fk = ?1 AND unlinked_at IS NULL")?
                    .exists([provisional])?;
                if live {
                    continue;
                }
                c.prepare_cached(
                    "INSERT INTO patient_links (id, provisional_fk, patient_fk, linked_by, linked_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![id, provisional, identified, by, now()])?;
                made += 1;
            }
            Ok(made)
        })
        .await
    }
}
