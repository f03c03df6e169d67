//! The sender's DIMSE path (issue #10 item 3): instances go to a DIMSE peer by C-STORE on one
//! association per batch, and a study's sent instances are confirmed by Storage Commitment
//! (N-ACTION, the peer's N-EVENT-REPORT) where the peer supports it; where it does not, the
//! C-STORE success stands, as a plain DICOMweb peer's STOW-RS answer does.

use super::outbox::{DeliveryRecord, OutboxItem, OutboxState, SentInstance};
use super::peer::PeerEndpoint;
use super::sender::{later, PeerSender};
use crate::dicom::uid::SopInstanceUid;
use crate::dimse::peer_scu::{self, DimsePeer, PeerError, SendOutcome};
use crate::store::{IndexError, StoredInstance};

impl PeerSender {
    fn dimse_peer(&self) -> Option<DimsePeer> {
        match &self.peer.endpoint {
            PeerEndpoint::Dimse {
                ae_title,
                host,
                port,
            } => Some(DimsePeer {
                ae_title: ae_title.clone(),
                host: host.clone(),
                port: *port,
                calling_ae_title: self.settings.calling_ae_title.clone(),
            }),
            PeerEndpoint::DicomWeb { .. } => None,
        }
    }

    /// Sends `batch` by C-STORE; each instance ends sent (its commitment is asked for with the
    /// study's), refused (dead after `max_refusals`), or not sent with the reason.
    pub(super) async fn send_dimse(&self, batch: Vec<OutboxItem>) -> Result<(), IndexError> {
        let Some(peer) = self.dimse_peer() else {
            return Ok(());
        };
        let mut instances: Vec<StoredInstance> = Vec::with_capacity(batch.len());
        for item in &batch {
            let stored = match SopInstanceUid::new(&item.sop_instance_uid) {
                Ok(uid) => self.archive.index().instance(&self.who, &uid).await?,
                Err(_) => None,
            };
            match stored {
                Some(s) if s.sha256 == item.sha256 => instances.push(s),
                _ => {
                    let why = "no longer stored here as queued".to_string();
                    self.archive
                        .index()
                        .outbox_failed(
                            &self.who,
                            vec![item.id],
                            why,
                            later(std::time::Duration::ZERO),
                            true,
                        )
                        .await?;
                }
            }
        }
        if instances.is_empty() {
            return Ok(());
        }
        let sent =
            match peer_scu::store_instances(&self.archive, &self.who, &peer, &instances).await {
                Ok(sent) => sent,
                Err(e) => return self.dimse_failed(&batch, &e).await,
            };
        let mut ok = Vec::new();
        for (uid, outcome) in sent {
            let Some(item) = batch.iter().find(|i| i.sop_instance_uid == uid) else {
                continue;
            };
            let refusal = match outcome {
                SendOutcome::Stored | SendOutcome::Warning(_) => {
                    ok.push(item.id);
                    continue;
                }
                SendOutcome::Refused(status) => format!(
                    "peer {} refused it: C-STORE status {status:04X}H",
                    self.peer.name
                ),
                SendOutcome::NotSent(reason) => {
                    format!("not sent to peer {}: {reason}", self.peer.name)
                }
            };
            self.refused(item, refusal).await?;
        }
        self.delivered(ok, OutboxState::Sent).await
    }

    async fn dimse_failed(&self, batch: &[OutboxItem], e: &PeerError) -> Result<(), IndexError> {
        // A rejected association or unsupported classes are the peer's configuration; the
        // network and timeouts are transient. Either way it is retried with a back-off; only
        // refusals of instances dead-letter them.
        let attempts = batch.iter().map(|i| i.attempts).max().unwrap_or(0);
        tracing::warn!(peer = %self.peer.name, error = %e, instances = batch.len(), "sending to DIMSE peer failed");
        self.archive
            .index()
            .outbox_failed(
                &self.who,
                batch.iter().map(|i| i.id).collect(),
                e.to_string(),
                self.backoff(attempts),
                false,
            )
            .await
    }

    /// Asks the peer to commit to the study's sent instances; records what it committed
    /// (`stored`) and what it did not (sent again). A peer without Storage Commitment: the
    /// C-STORE successes stand.
    pub(super) async fn commit_dimse(
        &self,
        mut record: DeliveryRecord,
        instances: &[SentInstance],
    ) -> Result<(), IndexError> {
        let Some(peer) = self.dimse_peer() else {
            return Ok(());
        };
        let refs: Vec<(String, String)> = instances
            .iter()
            .map(|i| (i.sop_class_uid.clone(), i.sop_instance_uid.clone()))
            .collect();
        match peer_scu::request_commitment(&peer, &refs, self.settings.commitment_wait).await {
            Ok(result) => {
                record.state = if result.failed.is_empty() {
                    "committed".into()
                } else {
                    "partial".into()
                };
                record.detail =
                    format!("Storage Commitment transaction {}", result.transaction_uid);
                for i in instances {
                    let outcome = if result.committed.contains(&i.sop_instance_uid) {
                        (i.id, OutboxState::Stored, String::new())
                    } else {
                        let reason = result
                            .failed
                            .iter()
                            .find(|(u, _)| *u == i.sop_instance_uid)
                            .map(|(_, r)| {
                                format!(
                                    "peer {} did not commit it: Failure Reason {r:04X}H",
                                    self.peer.name
                                )
                            })
                            .unwrap_or_else(|| {
                                format!("peer {} did not report on it", self.peer.name)
                            });
                        (i.id, OutboxState::Failed, reason)
                    };
                    record.outcomes.push(outcome);
                }
            }
            Err(PeerError::NotSupported { .. }) => {
                record.state = "stored".into();
                record.detail =
                    "the peer offers no Storage Commitment: its C-STORE successes stand".into();
                record.outcomes = instances
                    .iter()
                    .map(|i| (i.id, OutboxState::Stored, String::new()))
                    .collect();
            }
            Err(e) => {
                // Left as sent; asked again in a later round.
                tracing::warn!(peer = %self.peer.name, error = %e, "Storage Commitment not answered; will ask again");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                return Ok(());
            }
        }
        self.audit(&record).await;
        self.archive
            .index()
            .record_delivery(&self.who, record)
            .await
    }
}
