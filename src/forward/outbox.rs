//! The outbox's domain types (issue #10 item 2): one item per instance and destination, its
//! state, and what a study's delivery to a destination looks like. The rows are in
//! `store/outbox.rs`.

use serde::Serialize;

/// Where an instance stands on its way to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutboxState {
    /// Waiting to be sent.
    Queued,
    /// The peer accepted the bytes (HTTP 200 or C-STORE success) and has not confirmed yet.
    Sent,
    /// The peer said it stored them (the STOW-RS response, Storage Commitment) without a signed
    /// receipt.
    Stored,
    /// The peer's signed receipt confirms the SHA-256.
    Verified,
    /// The last attempt failed; it is tried again after a back-off.
    Failed,
    /// Given up (a permanent refusal); retried only by hand.
    Dead,
}

impl OutboxState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::Sent => "sent",
            OutboxState::Stored => "stored",
            OutboxState::Verified => "verified",
            OutboxState::Failed => "failed",
            OutboxState::Dead => "dead",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<OutboxState> {
        use OutboxState::*;
        [Queued, Sent, Stored, Verified, Failed, Dead]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// One instance due to be sent to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// The outbox row.
    pub id: i64,
    /// The destination.
    pub peer: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SHA-256 (hex) of the data set as stored.
    pub sha256: String,
    /// Size of the stored object.
    pub size_bytes: i64,
    /// Outbox priority (higher first).
    pub priority: i64,
    /// Attempts so far.
    pub attempts: i64,
    /// The facility it belongs to.
    pub facility: String,
}

/// An instance of a study whose sending is finished, for its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentInstance {
    /// The outbox row.
    pub id: i64,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SHA-256 (hex) of the data set.
    pub sha256: String,
    /// Size of the stored object.
    pub size_bytes: i64,
    /// The facility it belongs to.
    pub facility: String,
}

/// What a delivery's manifest and answer were, to be recorded with the instances they cover.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// The manifest's id.
    pub id: String,
    /// The destination.
    pub peer: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// The sending facility.
    pub facility: String,
    /// The signed manifest (compact JWS).
    pub manifest_jws: String,
    /// Its digest.
    pub manifest_sha256: String,
    /// The state the delivery ended in (`verified`, `partial`, `stored`, `rejected`, `invalid_receipt`).
    pub state: String,
    /// The receipt, when there is one.
    pub receipt_jws: Option<String>,
    /// What went wrong, if anything.
    pub detail: String,
    /// Each covered outbox row and the state it ends in, with the reason for a failure.
    pub outcomes: Vec<(i64, OutboxState, String)>,
    /// When a failed instance is sent again (RFC 3339).
    pub retry_at: String,
    /// Failures after which an instance is dead-lettered instead.
    pub max_attempts: i64,
}

/// Counts of a study's instances for one destination, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StateCounts {
    /// Waiting to be sent.
    pub queued: i64,
    /// Sent, not yet confirmed.
    pub sent: i64,
    /// Confirmed stored without a signed receipt.
    pub stored: i64,
    /// Confirmed by a signed receipt.
    pub verified: i64,
    /// Failed, to be retried.
    pub failed: i64,
    /// Given up.
    pub dead: i64,
}

/// One step of a delivery's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TimelineStep {
    /// `queued`, `sent`, `stored` or `verified`.
    pub state: String,
    /// When the first instance reached it (RFC 3339).
    pub first: String,
    /// When the last instance reached it.
    pub last: String,
}

/// A signed manifest sent for the study and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ManifestRecord {
    /// The manifest's id.
    pub id: String,
    /// Instances it lists.
    pub instances: i64,
    /// `sent`, `verified`, `partial`, `stored`, `rejected` or `invalid_receipt`.
    pub state: String,
    /// What went wrong, if anything.
    pub detail: String,
    /// When it was sent.
    pub created_at: String,
    /// When it was answered.
    pub answered_at: Option<String>,
    /// The signed manifest (compact JWS).
    pub manifest: String,
    /// The peer's signed receipt (compact JWS), when there is one.
    pub receipt: Option<String>,
}

/// A study's delivery to one destination (`GET /api/v1/studies/{study}/deliveries`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DestinationDelivery {
    /// The peer's name.
    pub peer: String,
    /// The least advanced state of its instances (`dead` or `failed` first when any).
    pub state: OutboxState,
    /// Its instances by state.
    pub instances: StateCounts,
    /// When its instances were queued, sent, stored and verified.
    pub timeline: Vec<TimelineStep>,
    /// The last error, if any instance failed.
    pub last_error: Option<String>,
    /// The manifests sent and their receipts, oldest first.
    pub manifests: Vec<ManifestRecord>,
}

impl StateCounts {
    /// Adds `n` instances in `state`.
    pub fn add(&mut self, state: OutboxState, n: i64) {
        match state {
            OutboxState::Queued => self.queued += n,
            OutboxState::Sent => self.sent += n,
            OutboxState::Stored => self.stored += n,
            OutboxState::Verified => self.verified += n,
            OutboxState::Failed => self.failed += n,
            OutboxState::Dead => self.dead += n,
        }
    }

    /// The state that sums the destination up: a problem first, else the least advanced.
    pub fn summary(&self) -> OutboxState {
        use OutboxState::*;
        let ordered = [
            (Dead, self.dead),
            (Failed, self.failed),
            (Queued, self.queued),
            (Sent, self.sent),
            (Stored, self.stored),
        ];
        ordered
            .into_iter()
            .find(|(_, n)| *n > 0)
            .map(|(s, _)| s)
            .unwrap_or(Verified)
    }
}
