//! The DICOM domain, without I/O: identifiers, the attributes the index keeps, Part 10 framing,
//! DICOM JSON, and the SOP class tables that association negotiation needs.
//!
//! Nothing here knows about sockets, HTTP or databases.

pub mod age;
pub mod attributes;
pub mod body_part;
pub mod cine;
pub mod codecs;
pub mod declared_lengths;
pub mod json;
pub mod part10;
pub mod person_name;
pub mod pixels;
pub mod presentation;
pub mod storage_sop_classes;
pub mod transcode;
pub mod uid;
pub mod unknown_vr;
pub mod video;

pub use attributes::{InstanceAttributes, PatientAttributes, SeriesAttributes, StudyAttributes};
pub use part10::{Part10Error, ReceivedInstance};
pub use uid::{SeriesInstanceUid, SopClassUid, SopInstanceUid, StudyInstanceUid, UidError};

/// Implicit VR Little Endian, the default transfer syntax (PS3.5 10.1).
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian (PS3.5 A.2).
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Verification SOP class, served by C-ECHO (PS3.4 A.4).
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";

/// Query/Retrieve information models (PS3.4 C.6) tramy serves.
pub mod query_retrieve {
    /// Patient Root Query/Retrieve Information Model - FIND.
    pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
    /// Patient Root Query/Retrieve Information Model - MOVE.
    pub const PATIENT_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
    /// Patient Root Query/Retrieve Information Model - GET.
    pub const PATIENT_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
    /// Study Root Query/Retrieve Information Model - FIND.
    pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    /// Study Root Query/Retrieve Information Model - MOVE.
    pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
    /// Study Root Query/Retrieve Information Model - GET.
    pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";

    /// All of the above.
    pub const ALL: [&str; 6] = [
        PATIENT_ROOT_FIND,
        PATIENT_ROOT_MOVE,
        PATIENT_ROOT_GET,
        STUDY_ROOT_FIND,
        STUDY_ROOT_MOVE,
        STUDY_ROOT_GET,
    ];
}

/// Whether `uid` names a standard storage SOP class (PS3.4 Annex B).
pub fn is_storage_sop_class(uid: &str) -> bool {
    let uid = uid.trim_end_matches(['\0', ' ']);
    storage_sop_classes::STORAGE_SOP_CLASSES
        .iter()
        .any(|(u, _)| *u == uid)
}
