//! The attributes the index keeps for each level of the DICOM information model (PS3.3 A.1.2):
//! the C-FIND matching and return keys of PS3.4 C.6 and the QIDO-RS attributes of PS3.18 10.6.3.3.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::uid::{SeriesInstanceUid, SopClassUid, SopInstanceUid, StudyInstanceUid, UidError};
use dicom_core::value::PrimitiveValue;
use dicom_core::{Tag, VR};

/// Patient level. Patients are identified by PatientID *and* IssuerOfPatientID, so two hospitals
/// that both use "12345" never see one merged patient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientAttributes {
    /// Patient ID (0010,0020); empty when the sender gave none (an unidentified patient).
    pub patient_id: String,
    /// Issuer of Patient ID (0010,0021); empty when absent.
    pub issuer_of_patient_id: String,
    /// Patient's Name (0010,0010) in DICOM PN form (`Family^Given^...`).
    pub patient_name: String,
    /// Patient's Birth Date (0010,0030), YYYYMMDD.
    pub birth_date: String,
    /// Patient's Sex (0010,0040).
    pub sex: String,
    /// The patient's other identifiers, e.g. a national citizen ID: the values of Other
    /// Patient IDs (0010,1000) and the Patient IDs of Other Patient IDs Sequence (0010,1002),
    /// distinct, in order. Link suggestions compare them (issue #12).
    pub other_patient_ids: Vec<String>,
}

/// Study level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyAttributes {
    /// Study Instance UID.
    pub study_instance_uid: StudyInstanceUid,
    /// Study Date (0008,0020).
    pub study_date: String,
    /// Study Time (0008,0030).
    pub study_time: String,
    /// Accession Number (0008,0050).
    pub accession_number: String,
    /// Study ID (0020,0010).
    pub study_id: String,
    /// Referring Physician's Name (0008,0090).
    pub referring_physician_name: String,
    /// Study Description (0008,1030).
    pub study_description: String,
}

/// Series level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesAttributes {
    /// Series Instance UID.
    pub series_instance_uid: SeriesInstanceUid,
    /// Modality (0008,0060).
    pub modality: String,
    /// Series Number (0020,0011).
    pub series_number: Option<i64>,
    /// Series Description (0008,103E).
    pub series_description: String,
    /// Body Part Examined (0018,0015).
    pub body_part_examined: String,
    /// Series Date (0008,0021).
    pub series_date: String,
    /// Series Time (0008,0031).
    pub series_time: String,
}

/// Instance level, plus the patient, study and series it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceAttributes {
    /// Patient level.
    pub patient: PatientAttributes,
    /// Study level.
    pub study: StudyAttributes,
    /// Series level.
    pub series: SeriesAttributes,
    /// SOP Class UID.
    pub sop_class_uid: SopClassUid,
    /// SOP Instance UID.
    pub sop_instance_uid: SopInstanceUid,
    /// Instance Number (0020,0013).
    pub instance_number: Option<i64>,
    /// Rows (0028,0010), for images.
    pub rows: Option<i64>,
    /// Columns (0028,0011), for images.
    pub columns: Option<i64>,
    /// Number of Frames (0028,0008); 1 for single-frame images.
    pub number_of_frames: Option<i64>,
    /// Photometric Interpretation (0028,0004), for triage routing.
    pub photometric_interpretation: String,
}

/// Reads `tag` as trimmed text; empty when absent or not textual.
pub fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// Reads `tag` as an integer; `None` when absent or not a number.
pub fn integer(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    let v = obj.get(tag)?;
    v.to_int::<i64>().ok().or_else(|| {
        v.to_str()
            .ok()
            .and_then(|s| s.trim_matches(['\0', ' ']).parse().ok())
    })
}

/// Other Patient IDs (0010,1000): retired in favour of the sequence, still sent by many systems.
const OTHER_PATIENT_IDS: Tag = Tag(0x0010, 0x1000);

/// The values of Other Patient IDs (0010,1000) and the Patient ID (0010,0020) of each item of
/// Other Patient IDs Sequence (0010,1002), trimmed, distinct.
pub fn other_patient_ids(obj: &InMemDicomObject) -> Vec<String> {
    let listed = obj
        .get(OTHER_PATIENT_IDS)
        .and_then(|e| e.to_multi_str().ok())
        .map(|v| v.to_vec())
        .unwrap_or_default();
    let in_sequence = obj
        .get(tags::OTHER_PATIENT_I_DS_SEQUENCE)
        .and_then(|e| e.items())
        .map(|items| {
            items
                .iter()
                .map(|item| text(item, tags::PATIENT_ID))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut ids: Vec<String> = Vec::new();
    for id in listed.iter().chain(&in_sequence) {
        let id = id.trim_matches(['\0', ' ']);
        if !id.is_empty() && !ids.iter().any(|known| known == id) {
            ids.push(id.to_string());
        }
    }
    ids
}

impl InstanceAttributes {
    /// Extracts the indexed attributes; fails when a unique key (Study, Series, SOP Instance UID or
    /// SOP Class UID) is missing or malformed, because such an instance cannot be filed.
    pub fn from_dataset(obj: &InMemDicomObject) -> Result<Self, UidError> {
        Ok(InstanceAttributes {
            patient: PatientAttributes {
                patient_id: text(obj, tags::PATIENT_ID),
                issuer_of_patient_id: text(obj, tags::ISSUER_OF_PATIENT_ID),
                patient_name: text(obj, tags::PATIENT_NAME),
                birth_date: text(obj, tags::PATIENT_BIRTH_DATE),
                sex: text(obj, tags::PATIENT_SEX),
                other_patient_ids: other_patient_ids(obj),
            },
            study: StudyAttributes {
                study_instance_uid: StudyInstanceUid::new(&text(obj, tags::STUDY_INSTANCE_UID))?,
                study_date: text(obj, tags::STUDY_DATE),
                study_time: text(obj, tags::STUDY_TIME),
                accession_number: text(obj, tags::ACCESSION_NUMBER),
                study_id: text(obj, tags::STUDY_ID),
                referring_physician_name: text(obj, tags::REFERRING_PHYSICIAN_NAME),
                study_description: text(obj, tags::STUDY_DESCRIPTION),
            },
            series: SeriesAttributes {
                series_instance_uid: SeriesInstanceUid::new(&text(obj, tags::SERIES_INSTANCE_UID))?,
                modality: text(obj, tags::MODALITY),
                series_number: integer(obj, tags::SERIES_NUMBER),
                series_description: text(obj, tags::SERIES_DESCRIPTION),
                body_part_examined: text(obj, tags::BODY_PART_EXAMINED),
                series_date: text(obj, tags::SERIES_DATE),
                series_time: text(obj, tags::SERIES_TIME),
            },
            sop_class_uid: SopClassUid::new(&text(obj, tags::SOP_CLASS_UID))?,
            sop_instance_uid: SopInstanceUid::new(&text(obj, tags::SOP_INSTANCE_UID))?,
            instance_number: integer(obj, tags::INSTANCE_NUMBER),
            rows: integer(obj, tags::ROWS),
            columns: integer(obj, tags::COLUMNS),
            number_of_frames: integer(obj, tags::NUMBER_OF_FRAMES),
            photometric_interpretation: text(obj, tags::PHOTOMETRIC_INTERPRETATION),
        })
    }
}

/// Converts text as the index keeps it into a value of `vr` (numbers for binary VRs, a list for
/// backslash-separated multi-values, empty for empty text).
pub fn value_from_text(vr: VR, text: &str) -> PrimitiveValue {
    if text.is_empty() {
        return PrimitiveValue::Empty;
    }
    let parsed = match vr {
        VR::US => text.parse::<u16>().map(PrimitiveValue::from).ok(),
        VR::UL => text.parse::<u32>().map(PrimitiveValue::from).ok(),
        VR::SS => text.parse::<i16>().map(PrimitiveValue::from).ok(),
        VR::SL => text.parse::<i32>().map(PrimitiveValue::from).ok(),
        _ if text.contains('\\') => Some(PrimitiveValue::Strs(
            text.split('\\').map(str::to_string).collect(),
        )),
        _ => Some(PrimitiveValue::from(text)),
    };
    parsed.unwrap_or(PrimitiveValue::Empty)
}

/// The VR the standard dictionary gives `tag` (UN when unknown).
pub fn dictionary_vr(tag: Tag) -> VR {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.vr().relaxed())
        .unwrap_or(VR::UN)
}
