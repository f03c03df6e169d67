//! Findings as a DICOM Comprehensive SR in the source study, following the TID 1500 Measurement
//! Report pattern (PS3.16): the device observer (algorithm name and version), one measurement
//! group per label with the coded finding, its probability, the model's use statement, and a
//! reference to the source image (and frame). A referral hospital retrieving the study over DIMSE
//! or DICOMweb receives the findings with the images.

use bytes::Bytes;
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use sha2::{Digest, Sha256};

use super::manifest::ModelManifest;
use super::model::Scores;
use crate::dicom::attributes::text;
use crate::dicom::ReceivedInstance;

/// Comprehensive SR Storage.
pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
/// The sender recorded for SRs tramy writes; instances from it are never triaged.
pub const AI_SOURCE: &str = "TRAMY-AI";

/// A UID under the 2.25 root (PS3.5 B.2) derived from `parts`, so the same study and model always
/// get the same series and the same instance and model the same SR.
pub fn derived_uid(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // 2.25 takes a 128-bit integer; clear the top bit so it stays under 39 digits.
    bytes[0] &= 0x7f;
    format!("2.25.{}", u128::from_be_bytes(bytes))
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

fn seq(items: Vec<InMemDicomObject>) -> DataSetSequence<InMemDicomObject> {
    DataSetSequence::from(items)
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    put_str(&mut c, tags::CODE_VALUE, VR::SH, value);
    put_str(&mut c, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put_str(&mut c, tags::CODE_MEANING, VR::LO, meaning);
    c
}

fn item(relationship: &str, value_type: &str, concept: InMemDicomObject) -> InMemDicomObject {
    let mut i = InMemDicomObject::new_empty();
    put_str(&mut i, tags::RELATIONSHIP_TYPE, VR::CS, relationship);
    put_str(&mut i, tags::VALUE_TYPE, VR::CS, value_type);
    i.put(DataElement::new(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        VR::SQ,
        seq(vec![concept]),
    ));
    i
}

fn text_item(relationship: &str, concept: InMemDicomObject, value: &str) -> InMemDicomObject {
    let mut i = item(relationship, "TEXT", concept);
    put_str(&mut i, tags::TEXT_VALUE, VR::UT, value);
    i
}

fn code_item(
    relationship: &str,
    concept: InMemDicomObject,
    value: InMemDicomObject,
) -> InMemDicomObject {
    let mut i = item(relationship, "CODE", concept);
    i.put(DataElement::new(
        tags::CONCEPT_CODE_SEQUENCE,
        VR::SQ,
        seq(vec![value]),
    ));
    i
}

fn container(
    relationship: &str,
    concept: InMemDicomObject,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut i = item(relationship, "CONTAINER", concept);
    put_str(&mut i, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    i.put(DataElement::new(
        tags::CONTENT_SEQUENCE,
        VR::SQ,
        seq(children),
    ));
    i
}

/// Builds the SR for `scores` (one entry per frame in `frames`) of the model on `source`.
pub fn findings_sr(
    source: &InMemDicomObject,
    model: &ModelManifest,
    frames: &[u32],
    scores: &[Scores],
) -> ReceivedInstance {
    let study = text(source, tags::STUDY_INSTANCE_UID);
    let source_sop = text(source, tags::SOP_INSTANCE_UID);
    let source_class = text(source, tags::SOP_CLASS_UID);
    let source_series = text(source, tags::SERIES_INSTANCE_UID);
    let now = chrono::Utc::now();
    let mut sr = InMemDicomObject::new_empty();
    put_str(&mut sr, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    for (tag, vr) in [
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::ISSUER_OF_PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::PATIENT_SEX, VR::CS),
        (tags::STUDY_DATE, VR::DA),
        (tags::STUDY_TIME, VR::TM),
        (tags::ACCESSION_NUMBER, VR::SH),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        (tags::STUDY_ID, VR::SH),
        (tags::STUDY_DESCRIPTION, VR::LO),
    ] {
        put_str(&mut sr, tag, vr, &text(source, tag));
    }
    put_str(&mut sr, tags::STUDY_INSTANCE_UID, VR::UI, &study);
    put_str(&mut sr, tags::SOP_CLASS_UID, VR::UI, COMPREHENSIVE_SR);
    put_str(
        &mut sr,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        &derived_uid(&["sr", &source_sop, &model.name, &model.version]),
    );
    put_str(&mut sr, tags::MODALITY, VR::CS, "SR");
    put_str(
        &mut sr,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &derived_uid(&["sr-series", &study, &model.name]),
    );
    put_str(&mut sr, tags::SERIES_NUMBER, VR::IS, "9000");
    put_str(
        &mut sr,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &format!("AI findings: {} {}", model.name, model.version),
    );
    put_str(&mut sr, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_str(&mut sr, tags::MANUFACTURER, VR::LO, "tramy");
    put_str(&mut sr, tags::MANUFACTURER_MODEL_NAME, VR::LO, &model.name);
    put_str(&mut sr, tags::SOFTWARE_VERSIONS, VR::LO, &model.version);
    put_str(
        &mut sr,
        tags::CONTENT_DATE,
        VR::DA,
        &now.format("%Y%m%d").to_string(),
    );
    put_str(
        &mut sr,
        tags::CONTENT_TIME,
        VR::TM,
        &now.format("%H%M%S").to_string(),
    );
    // Type 2 attributes of the SR Document Series and General modules: present, empty.
    sr.put(DataElement::new(
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        VR::SQ,
        seq(Vec::new()),
    ));
    sr.put(DataElement::new(
        tags::PERFORMED_PROCEDURE_CODE_SEQUENCE,
        VR::SQ,
        seq(Vec::new()),
    ));
    put_str(&mut sr, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put_str(&mut sr, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");

    // Root: TID 1500 Measurement Report.
    put_str(&mut sr, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    sr.put(DataElement::new(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        VR::SQ,
        seq(vec![code("126000", "DCM", "Imaging Measurement Report")]),
    ));
    put_str(&mut sr, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut template = InMemDicomObject::new_empty();
    put_str(&mut template, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put_str(&mut template, tags::TEMPLATE_IDENTIFIER, VR::CS, "1500");
    sr.put(DataElement::new(
        tags::CONTENT_TEMPLATE_SEQUENCE,
        VR::SQ,
        seq(vec![template]),
    ));

    let mut groups = Vec::new();
    for (frame, frame_scores) in frames.iter().zip(scores) {
        for s in frame_scores {
            let Some(label) = model.labels.iter().find(|l| l.name == s.label) else {
                continue;
            };
            let finding = match &label.code {
                Some([value, scheme, meaning]) => code(value, scheme, meaning),
                None => code(&label.name, "99TRAMY", &label.name),
            };
            let mut probability = item(
                "CONTAINS",
                "NUM",
                code("probability", "99TRAMY", "Probability of finding"),
            );
            let mut measured = InMemDicomObject::new_empty();
            put_str(
                &mut measured,
                tags::NUMERIC_VALUE,
                VR::DS,
                &format!("{:.6}", s.probability),
            );
            measured.put(DataElement::new(
                tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                VR::SQ,
                seq(vec![code("1", "UCUM", "no units")]),
            ));
            probability.put(DataElement::new(
                tags::MEASURED_VALUE_SEQUENCE,
                VR::SQ,
                seq(vec![measured]),
            ));
            let mut image = item(
                "INFERRED FROM",
                "IMAGE",
                code("121112", "DCM", "Source of Measurement"),
            );
            let mut reference = InMemDicomObject::new_empty();
            put_str(
                &mut reference,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                &source_class,
            );
            put_str(
                &mut reference,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &source_sop,
            );
            if frames.len() > 1 {
                put_str(
                    &mut reference,
                    tags::REFERENCED_FRAME_NUMBER,
                    VR::IS,
                    &(frame + 1).to_string(),
                );
            }
            image.put(DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                seq(vec![reference]),
            ));
            // An IMAGE may hang from a NUM by INFERRED FROM, not from a CONTAINER, in
            // Comprehensive SR (PS3.3 A.35.3).
            probability.put(DataElement::new(
                tags::CONTENT_SEQUENCE,
                VR::SQ,
                seq(vec![image]),
            ));
            let verdict = if s.flagged {
                format!(
                    "FLAGGED ({:?}): probability {:.3} at or above threshold {}",
                    s.urgency, s.probability, label.threshold
                )
            } else {
                format!(
                    "not flagged: probability {:.3} below threshold {}",
                    s.probability, label.threshold
                )
            };
            groups.push(container(
                "CONTAINS",
                code("125007", "DCM", "Measurement Group"),
                vec![
                    text_item(
                        "HAS OBS CONTEXT",
                        code("112039", "DCM", "Tracking Identifier"),
                        &label.name,
                    ),
                    text_item(
                        "HAS OBS CONTEXT",
                        code("111001", "DCM", "Algorithm Name"),
                        &model.name,
                    ),
                    text_item(
                        "HAS OBS CONTEXT",
                        code("111003", "DCM", "Algorithm Version"),
                        &model.version,
                    ),
                    code_item("CONTAINS", code("121071", "DCM", "Finding"), finding),
                    probability,
                    text_item(
                        "CONTAINS",
                        code("121106", "DCM", "Comment"),
                        &format!("{verdict}. {}", model.provenance.statement),
                    ),
                ],
            ));
        }
    }
    let content = vec![
        code_item(
            "HAS CONCEPT MOD",
            code("121049", "DCM", "Language of Content Item and Descendants"),
            code("en-US", "RFC5646", "English (United States)"),
        ),
        code_item(
            "HAS OBS CONTEXT",
            code("121005", "DCM", "Observer Type"),
            code("121007", "DCM", "Device"),
        ),
        text_item(
            "HAS OBS CONTEXT",
            code("121013", "DCM", "Device Observer Name"),
            &format!("tramy {}", model.name),
        ),
        code_item(
            "HAS CONCEPT MOD",
            code("121058", "DCM", "Procedure reported"),
            code("363679005", "SCT", "Imaging"),
        ),
        container(
            "CONTAINS",
            code("126010", "DCM", "Imaging Measurements"),
            groups,
        ),
    ];
    sr.put(DataElement::new(
        tags::CONTENT_SEQUENCE,
        VR::SQ,
        seq(content),
    ));

    // The evidence: the source instance.
    let mut sop_ref = InMemDicomObject::new_empty();
    put_str(
        &mut sop_ref,
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        &source_class,
    );
    put_str(
        &mut sop_ref,
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        &source_sop,
    );
    let mut series_ref = InMemDicomObject::new_empty();
    put_str(
        &mut series_ref,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &source_series,
    );
    series_ref.put(DataElement::new(
        tags::REFERENCED_SOP_SEQUENCE,
        VR::SQ,
        seq(vec![sop_ref]),
    ));
    let mut study_ref = InMemDicomObject::new_empty();
    put_str(&mut study_ref, tags::STUDY_INSTANCE_UID, VR::UI, &study);
    study_ref.put(DataElement::new(
        tags::REFERENCED_SERIES_SEQUENCE,
        VR::SQ,
        seq(vec![series_ref]),
    ));
    sr.put(DataElement::new(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        VR::SQ,
        seq(vec![study_ref]),
    ));

    let mut bytes = Vec::new();
    // Writing an in-memory object we built ourselves cannot meet malformed input; an error here
    // would be a bug, and an empty data set is then refused by ingest with a clear reason.
    let _ = sr.write_dataset_with_ts(&mut bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased());
    ReceivedInstance::from_dataset(crate::dicom::EXPLICIT_VR_LE, Bytes::from(bytes))
}
