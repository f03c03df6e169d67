//! The server never panics on input. Every sample, damaged in many seeded ways (bytes flipped,
//! length fields overwritten, truncated), goes through what tramy does with a received instance:
//! parse and validate as ingest does, and, for what is accepted, everything later requests do
//! with the stored file (metadata, rendering, frame decoding, transcoding, triage
//! preprocessing). Each step may refuse; none may panic.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use common::samples;
use tramy::dicom::pixels::{self, RenderOptions, RenderedFormat};
use tramy::dicom::{InstanceAttributes, ReceivedInstance};

/// xorshift64*: deterministic, so a failure names a seed that reproduces it.
struct Damage(u64);

impl Damage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One kind of damage to a data set's bytes.
    fn apply(&mut self, dataset: &[u8]) -> Vec<u8> {
        let mut bytes = dataset.to_vec();
        match self.below(4) {
            0 => {
                for _ in 0..1 + self.below(8) {
                    let i = self.below(bytes.len());
                    bytes[i] ^= 1 << self.below(8);
                }
            }
            1 => {
                // A length field (or anything) replaced by a huge or odd 32-bit value.
                let i = self.below(bytes.len().saturating_sub(4));
                let value: u32 = [
                    0xFFFF_FFFF,
                    0xFFFF_FFFE,
                    0x7FFF_FFFF,
                    0x0000_0001,
                    0x00FF_FFFF,
                ][self.below(5)];
                bytes[i..i + 4].copy_from_slice(&value.to_le_bytes());
            }
            2 => {
                // A 16-bit length (explicit VR short form) replaced.
                let i = self.below(bytes.len().saturating_sub(2));
                let value: u16 = [0xFFFF, 0xFFFE, 0x0001, 0x8000][self.below(4)];
                bytes[i..i + 2].copy_from_slice(&value.to_le_bytes());
            }
            _ => {
                bytes.truncate(self.below(bytes.len()));
            }
        }
        bytes
    }
}

/// What tramy does with one received data set; refusals are fine, panics are not.
fn handle(transfer_syntax: &str, dataset: Vec<u8>) {
    let received = ReceivedInstance::from_dataset(transfer_syntax, Bytes::from(dataset));
    let Ok(obj) = received.parse() else { return };
    let Ok(attributes) = InstanceAttributes::from_dataset(&obj) else {
        return;
    };
    let _ = tramy::dicom::json::metadata_json(&obj);
    let Ok(part10) = received.to_part10(
        attributes.sop_class_uid.as_str(),
        attributes.sop_instance_uid.as_str(),
        None,
    ) else {
        return;
    };
    let options = RenderOptions {
        window: None,
        viewport: Some((64, 64)),
        format: RenderedFormat::Png,
    };
    let _ = pixels::render(&part10, 1, &options);
    let _ = pixels::decode_frames(&part10, &[1]);
    let _ = pixels::transcode(&part10, "1.2.840.10008.1.2.1");
    if tramy::dicom::transcode::is_native(transfer_syntax) {
        let _ = tramy::dicom::transcode::transcode_native(
            &received.dataset,
            transfer_syntax,
            "1.2.840.10008.1.2",
        );
    }
    let manifest = tramy::triage::ModelManifest::load(
        &common::repo_root().join("models/endoscopy-synthetic-demo/model.toml"),
    )
    .expect("the demo manifest loads");
    let _ = tramy::triage::preprocess::from_dicom(&part10, &manifest);
}

/// Damaged variants per sample: every frame of the 30-frame clip is decoded four times per case,
/// so it gets fewer.
fn cases_for(size: usize) -> u64 {
    if size > 200_000 {
        6
    } else {
        60
    }
}

#[test]
fn damaged_part10_files_are_refused_or_handled_never_panic() {
    // STOW-RS parts and imported files arrive with their File Meta group: damage all of it.
    let mut panics = Vec::new();
    for path in samples() {
        let file = std::fs::read(&path).unwrap();
        // The meta group and the first elements are where damage hurts the parser most.
        let head = file.len().min(2048);
        for seed in 1..=cases_for(file.len()) {
            let mut damage = Damage(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
            let mut damaged = damage.apply(&file[..head]);
            damaged.extend_from_slice(&file[head..]);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                if let Ok(received) = ReceivedInstance::from_part10(Bytes::from(damaged)) {
                    let ts = received.transfer_syntax.clone();
                    handle(&ts, received.dataset.to_vec());
                }
            }));
            if outcome.is_err() {
                panics.push(format!("{} seed {seed}", path.display()));
            }
        }
    }
    assert!(panics.is_empty(), "{panics:#?}");
}

#[test]
fn damaged_data_sets_are_refused_or_handled_never_panic() {
    let mut panics = Vec::new();
    for path in samples() {
        let file = Bytes::from(std::fs::read(&path).unwrap());
        let original = ReceivedInstance::from_part10(file).unwrap();
        for seed in 1..=cases_for(original.dataset.len()) {
            let mut damage = Damage(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let dataset = damage.apply(&original.dataset);
            let ts = original.transfer_syntax.clone();
            if std::env::var_os("TRAMY_TRACE_DAMAGE").is_some() {
                eprintln!("{} seed {seed}", path.display());
            }
            if catch_unwind(AssertUnwindSafe(|| handle(&ts, dataset))).is_err() {
                panics.push(format!("{} seed {seed}", path.display()));
            }
        }
    }
    assert!(
        panics.is_empty(),
        "{} damaged data sets made tramy panic: {panics:#?}",
        panics.len()
    );
}

#[test]
fn damaged_pdus_are_refused_or_decoded_never_panic() {
    use dicom_ul::pdu::{
        AssociationRQ, PDataValue, PDataValueType, Pdu, PresentationContextProposed,
        UserVariableItem,
    };
    // What a modality sends first and most: an A-ASSOCIATE-RQ and P-DATA-TF.
    let association = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "MODALITY".into(),
        called_ae_title: "TRAMY".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into(), "1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID("1.2.3.4".into()),
            UserVariableItem::ImplementationVersionName("TEST".into()),
        ],
    });
    let data = Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: 1,
            value_type: PDataValueType::Data,
            is_last: true,
            data: vec![0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'C', b'T'],
        }],
    };
    let mut panics = Vec::new();
    for (name, pdu) in [("A-ASSOCIATE-RQ", association), ("P-DATA-TF", data)] {
        let mut bytes = Vec::new();
        dicom_ul::write_pdu(&mut bytes, &pdu).unwrap();
        for seed in 1..=400u64 {
            let mut damage = Damage(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let damaged = damage.apply(&bytes);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let _ = dicom_ul::read_pdu(&damaged[..], dicom_ul::pdu::MAXIMUM_PDU_SIZE, false);
            }));
            if outcome.is_err() {
                panics.push(format!("{name} seed {seed}"));
            }
        }
    }
    assert!(panics.is_empty(), "{panics:#?}");
}

#[test]
fn damaged_command_sets_are_refused_or_decoded_never_panic_nor_over_allocate() {
    use dicom_dictionary_std::tags;
    use tramy::dimse::message::{Command, CommandBuilder};
    let c_store = CommandBuilder::new(0x0001)
        .uid(tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.2")
        .u16(tags::MESSAGE_ID, 7)
        .u16(tags::PRIORITY, 0)
        .uid(tags::AFFECTED_SOP_INSTANCE_UID, "1.2.3.4.5.6.7.8.9")
        .ae(tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE, "MODALITY")
        .dataset(true)
        .encode()
        .unwrap();
    let mut panics = Vec::new();
    for seed in 1..=400u64 {
        let mut damage = Damage(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let damaged = damage.apply(&c_store);
        if catch_unwind(AssertUnwindSafe(|| {
            let _ = Command::decode(&damaged);
        }))
        .is_err()
        {
            panics.push(format!("seed {seed}"));
        }
    }
    assert!(panics.is_empty(), "{panics:#?}");
    // A length no command set can have is refused before anything is allocated for it.
    let mut huge = c_store.clone();
    // The length of the element after the group length (implicit VR: tag, then 32-bit length).
    huge[16..20].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let refused = Command::decode(&huge).unwrap_err().to_string();
    assert!(refused.contains("declares"), "{refused}");
}
