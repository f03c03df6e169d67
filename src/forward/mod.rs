//! Sharing between servers (issue #10): peers, forwarding rules, the outbox's domain, signed
//! manifests and receipts, and the sender that works the outbox.
//!
//! Data flow: ingest queues an instance once per destination in its own commit
//! (`store/outbox.rs`); [`sender`] takes each peer's due instances in priority order, checks
//! whether the peer has them already, sends what is missing (bandwidth-limited, in its time
//! windows unless urgent), and once a study's instances are all sent, signs a [`manifest`] and
//! asks a tramy peer for its signed receipt (a plain DICOMweb peer's STOW-RS answer stands in).
//! The receiving side checks a manifest against what it stored ([`receiving`]). A clinician
//! fetches a patient's priors from a peer under the peer's grants ([`priors`]).

pub mod credential;
pub mod dicomweb_client;
pub mod dicomweb_retrieve;
pub mod jws;
pub mod manifest;
pub mod outbox;
pub mod peer;
pub mod priors;
pub mod receiving;
pub mod reconcile;
pub mod registry;
pub mod rules;
pub mod sender;
mod sender_dimse;
pub mod stats;
pub mod trust;

pub use peer::{Peer, PeerEndpoint, PeerKind, PeerSpec};
