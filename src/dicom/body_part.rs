//! What an instance's own text says about the part of the body it shows: Body Part Examined
//! (0018,0015) against the defined terms of PS3.16 Annex L (CID 4031), and the words of its
//! descriptions, in English or Vietnamese, with or without diacritics (`NGỰC`, `NGUC`).
//!
//! Tags are evidence, not truth: real archives hold radiographs of a tibia labelled `CHEST`
//! and chest radiographs with no Body Part Examined at all. Triage uses this only to decide
//! which images an anatomy gate looks at; the gate decides what an image shows.

use super::person_name::fold;

/// The region an instance's text names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatedRegion {
    /// Body Part Examined or a description names the chest (or lungs).
    Chest,
    /// Body Part Examined is a defined term for another region, and no description names the
    /// chest.
    Other,
    /// Nothing known: Body Part Examined is empty or not a defined term (free text, a local
    /// code), and no description names the chest.
    Unstated,
}

/// The text an instance carries about its anatomy.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnatomyText<'a> {
    /// Body Part Examined (0018,0015).
    pub body_part_examined: &'a str,
    /// Study Description (0008,1030), Series Description (0008,103E) and the like.
    pub descriptions: &'a [&'a str],
}

/// Body Part Examined values that mean the chest: PS3.16 Annex L terms whose region holds the
/// lungs, `THORAX` (not a defined term, but common), and the Vietnamese words as modalities
/// configured in Vietnamese write them in a Code String (folded: `NGỰC` → `NGUC`).
const CHEST_BODY_PARTS: &[&str] = &[
    "CHEST",
    "LUNG",
    "THORAX",
    "CHESTABDOMEN",
    "CHESTABDPELVIS",
    "NECKCHEST",
    "NECKCHESTABDOMEN",
    "NECKCHESTABDPELV",
    "NGUC",
    "PHOI",
];

/// Words of a description that name the chest (folded, lower case): English, and Vietnamese
/// "ngực" (chest) and "phổi" (lungs) as typed with or without diacritics.
const CHEST_WORDS: &[&str] = &[
    "chest", "thorax", "thoracic", "lung", "lungs", "nguc", "phoi",
];

/// PS3.16 Annex L (CID 4031) defined terms for regions other than the chest: an instance
/// labelled with one of these is taken at its word and not sent to the chest gate.
const OTHER_BODY_PARTS: &[&str] = &[
    "ABDOMEN",
    "ABDOMENPELVIS",
    "ADRENAL",
    "ANKLE",
    "AORTA",
    "ARM",
    "AXILLA",
    "BACK",
    "BLADDER",
    "BRAIN",
    "BREAST",
    "BRONCHUS",
    "BUTTOCK",
    "CALCANEUS",
    "CALF",
    "CAROTID",
    "CEREBELLUM",
    "CERVIX",
    "CHEEK",
    "CIRCLEOFWILLIS",
    "CLAVICLE",
    "COCCYX",
    "COLON",
    "CORNEA",
    "CORONARYARTERY",
    "CSPINE",
    "CTSPINE",
    "DUODENUM",
    "EAR",
    "ELBOW",
    "ESOPHAGUS",
    "EXTREMITY",
    "EYE",
    "EYELID",
    "FACE",
    "FEMUR",
    "FIBULA",
    "FINGER",
    "FOOT",
    "FOREARM",
    "GALLBLADDER",
    "HAND",
    "HEAD",
    "HEADNECK",
    "HEART",
    "HIP",
    "HUMERUS",
    "IAC",
    "ILEUM",
    "ILIUM",
    "JAW",
    "JEJUNUM",
    "KIDNEY",
    "KNEE",
    "LARYNX",
    "LEG",
    "LIVER",
    "LSPINE",
    "LSSPINE",
    "MAXILLA",
    "MEDIASTINUM",
    "MOUTH",
    "NECK",
    "NOSE",
    "ORBIT",
    "OVARY",
    "PANCREAS",
    "PAROTID",
    "PATELLA",
    "PELVIS",
    "PENIS",
    "PHARYNX",
    "PROSTATE",
    "RADIUS",
    "RECTUM",
    "RIB",
    "SACRUM",
    "SCALP",
    "SCAPULA",
    "SCLERA",
    "SCROTUM",
    "SHOULDER",
    "SKULL",
    "SPINE",
    "SPLEEN",
    "SSPINE",
    "STERNUM",
    "STOMACH",
    "SUBMANDIBULAR",
    "TESTIS",
    "THIGH",
    "THUMB",
    "THYMUS",
    "THYROID",
    "TIBIA",
    "TLSPINE",
    "TMJ",
    "TOE",
    "TONGUE",
    "TRACHEA",
    "TSPINE",
    "ULNA",
    "URETER",
    "URETHRA",
    "UTERUS",
    "VAGINA",
    "VULVA",
    "WHOLEBODY",
    "WRIST",
    "ZYGOMA",
];

/// The region `text` names. A description naming the chest wins over another body part: the
/// gate looks at such an image rather than trusting one tag over another.
pub fn stated_region(text: &AnatomyText<'_>) -> StatedRegion {
    let body_part = fold(text.body_part_examined).trim().to_uppercase();
    let chest_part = CHEST_BODY_PARTS.contains(&body_part.as_str());
    if chest_part || text.descriptions.iter().any(|d| names_chest(d)) {
        return StatedRegion::Chest;
    }
    if OTHER_BODY_PARTS.contains(&body_part.as_str()) {
        StatedRegion::Other
    } else {
        StatedRegion::Unstated
    }
}

/// Whether a description has a word naming the chest ("X-QUANG NGỰC THẲNG", "Chest PA").
fn names_chest(description: &str) -> bool {
    fold(description)
        .split(|c: char| !c.is_alphanumeric())
        .any(|word| CHEST_WORDS.contains(&word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(body_part: &str, descriptions: &[&str]) -> StatedRegion {
        stated_region(&AnatomyText {
            body_part_examined: body_part,
            descriptions,
        })
    }

    #[test]
    fn chest_terms_and_vietnamese_words_name_the_chest() {
        for part in [
            "CHEST",
            "chest ",
            "LUNG",
            "NGỰC",
            "NGUC",
            "PHỔI",
            "CHESTABDOMEN",
        ] {
            assert_eq!(region(part, &[]), StatedRegion::Chest, "{part}");
        }
        for d in [
            "X-QUANG NGỰC THẲNG",
            "XQ nguc thang",
            "Phổi PA",
            "Chest PA",
            "LUNGS",
        ] {
            assert_eq!(region("", &[d]), StatedRegion::Chest, "{d}");
        }
    }

    #[test]
    fn other_defined_terms_are_other_and_anything_else_unstated() {
        assert_eq!(region("KNEE", &["Knee AP"]), StatedRegion::Other);
        assert_eq!(region("TIBIA", &[]), StatedRegion::Other);
        assert_eq!(region("", &[]), StatedRegion::Unstated);
        assert_eq!(region("PORTABLE", &["ward 3"]), StatedRegion::Unstated);
    }

    #[test]
    fn a_description_naming_the_chest_outweighs_another_body_part() {
        assert_eq!(region("KNEE", &["XQ NGỰC"]), StatedRegion::Chest);
    }

    #[test]
    fn chest_words_match_whole_words_only() {
        // "phoi" inside another word, "chestnut" and "lungo" are not the chest.
        assert_eq!(
            region("", &["Chestnut ward", "lungo"]),
            StatedRegion::Unstated
        );
    }
}
