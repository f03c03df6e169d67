//! DICOM JSON (PS3.18 F.2) of an instance's metadata, bulk data left out, as kept in the index so
//! that metadata requests never touch the object store.

use dicom_core::header::Header;
use dicom_core::VR;
use dicom_object::InMemDicomObject;

/// Values of binary VRs larger than this are bulk data and left out of the metadata.
pub const BULK_DATA_THRESHOLD: usize = 1024;

/// Serialises `obj` as a DICOM JSON object, without Pixel Data and without binary values over
/// [`BULK_DATA_THRESHOLD`] bytes (sequences are walked recursively).
pub fn metadata_json(obj: &InMemDicomObject) -> Result<String, serde_json::Error> {
    let stripped = without_bulk_data(obj);
    dicom_json::to_string(&stripped)
}

fn is_bulk(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN
    )
}

fn without_bulk_data(obj: &InMemDicomObject) -> InMemDicomObject {
    use dicom_core::value::Value;
    use dicom_core::DataElement;
    InMemDicomObject::from_element_iter(obj.iter().filter_map(|elem| {
        let vr = elem.vr();
        match elem.value() {
            Value::PixelSequence(_) => None,
            Value::Sequence(seq) => {
                let items: Vec<InMemDicomObject> =
                    seq.items().iter().map(without_bulk_data).collect();
                Some(DataElement::new(
                    elem.tag(),
                    vr,
                    dicom_core::value::DataSetSequence::from(items),
                ))
            }
            Value::Primitive(p) if is_bulk(vr) && p.calculate_byte_len() > BULK_DATA_THRESHOLD => {
                None
            }
            _ => Some(elem.clone()),
        }
    }))
}
