//! Findings as a DICOM Comprehensive SR in the source study: a TID 1500 Measurement Report
//! (PS3.16 A.35) as IHE AI Results (AIR) profiles it. The device observer (TID 1004), the source
//! image in the Image Library (TID 1600), and per label (and frame) one Measurement Group
//! (TID 1410 Planar ROI) holding its Tracking Identifier and Tracking Unique Identifier, the coded
//! finding, the algorithm (TID 4019), the image region the finding applies to (the whole image or
//! frame, as a closed POLYLINE SCOORD selected from it), the probability as Certainty of Finding
//! (TID 300) and again under the finding's own code, the model's use statement, and a reference to
//! the source image (and frame).
//!
//! Why a region: OHIF 3.13 (extensions/cornerstone-dicom-sr, `getSopClassHandlerModule.ts`)
//! parses a group without SCOORD in `_processNonGeometricallyDefinedMeasurement` into a
//! measurement with no coordinates, which `_checkIfCanAddMeasurementsToDisplaySet` then reads as
//! `measurement.coords[0].ReferencedSOPSequence` and fails on, so no finding of the report is shown.
//! With a region, `_processTID1410Measurement` draws it and labels it only with its NUM items
//! ("concept meaning: value unit") and SNOMED Finding Site: hence the probability under the
//! finding's code, which makes the viewer print e.g. "Pneumonia: 93.10 %". Codes are DCM or SNOMED CT;
//! `99TRAMY` only for a label whose manifest names no code. A referral hospital retrieving the
//! study over DIMSE or DICOMweb receives the findings with the images.

use bytes::Bytes;
use dicom_core::smallvec::SmallVec;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use sha2::{Digest, Sha256};

use super::clip::ClipFinding;
use super::gate::GateVerdict;
use super::intended_use::{Assessment, IntendedUse};
use super::manifest::{Anatomy, CodedConcept, Label, ModelManifest};
use super::model::{LabelScore, Scores};
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

fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A code from the DICOM Controlled Terminology (PS3.16 Annex D).
fn dcm(value: &str, meaning: &str) -> CodedConcept {
    CodedConcept::new(value, "DCM", meaning)
}

/// A Code Sequence item (PS3.3 Table 8.8-1).
fn code(c: &CodedConcept) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    put_str(&mut o, tags::CODE_VALUE, VR::SH, &c.value);
    put_str(&mut o, tags::CODING_SCHEME_DESIGNATOR, VR::SH, &c.scheme);
    put_str(&mut o, tags::CODE_MEANING, VR::LO, &c.meaning);
    o
}

/// A content item (PS3.3 C.17.3) without its value; `concept` is absent for library images.
fn item(relationship: &str, value_type: &str, concept: Option<CodedConcept>) -> InMemDicomObject {
    let mut i = InMemDicomObject::new_empty();
    put_str(&mut i, tags::RELATIONSHIP_TYPE, VR::CS, relationship);
    put_str(&mut i, tags::VALUE_TYPE, VR::CS, value_type);
    if let Some(concept) = concept {
        put_seq(
            &mut i,
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            vec![code(&concept)],
        );
    }
    i
}

fn text_item(relationship: &str, concept: CodedConcept, value: &str) -> InMemDicomObject {
    let mut i = item(relationship, "TEXT", Some(concept));
    put_str(&mut i, tags::TEXT_VALUE, VR::UT, value);
    i
}

fn uid_item(relationship: &str, concept: CodedConcept, value: &str) -> InMemDicomObject {
    let mut i = item(relationship, "UIDREF", Some(concept));
    put_str(&mut i, tags::UID, VR::UI, value);
    i
}

fn code_item(relationship: &str, concept: CodedConcept, value: &CodedConcept) -> InMemDicomObject {
    let mut i = item(relationship, "CODE", Some(concept));
    put_seq(&mut i, tags::CONCEPT_CODE_SEQUENCE, vec![code(value)]);
    i
}

fn container(
    relationship: &str,
    concept: CodedConcept,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut i = item(relationship, "CONTAINER", Some(concept));
    put_str(&mut i, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    put_seq(&mut i, tags::CONTENT_SEQUENCE, children);
    i
}

/// The image the findings were computed on.
struct Source {
    study: String,
    series: String,
    class: String,
    sop: String,
    /// Whether references name a frame (PS3.3 C.18.4: only for multi-frame images).
    multi_frame: bool,
    /// Image size in pixels (columns, rows); 0 when the source does not say.
    size: (u32, u32),
    /// The anatomy an anatomy gate found on the first frame, as a closed polygon in image
    /// pixels, with what found it; the findings refer to it rather than the whole image.
    anatomy: Option<AnatomyRegion>,
}

/// The region of the image an anatomy gate found its anatomy in.
struct AnatomyRegion {
    polygon: Vec<(f32, f32)>,
    anatomy: Anatomy,
    /// "lung fields found by lung-segmentation 0.1.5 (lung area 42.1%)".
    note: String,
}

impl AnatomyRegion {
    fn of(gate: &GateVerdict, size: (u32, u32)) -> Option<AnatomyRegion> {
        let polygon = super::gate::hull(&gate.mask, size.0, size.1);
        (polygon.len() >= 4).then(|| AnatomyRegion {
            polygon,
            anatomy: gate.anatomy,
            note: format!(
                "Region: the convex hull of the {} fields found by {} ({} area {:.1}%)",
                super::gate::region_noun(gate.anatomy),
                gate.gate,
                super::gate::region_noun(gate.anatomy),
                gate.area_fraction * 100.0
            ),
        })
    }
}

impl Source {
    fn of(source: &InMemDicomObject, frames: &[u32], gate: Option<&GateVerdict>) -> Source {
        let number_of_frames = text(source, tags::NUMBER_OF_FRAMES).trim().parse::<u32>();
        Source {
            study: text(source, tags::STUDY_INSTANCE_UID),
            series: text(source, tags::SERIES_INSTANCE_UID),
            class: text(source, tags::SOP_CLASS_UID),
            sop: text(source, tags::SOP_INSTANCE_UID),
            multi_frame: frames.len() > 1 || number_of_frames.is_ok_and(|n| n > 1),
            size: (
                text(source, tags::COLUMNS).parse().unwrap_or(0),
                text(source, tags::ROWS).parse().unwrap_or(0),
            ),
            anatomy: None,
        }
        .with_anatomy(gate)
    }

    fn with_anatomy(mut self, gate: Option<&GateVerdict>) -> Source {
        if self.size.0 > 0 && self.size.1 > 0 {
            self.anatomy = gate.and_then(|g| AnatomyRegion::of(g, self.size));
        }
        self
    }

    /// A Referenced SOP Sequence item for the image (and its 0-based `frame`).
    fn reference(&self, frame: Option<u32>) -> InMemDicomObject {
        let mut r = InMemDicomObject::new_empty();
        put_str(&mut r, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &self.class);
        put_str(&mut r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &self.sop);
        if let (true, Some(frame)) = (self.multi_frame, frame) {
            put_str(
                &mut r,
                tags::REFERENCED_FRAME_NUMBER,
                VR::IS,
                &(frame + 1).to_string(),
            );
        }
        r
    }

    /// An IMAGE content item referencing several (0-based) frames of a multi-frame image:
    /// Referenced Frame Number holds them all (PS3.3 C.18.4, VM 1-n).
    fn frames_item(
        &self,
        relationship: &str,
        concept: Option<CodedConcept>,
        frames: &[u32],
    ) -> InMemDicomObject {
        let mut reference = self.reference(None);
        if self.multi_frame && !frames.is_empty() {
            let numbers: Vec<String> = frames.iter().map(|f| (f + 1).to_string()).collect();
            reference.put(DataElement::new(
                tags::REFERENCED_FRAME_NUMBER,
                VR::IS,
                PrimitiveValue::Strs(numbers.into_iter().collect()),
            ));
        }
        let mut i = item(relationship, "IMAGE", concept);
        put_seq(&mut i, tags::REFERENCED_SOP_SEQUENCE, vec![reference]);
        i
    }

    /// An IMAGE content item referencing the image (TID 320 / TID 1601).
    fn image_item(
        &self,
        relationship: &str,
        concept: Option<CodedConcept>,
        frame: Option<u32>,
    ) -> InMemDicomObject {
        let mut i = item(relationship, "IMAGE", concept);
        put_seq(
            &mut i,
            tags::REFERENCED_SOP_SEQUENCE,
            vec![self.reference(frame)],
        );
        i
    }
}

/// Builds the SR for `scores` (one entry per frame in `frames`) of the model on `source`, which
/// stands against the model's intended use as `assessment` says, and in which the model's
/// anatomy gate (if it has one) found its anatomy.
pub fn findings_sr(
    source: &InMemDicomObject,
    model: &ModelManifest,
    frames: &[u32],
    scores: &[Scores],
    assessment: &Assessment,
    gate: Option<&GateVerdict>,
    clip: &[ClipFinding],
) -> ReceivedInstance {
    let src = Source::of(source, frames, gate);
    let sr_uid = derived_uid(&["sr", &src.sop, &model.name, &model.version]);
    let mut sr = header(source, model, &src, &sr_uid);
    document_root(&mut sr);
    let mut groups = Vec::new();
    for (frame, frame_scores) in frames.iter().zip(scores) {
        for s in frame_scores {
            if let Some(label) = model.labels.iter().find(|l| l.name == s.label) {
                let finding = Scored {
                    label,
                    score: s,
                    frame: *frame,
                };
                groups.push(measurement_group(
                    model, &finding, assessment, &src, &sr_uid,
                ));
            }
        }
    }
    for finding in clip {
        if let Some(label) = model.labels.iter().find(|l| l.name == finding.label) {
            groups.push(clip_group(model, label, finding, assessment, &src, &sr_uid));
        }
    }
    put_seq(
        &mut sr,
        tags::CONTENT_SEQUENCE,
        report_content(model, &src, groups),
    );
    put_seq(
        &mut sr,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![evidence(&src)],
    );
    if uses_private_codes(model) {
        put_seq(
            &mut sr,
            tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
            vec![private_scheme()],
        );
    }
    // UTF-8 only where needed: the default repertoire is what every reader (and dcmtk's VR
    // checker, which does not support ISO_IR 192) takes without question (PS3.5 6.1.2.5).
    if !all_ascii(&sr) {
        put_str(&mut sr, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    }

    let mut bytes = Vec::new();
    // Writing an in-memory object we built ourselves cannot meet malformed input; an error here
    // would be a bug, and an empty data set is then refused by ingest with a clear reason.
    let _ = sr.write_dataset_with_ts(&mut bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased());
    ReceivedInstance::from_dataset(crate::dicom::EXPLICIT_VR_LE, Bytes::from(bytes))
}

/// The private coding scheme for labels whose manifest names no code.
const PRIVATE_SCHEME: &str = "99TRAMY";

fn uses_private_codes(model: &ModelManifest) -> bool {
    model.labels.iter().any(|l| l.code.is_none())
}

/// A private coding scheme is identified in the Coding Scheme Identification Sequence
/// (PS3.3 C.12.1.1.2, PS3.16 Section 8.2).
fn private_scheme() -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    put_str(
        &mut o,
        tags::CODING_SCHEME_DESIGNATOR,
        VR::SH,
        PRIVATE_SCHEME,
    );
    put_str(
        &mut o,
        tags::CODING_SCHEME_NAME,
        VR::ST,
        "tramy model labels without a standard code",
    );
    put_str(
        &mut o,
        tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
        VR::ST,
        "tramy",
    );
    o
}

/// Whether every string value in `obj`, nested items included, is ASCII.
fn all_ascii(obj: &InMemDicomObject) -> bool {
    obj.iter().all(|e| match e.value() {
        Value::Primitive(p) => p.to_str().is_ascii(),
        Value::Sequence(s) => s.items().iter().all(all_ascii),
        Value::PixelSequence(_) => true,
    })
}

/// Patient, General Study, SR Document Series, General Equipment and SR Document General
/// modules (PS3.3 A.35.3): the study's identity copied from the source.
fn header(
    source: &InMemDicomObject,
    model: &ModelManifest,
    src: &Source,
    sr_uid: &str,
) -> InMemDicomObject {
    let now = chrono::Utc::now();
    let mut sr = InMemDicomObject::new_empty();
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
    put_str(&mut sr, tags::STUDY_INSTANCE_UID, VR::UI, &src.study);
    put_str(&mut sr, tags::SOP_CLASS_UID, VR::UI, COMPREHENSIVE_SR);
    put_str(&mut sr, tags::SOP_INSTANCE_UID, VR::UI, sr_uid);
    put_str(&mut sr, tags::MODALITY, VR::CS, "SR");
    put_str(
        &mut sr,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &derived_uid(&["sr-series", &src.study, &model.name]),
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
    let (date, time) = (
        now.format("%Y%m%d").to_string(),
        now.format("%H%M%S").to_string(),
    );
    put_str(&mut sr, tags::INSTANCE_CREATION_DATE, VR::DA, &date);
    put_str(&mut sr, tags::INSTANCE_CREATION_TIME, VR::TM, &time);
    put_str(&mut sr, tags::CONTENT_DATE, VR::DA, &date);
    put_str(&mut sr, tags::CONTENT_TIME, VR::TM, &time);
    // Type 2 attributes of the SR Document Series and General modules: present, empty.
    put_seq(
        &mut sr,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        Vec::new(),
    );
    put_seq(&mut sr, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new());
    put_str(&mut sr, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put_str(&mut sr, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    sr
}

/// The root CONTAINER of TID 1500 (PS3.16 TID 1500 row 1) with its template identification.
fn document_root(sr: &mut InMemDicomObject) {
    put_str(sr, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    put_seq(
        sr,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code(&dcm("126000", "Imaging Measurement Report"))],
    );
    put_str(sr, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut template = InMemDicomObject::new_empty();
    put_str(&mut template, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put_str(&mut template, tags::TEMPLATE_IDENTIFIER, VR::CS, "1500");
    put_seq(sr, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template]);
}

/// The root's children, in TID 1500 row order: language (TID 1204), observer context
/// (TID 1001, device per TID 1004), procedure reported, Image Library (TID 1600), and the
/// Imaging Measurements holding the groups.
fn report_content(
    model: &ModelManifest,
    src: &Source,
    groups: Vec<InMemDicomObject>,
) -> Vec<InMemDicomObject> {
    vec![
        code_item(
            "HAS CONCEPT MOD",
            dcm("121049", "Language of Content Item and Descendants"),
            &CodedConcept::new("en-US", "RFC5646", "English (United States)"),
        ),
        code_item(
            "HAS OBS CONTEXT",
            dcm("121005", "Observer Type"),
            &dcm("121007", "Device"),
        ),
        // TID 1004: the Device Observer UID is mandatory; one per model version.
        uid_item(
            "HAS OBS CONTEXT",
            dcm("121012", "Device Observer UID"),
            &derived_uid(&["device", &model.name, &model.version]),
        ),
        text_item(
            "HAS OBS CONTEXT",
            dcm("121013", "Device Observer Name"),
            &format!("tramy {}", model.name),
        ),
        text_item(
            "HAS OBS CONTEXT",
            dcm("121014", "Device Observer Manufacturer"),
            "tramy",
        ),
        text_item(
            "HAS OBS CONTEXT",
            dcm("121015", "Device Observer Model Name"),
            &model.name,
        ),
        code_item(
            "HAS CONCEPT MOD",
            dcm("121058", "Procedure reported"),
            &CodedConcept::new("363679005", "SCT", "Imaging procedure"),
        ),
        container(
            "CONTAINS",
            dcm("111028", "Image Library"),
            vec![container(
                "CONTAINS",
                dcm("126200", "Image Library Group"),
                vec![src.image_item("CONTAINS", None, None)],
            )],
        ),
        container("CONTAINS", dcm("126010", "Imaging Measurements"), groups),
    ]
}

/// One label's score on one frame.
struct Scored<'a> {
    label: &'a Label,
    score: &'a LabelScore,
    frame: u32,
}

/// Whether the score was flagged, and why not when it was not.
fn verdict(label: &Label, s: &LabelScore, assessment: &Assessment) -> String {
    let side = if s.probability >= label.threshold {
        "at or above"
    } else {
        "below"
    };
    if assessment.intended_use == IntendedUse::Outside {
        format!(
            "not flagged, not urgent ({}): probability {:.3} {side} threshold {}",
            assessment.note, s.probability, label.threshold
        )
    } else if s.flagged {
        format!(
            "FLAGGED ({:?}): probability {:.3} {side} threshold {}",
            s.urgency, s.probability, label.threshold
        )
    } else {
        format!(
            "not flagged: probability {:.3} {side} threshold {}",
            s.probability, label.threshold
        )
    }
}

/// The finding's standing against the model's declared population, as a sentence; none when
/// the model declares no population.
fn intended_use_text(assessment: &Assessment) -> Option<String> {
    match assessment.intended_use {
        IntendedUse::Undeclared => None,
        IntendedUse::Outside => Some(format!(
            "{}. Not flagged, not urgent.",
            capitalized(&assessment.note)
        )),
        IntendedUse::Inside if assessment.note.is_empty() => {
            Some("Inside the model's intended use.".into())
        }
        IntendedUse::Inside => Some(format!(
            "Inside the model's intended use ({}).",
            assessment.note
        )),
    }
}

/// `s` with its first letter in upper case.
fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// One measurement group (TID 1410 Planar ROI, with TID 1501's source reference): a label's
/// result on one frame.
fn measurement_group(
    model: &ModelManifest,
    scored: &Scored,
    assessment: &Assessment,
    src: &Source,
    sr_uid: &str,
) -> InMemDicomObject {
    let (label, s, frame) = (scored.label, scored.score, scored.frame);
    let finding = finding_code(label);
    let tracking = if src.multi_frame {
        format!("{} frame {}", label.name, frame + 1)
    } else {
        label.name.clone()
    };
    let frame_text = frame.to_string();
    let tracking_uid = derived_uid(&["sr-group", sr_uid, &label.name, &frame_text]);
    let verdict = match &model.clip {
        // A frame of a clip is evidence; the clip's smoothed finding decides.
        Some(_) => format!(
            "frame evidence: probability {:.3} (threshold {}); the clip's finding decides",
            s.probability, label.threshold
        ),
        None => verdict(label, s, assessment),
    };
    let mut items = group_identity(model, &tracking, &tracking_uid, &finding);
    items.extend(finding_site(src, frame));
    items.extend(image_region(src, frame));
    items.extend([
        certainty(s.probability, src, frame),
        probability_of(&finding, s.probability, src, frame),
        text_item(
            "CONTAINS",
            dcm("121106", "Comment"),
            &format!("{verdict}. {}", model.provenance.statement),
        ),
    ]);
    items.extend(
        intended_use_text(assessment)
            .map(|text| text_item("CONTAINS", dcm("121106", "Comment"), &text)),
    );
    items.extend(
        src.anatomy
            .as_ref()
            .filter(|_| frame == 0)
            .map(|region| text_item("CONTAINS", dcm("121106", "Comment"), &region.note)),
    );
    items.extend([
        // TID 1501: the image the group was computed on.
        src.image_item(
            "CONTAINS",
            Some(dcm("121112", "Source of Measurement")),
            Some(frame),
        ),
    ]);
    container("CONTAINS", dcm("125007", "Measurement Group"), items)
}

/// The anatomy a gate found, as the finding's site (TID 1419 / TID 1501 "Finding Site",
/// SNOMED CT 363698007), for the frame the gate looked at.
fn finding_site(src: &Source, frame: u32) -> Option<InMemDicomObject> {
    let region = src.anatomy.as_ref().filter(|_| frame == 0)?;
    let site = match region.anatomy {
        Anatomy::Chest => CodedConcept::new("39607008", "SCT", "Lung structure"),
    };
    Some(code_item(
        "HAS CONCEPT MOD",
        CodedConcept::new("363698007", "SCT", "Finding Site"),
        &site,
    ))
}

/// The label's finding as a coded concept: the manifest's code, or a private `99TRAMY` one only
/// where the manifest names no standard one (PS3.16 Section 8.2).
fn finding_code(label: &Label) -> CodedConcept {
    label
        .code
        .clone()
        .unwrap_or_else(|| CodedConcept::new(&label.name, PRIVATE_SCHEME, &label.name))
}

/// What opens every measurement group: its Tracking Identifier and Tracking Unique Identifier,
/// the coded finding, and the algorithm (TID 4019 Algorithm Identification, included by TID
/// 1501 as HAS CONCEPT MOD).
fn group_identity(
    model: &ModelManifest,
    tracking: &str,
    tracking_uid: &str,
    finding: &CodedConcept,
) -> Vec<InMemDicomObject> {
    vec![
        text_item(
            "HAS OBS CONTEXT",
            dcm("112039", "Tracking Identifier"),
            tracking,
        ),
        uid_item(
            "HAS OBS CONTEXT",
            dcm("112040", "Tracking Unique Identifier"),
            tracking_uid,
        ),
        code_item("CONTAINS", dcm("121071", "Finding"), finding),
        text_item(
            "HAS CONCEPT MOD",
            dcm("111001", "Algorithm Name"),
            &model.name,
        ),
        text_item(
            "HAS CONCEPT MOD",
            dcm("111003", "Algorithm Version"),
            &model.version,
        ),
    ]
}

/// A label's finding on the whole clip (issue #14): a measurement group like a frame's, whose
/// probability is the highest smoothed one, whose region is on the frame where it peaks, and
/// whose Source of Measurement references every frame where it fired (the peak when none did).
fn clip_group(
    model: &ModelManifest,
    label: &Label,
    clip: &ClipFinding,
    assessment: &Assessment,
    src: &Source,
    sr_uid: &str,
) -> InMemDicomObject {
    let finding = finding_code(label);
    let tracking_uid = derived_uid(&["sr-group", sr_uid, &label.name, "clip"]);
    let fired: Vec<String> = clip
        .fired_frames
        .iter()
        .map(|f| (f + 1).to_string())
        .collect();
    let verdict = if assessment.intended_use == IntendedUse::Outside {
        format!("Clip: not flagged, not urgent ({})", assessment.note)
    } else if clip.flagged {
        format!("Clip: FLAGGED ({:?})", clip.urgency)
    } else {
        "Clip: not flagged".to_string()
    };
    let rule = model.clip.as_ref();
    let text = format!(
        "{verdict}: smoothed probability (over {} sampled frames) peaks at {:.3} on frame {}, \
         threshold {}; at or above it on frames [{}]. {}",
        rule.map_or(1, |r| r.smoothing_frames),
        clip.probability,
        clip.peak_frame + 1,
        label.threshold,
        fired.join(", "),
        model.provenance.statement
    );
    let evidence = if clip.fired_frames.is_empty() {
        vec![clip.peak_frame]
    } else {
        clip.fired_frames.clone()
    };
    let tracking = format!("{} (clip)", label.name);
    let mut items = group_identity(model, &tracking, &tracking_uid, &finding);
    items.extend(image_region(src, clip.peak_frame));
    items.extend([
        certainty(clip.probability, src, clip.peak_frame),
        probability_of(&finding, clip.probability, src, clip.peak_frame),
        text_item("CONTAINS", dcm("121106", "Comment"), &text),
        src.frames_item(
            "CONTAINS",
            Some(dcm("121112", "Source of Measurement")),
            &evidence,
        ),
    ]);
    container("CONTAINS", dcm("125007", "Measurement Group"), items)
}

/// The region a finding applies to (TID 1410 row "Image Region", DCM 111030) as a closed
/// POLYLINE in image pixel coordinates, column then row, from the top left corner of the top
/// left pixel (PS3.3 C.18.6.1.2), selected from the source image (the one IMAGE a SCOORD must
/// have, PS3.3 C.18.6): the anatomy its gate found (the lung fields' convex hull) on the frame
/// the gate looked at, else the whole image or frame. None when the source does not give its
/// size.
fn image_region(src: &Source, frame: u32) -> Option<InMemDicomObject> {
    if src.size.0 == 0 || src.size.1 == 0 {
        return None;
    }
    let (columns, rows) = (src.size.0 as f32, src.size.1 as f32);
    let whole = vec![
        (0.0, 0.0),
        (columns, 0.0),
        (columns, rows),
        (0.0, rows),
        (0.0, 0.0),
    ];
    let polygon = match &src.anatomy {
        Some(region) if frame == 0 => &region.polygon,
        _ => &whole,
    };
    let data: SmallVec<[f32; 2]> = polygon.iter().flat_map(|&(x, y)| [x, y]).collect();
    let mut scoord = item("CONTAINS", "SCOORD", Some(dcm("111030", "Image Region")));
    put_str(&mut scoord, tags::GRAPHIC_TYPE, VR::CS, "POLYLINE");
    scoord.put(DataElement::new(
        tags::GRAPHIC_DATA,
        VR::FL,
        PrimitiveValue::F32(data),
    ));
    put_seq(
        &mut scoord,
        tags::CONTENT_SEQUENCE,
        vec![src.image_item("SELECTED FROM", None, Some(frame))],
    );
    Some(scoord)
}

/// The model's probability as a TID 300 measurement: Certainty of Finding in percent, as CAD
/// reports carry it (PS3.16 CID 6048), inferred from the source image (TID 320).
fn certainty(probability: f32, src: &Source, frame: u32) -> InMemDicomObject {
    percent(
        dcm("111012", "Certainty of Finding"),
        probability,
        src,
        frame,
    )
}

/// The probability again as a measurement named by the finding itself ("Pneumonia: 93.1 %"):
/// the one form OHIF 3.13 prints beside a region (see the module documentation).
fn probability_of(
    finding: &CodedConcept,
    probability: f32,
    src: &Source,
    frame: u32,
) -> InMemDicomObject {
    percent(finding.clone(), probability, src, frame)
}

/// A NUM content item: `probability` in percent, inferred from the source image (and frame).
fn percent(concept: CodedConcept, probability: f32, src: &Source, frame: u32) -> InMemDicomObject {
    let mut num = item("CONTAINS", "NUM", Some(concept));
    let mut measured = InMemDicomObject::new_empty();
    put_str(
        &mut measured,
        tags::NUMERIC_VALUE,
        VR::DS,
        &format!("{:.4}", f64::from(probability) * 100.0),
    );
    put_seq(
        &mut measured,
        tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
        vec![code(&CodedConcept::new("%", "UCUM", "Percent"))],
    );
    put_seq(&mut num, tags::MEASURED_VALUE_SEQUENCE, vec![measured]);
    // An IMAGE hangs from a NUM by INFERRED FROM in Comprehensive SR (PS3.3 A.35.3).
    put_seq(
        &mut num,
        tags::CONTENT_SEQUENCE,
        vec![src.image_item(
            "INFERRED FROM",
            Some(dcm("121112", "Source of Measurement")),
            Some(frame),
        )],
    );
    num
}

/// The Current Requested Procedure Evidence Sequence (PS3.3 C.17.2): the source instance, so
/// every image the content references is listed as evidence.
fn evidence(src: &Source) -> InMemDicomObject {
    let mut series_ref = InMemDicomObject::new_empty();
    put_str(
        &mut series_ref,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &src.series,
    );
    put_seq(
        &mut series_ref,
        tags::REFERENCED_SOP_SEQUENCE,
        vec![src.reference(None)],
    );
    let mut study_ref = InMemDicomObject::new_empty();
    put_str(&mut study_ref, tags::STUDY_INSTANCE_UID, VR::UI, &src.study);
    put_seq(
        &mut study_ref,
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![series_ref],
    );
    study_ref
}
