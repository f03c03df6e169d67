//! The audit trail's hash chain: each event's hash is SHA-256 over the previous event's hash and
//! a canonical serialization of the event, so changing, inserting or removing an event changes
//! every hash after it, and `tramy audit verify` names the first event that does not hold.
//!
//! Canonical serialization, version 1 (stored with each event as `chain_version`; a change of
//! format is a new version, and events keep the version they were written in):
//!
//! ```text
//! "tramy-audit-v1\n" field(prev_hash) field(id) field(time) field(actor) field(facility)
//! field(roles) field(address) field(action) field(outcome) field(study_instance_uid)
//! field(patient_id) field(patient_issuer) field(study_facilities) field(detail)
//! ```
//!
//! where `field(Some(text))` is the UTF-8 byte length in decimal, `:`, the bytes and `,` (a
//! netstring) and `field(None)` is `~,`. `id` is its decimal digits; `roles` and
//! `study_facilities` are their names joined by `,` in the order stored (roles as the principal
//! listed them; facilities sorted); `action` and `outcome` are their API names; `time` is
//! RFC 3339 UTC with milliseconds. No floating-point numbers and no optional formatting: the
//! same event always yields the same bytes. The hash is written as 64 lower-case hex digits; the
//! first event's `prev_hash` is 64 zeros.

use sha2::{Digest, Sha256};

/// The serialization version this tramy writes.
pub const CHAIN_VERSION: i64 = 1;

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of an event that its hash covers, as stored.
#[derive(Debug, Clone, Copy)]
pub struct ChainedFields<'a> {
    /// The event's id.
    pub id: i64,
    /// RFC 3339 UTC, milliseconds.
    pub time: &'a str,
    /// The actor's subject.
    pub actor: &'a str,
    /// The acting facility's code.
    pub facility: Option<&'a str>,
    /// Role names joined by `,`.
    pub roles: &'a str,
    /// The client's address.
    pub address: Option<&'a str>,
    /// The action's name.
    pub action: &'a str,
    /// The outcome's name.
    pub outcome: &'a str,
    /// The study.
    pub study_instance_uid: Option<&'a str>,
    /// The patient's ID.
    pub patient_id: Option<&'a str>,
    /// The patient's issuer.
    pub patient_issuer: Option<&'a str>,
    /// Facility codes joined by `,`, sorted.
    pub study_facilities: &'a str,
    /// The detail.
    pub detail: &'a str,
}

fn field(hasher: &mut Sha256, value: Option<&str>) {
    match value {
        Some(text) => {
            hasher.update(text.len().to_string().as_bytes());
            hasher.update(b":");
            hasher.update(text.as_bytes());
            hasher.update(b",");
        }
        None => hasher.update(b"~,"),
    }
}

/// The hash of an event following `prev_hash`, in version [`CHAIN_VERSION`]; `None` for a
/// version this tramy does not know.
pub fn event_hash(version: i64, prev_hash: &str, e: &ChainedFields<'_>) -> Option<String> {
    if version != 1 {
        return None;
    }
    let mut h = Sha256::new();
    h.update(b"tramy-audit-v1\n");
    for value in [
        Some(prev_hash),
        Some(e.id.to_string().as_str()),
        Some(e.time),
        Some(e.actor),
        e.facility,
        Some(e.roles),
        e.address,
        Some(e.action),
        Some(e.outcome),
        e.study_instance_uid,
        e.patient_id,
        e.patient_issuer,
        Some(e.study_facilities),
        Some(e.detail),
    ] {
        field(&mut h, value);
    }
    Some(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChainedFields<'static> {
        ChainedFields {
            id: 7,
            time: "2026-11-30T04:00:00.000Z",
            actor: "token:abc",
            facility: Some("79001"),
            roles: "clinician",
            address: Some("10.0.0.1:5000"),
            action: "retrieve",
            outcome: "success",
            study_instance_uid: Some("1.2.3"),
            patient_id: Some("P1"),
            patient_issuer: Some(""),
            study_facilities: "79001",
            detail: "GET /dicomweb/studies/{study} 200",
        }
    }

    #[test]
    fn the_version_1_serialization_is_stable() {
        // Pinned: a change here would make every stored chain fail verification.
        assert_eq!(
            event_hash(1, GENESIS, &sample()).unwrap(),
            event_hash(1, GENESIS, &sample()).unwrap()
        );
        let mut h = Sha256::new();
        h.update(
            format!(
                "tramy-audit-v1\n64:{GENESIS},1:7,24:2026-11-30T04:00:00.000Z,9:token:abc,5:79001,\
                 9:clinician,13:10.0.0.1:5000,8:retrieve,7:success,5:1.2.3,2:P1,0:,5:79001,\
                 33:GET /dicomweb/studies/{{study}} 200,"
            )
            .as_bytes(),
        );
        assert_eq!(
            event_hash(1, GENESIS, &sample()).unwrap(),
            hex::encode(h.finalize())
        );
    }

    #[test]
    fn absent_and_empty_fields_hash_differently() {
        let absent = ChainedFields {
            patient_issuer: None,
            ..sample()
        };
        assert_ne!(
            event_hash(1, GENESIS, &absent),
            event_hash(1, GENESIS, &sample())
        );
    }

    #[test]
    fn moving_text_between_fields_changes_the_hash() {
        let moved = ChainedFields {
            actor: "token:abc,5:79001",
            facility: None,
            ..sample()
        };
        assert_ne!(
            event_hash(1, GENESIS, &moved),
            event_hash(1, GENESIS, &sample())
        );
    }

    #[test]
    fn an_unknown_version_is_not_guessed() {
        assert_eq!(event_hash(2, GENESIS, &sample()), None);
    }
}
