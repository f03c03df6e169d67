//! Values received with VR UN whose tag the standard dictionary knows, read as that VR.
//!
//! A system that did not know an attribute (GDCM's conversions, some anonymisers, a router with
//! an old dictionary) forwards it as UN: the value bytes unchanged, the VR lost. PS3.5 6.2.2
//! lets a receiver that knows the attribute read it with its real VR. Without this, an instance
//! whose UIDs arrive as UN cannot be filed (its Study Instance UID reads as a list of bytes), and
//! one whose Rows or Bits Allocated arrive as UN cannot be rendered.
//!
//! Only explicit little-endian value bytes are read (UN values are always stored as they were in
//! the original little-endian encoding in practice; big endian is retired, PS3.5 A.3) and only for
//! tags whose dictionary VR is exact, or Pixel Data (OB or OW by Bits Allocated). A value whose
//! length does not fit its VR stays UN. Undefined-length UN (a sequence, read by dicom-rs as
//! one already) is left as it is.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use smallvec::SmallVec;

/// Reads every UN value of `obj` whose tag has a known VR as that VR (top level only: nested
/// items are rare and, when UN, were read with the data set's encoding anyway).
pub fn resolve(obj: &mut InMemDicomObject) {
    let unknown: Vec<Tag> = obj
        .iter()
        .filter(|e| {
            e.vr() == VR::UN && matches!(e.value(), Value::Primitive(PrimitiveValue::U8(_)))
        })
        .map(|e| e.tag())
        .collect();
    // Tags come in ascending order, so Bits Allocated (0028,0100) is already read as US when
    // Pixel Data (7FE0,0010) needs it to choose OB or OW.
    for tag in unknown {
        let Some(vr) = known_vr(tag, obj) else {
            continue;
        };
        let Some(Value::Primitive(PrimitiveValue::U8(bytes))) = obj.get(tag).map(|e| e.value())
        else {
            continue;
        };
        if let Some(value) = read_as(vr, bytes) {
            obj.put(DataElement::new(tag, vr, value));
        }
    }
}

/// The dictionary's VR for `tag` when it is one VR (not "US or SS" and the like); Pixel Data is
/// OW above 8 bits allocated, else OB (PS3.5 8.2).
fn known_vr(tag: Tag, obj: &InMemDicomObject) -> Option<VR> {
    if tag == tags::PIXEL_DATA {
        let bits_allocated = obj
            .get(tags::BITS_ALLOCATED)
            .and_then(|e| e.to_int::<u16>().ok());
        return Some(if bits_allocated.unwrap_or(8) > 8 {
            VR::OW
        } else {
            VR::OB
        });
    }
    match StandardDataDictionary.by_tag(tag)?.vr() {
        VirtualVr::Exact(VR::UN | VR::SQ) => None,
        VirtualVr::Exact(vr) => Some(vr),
        _ => None,
    }
}

/// `bytes` as a value of `vr`; `None` when their length does not fit it.
fn read_as(vr: VR, bytes: &[u8]) -> Option<PrimitiveValue> {
    use PrimitiveValue as P;
    fn words<const N: usize, T>(bytes: &[u8], f: fn([u8; N]) -> T) -> Option<SmallVec<[T; 2]>> {
        if !bytes.len().is_multiple_of(N) {
            return None;
        }
        Some(
            bytes
                .chunks_exact(N)
                .map(|c| f(c.try_into().unwrap_or([0; N])))
                .collect(),
        )
    }
    Some(match vr {
        VR::US => P::U16(words(bytes, u16::from_le_bytes)?),
        VR::SS => P::I16(words(bytes, i16::from_le_bytes)?),
        VR::UL => P::U32(words(bytes, u32::from_le_bytes)?),
        VR::SL => P::I32(words(bytes, i32::from_le_bytes)?),
        VR::UV => P::U64(words(bytes, u64::from_le_bytes)?),
        VR::SV => P::I64(words(bytes, i64::from_le_bytes)?),
        VR::FL => P::F32(words(bytes, f32::from_le_bytes)?),
        VR::FD => P::F64(words(bytes, f64::from_le_bytes)?),
        VR::AT => {
            let pairs = words(bytes, |b: [u8; 4]| {
                Tag(
                    u16::from_le_bytes([b[0], b[1]]),
                    u16::from_le_bytes([b[2], b[3]]),
                )
            })?;
            P::Tags(pairs.into_iter().collect())
        }
        VR::OB | VR::OW | VR::OD | VR::OF | VR::OL | VR::OV => P::U8(bytes.into()),
        text_vr => text_value(text_vr, bytes),
    })
}

/// Text values without their padding (PS3.5 6.2); multi-valued VRs split at `\`. Bytes are read
/// as UTF-8, replacing what is not: the character set of a UN value is not known for certain.
fn text_value(vr: VR, bytes: &[u8]) -> PrimitiveValue {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\0', ' ']);
    if text.is_empty() {
        return PrimitiveValue::Empty;
    }
    if matches!(vr, VR::LT | VR::ST | VR::UT | VR::UR) {
        return PrimitiveValue::from(text.to_string());
    }
    PrimitiveValue::Strs(
        text.split('\\')
            .map(|v| v.trim_matches(['\0', ' ']).to_string())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(tag: Tag, bytes: &[u8]) -> DataElement<InMemDicomObject> {
        DataElement::new(tag, VR::UN, PrimitiveValue::U8(bytes.into()))
    }

    #[test]
    fn uids_numbers_and_pixel_data_sent_as_un_are_read_with_their_dictionary_vr() {
        let mut obj = InMemDicomObject::from_element_iter([
            un(tags::STUDY_INSTANCE_UID, b"1.2.3.4\0"),
            un(tags::IMAGE_TYPE, b"ORIGINAL\\PRIMARY "),
            un(tags::ROWS, &512u16.to_le_bytes()),
            un(tags::BITS_ALLOCATED, &16u16.to_le_bytes()),
            un(tags::PIXEL_DATA, &[1, 0, 2, 0]),
            un(Tag(0x0009, 0x1001), b"private"),
        ]);
        resolve(&mut obj);
        let study = obj.get(tags::STUDY_INSTANCE_UID).unwrap();
        assert_eq!(
            (study.vr(), study.to_str().unwrap().as_ref()),
            (VR::UI, "1.2.3.4")
        );
        let image_type = obj.get(tags::IMAGE_TYPE).unwrap();
        assert_eq!(
            image_type.value().to_multi_str().unwrap().to_vec(),
            ["ORIGINAL", "PRIMARY"]
        );
        assert_eq!(obj.get(tags::ROWS).unwrap().to_int::<u16>().unwrap(), 512);
        assert_eq!(obj.get(tags::PIXEL_DATA).unwrap().vr(), VR::OW);
        assert_eq!(
            obj.get(Tag(0x0009, 0x1001)).unwrap().vr(),
            VR::UN,
            "a private tag stays UN"
        );
    }

    #[test]
    fn a_value_whose_length_does_not_fit_its_vr_stays_un() {
        let mut obj = InMemDicomObject::from_element_iter([un(tags::ROWS, &[1, 2, 3])]);
        resolve(&mut obj);
        assert_eq!(obj.get(tags::ROWS).unwrap().vr(), VR::UN);
    }
}
