//! DICOM JSON (PS3.18 F.2) of an instance's metadata, bulk data left out, as kept in the index so
//! that metadata requests never touch the object store.

use dicom_core::header::Header;
use dicom_core::{DataElement, Tag, VR};
use dicom_object::InMemDicomObject;

/// Values of binary VRs larger than this are bulk data and left out of the metadata.
pub const BULK_DATA_THRESHOLD: usize = 1024;

/// Stands for the instance's WADO-RS URL inside stored metadata; [`resolve_bulk_data_uris`]
/// replaces it when the metadata is served, since the URL depends on how the client reached us.
pub const INSTANCE_URL_TOKEN: &str = "tramy-instance:";

/// Serialises `obj` as a DICOM JSON object in which Pixel Data and top-level binary values over
/// [`BULK_DATA_THRESHOLD`] bytes are BulkDataURI references (PS3.18 F.2.6) to the instance's
/// `bulkdata/{tag}` resource; large binary values inside sequences are left out.
pub fn metadata_json(obj: &InMemDicomObject) -> Result<String, serde_json::Error> {
    let stripped = without_bulk_data(obj);
    let mut json = dicom_json::to_value(&stripped)?;
    if let Some(map) = json.as_object_mut() {
        for elem in obj.iter() {
            let bulk = match elem.value() {
                dicom_core::value::Value::PixelSequence(_) => true,
                dicom_core::value::Value::Primitive(p) => {
                    is_bulk(elem.vr()) && p.calculate_byte_len() > BULK_DATA_THRESHOLD
                }
                _ => false,
            };
            if bulk {
                let tag = format!("{:04X}{:04X}", elem.tag().group(), elem.tag().element());
                map.insert(
                    tag.clone(),
                    serde_json::json!({
                        "vr": elem.vr().to_string(),
                        "BulkDataURI": format!("{INSTANCE_URL_TOKEN}/bulkdata/{tag}"),
                    }),
                );
            }
        }
    }
    serde_json::to_string(&json)
}

/// Replaces the stored placeholder with the instance's URL.
pub fn resolve_bulk_data_uris(metadata: &str, instance_url: &str) -> String {
    if metadata.contains(INSTANCE_URL_TOKEN) {
        metadata.replace(INSTANCE_URL_TOKEN, instance_url)
    } else {
        metadata.to_string()
    }
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

/// A DICOM JSON object holding `values` (text as the index keeps it), each with the VR the
/// dictionary gives its tag.
pub fn attributes_json<'a>(
    values: impl IntoIterator<Item = (Tag, &'a str)>,
) -> Result<serde_json::Value, serde_json::Error> {
    let obj = InMemDicomObject::from_element_iter(values.into_iter().map(|(tag, text)| {
        let vr = super::attributes::dictionary_vr(tag);
        DataElement::new(
            tag,
            vr,
            json_number(vr, text).unwrap_or_else(|| super::attributes::value_from_text(vr, text)),
        )
    }));
    dicom_json::to_value(&obj)
}

/// IS and DS are JSON numbers in DICOM JSON (PS3.18 F.2.3); text that does not parse stays text.
fn json_number(vr: VR, text: &str) -> Option<dicom_core::PrimitiveValue> {
    use dicom_core::PrimitiveValue;
    let parts = || text.split('\\').map(str::trim);
    match vr {
        VR::IS => parts()
            .map(|p| p.parse::<i32>().ok())
            .collect::<Option<Vec<i32>>>()
            .map(|v| PrimitiveValue::I32(v.into())),
        VR::DS => parts()
            .map(|p| p.parse::<f64>().ok())
            .collect::<Option<Vec<f64>>>()
            .map(|v| PrimitiveValue::F64(v.into())),
        _ => None,
    }
    .filter(|_| !text.is_empty())
}

/// Renders a DICOM JSON object as the Native DICOM Model XML of PS3.19 A.1 (for clients that ask
/// for `application/dicom+xml`).
pub fn to_native_xml(json: &serde_json::Value) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<NativeDicomModel xmlns=\"http://dicom.nema.org/PS3.19/models/NativeDICOM\">",
    );
    write_attributes(json, &mut out);
    out.push_str("</NativeDicomModel>\n");
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn write_attributes(json: &serde_json::Value, out: &mut String) {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    let Some(map) = json.as_object() else { return };
    for (tag, attr) in map {
        let vr = attr.get("vr").and_then(|v| v.as_str()).unwrap_or("UN");
        let keyword = u32::from_str_radix(tag, 16)
            .ok()
            .and_then(|t| {
                dicom_dictionary_std::StandardDataDictionary.by_tag(Tag((t >> 16) as u16, t as u16))
            })
            .map(|e| format!(" keyword=\"{}\"", e.alias()))
            .unwrap_or_default();
        out.push_str(&format!(
            "<DicomAttribute tag=\"{tag}\" vr=\"{vr}\"{keyword}>"
        ));
        if let Some(values) = attr.get("Value").and_then(|v| v.as_array()) {
            for (i, value) in values.iter().enumerate() {
                let n = i + 1;
                if vr == "SQ" {
                    out.push_str(&format!("<Item number=\"{n}\">"));
                    write_attributes(value, out);
                    out.push_str("</Item>");
                } else if vr == "PN" {
                    let name = value
                        .get("Alphabetic")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default();
                    out.push_str(&format!("<PersonName number=\"{n}\"><Alphabetic><FamilyName>{}</FamilyName></Alphabetic></PersonName>", xml_escape(name)));
                } else {
                    let text = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.push_str(&format!(
                        "<Value number=\"{n}\">{}</Value>",
                        xml_escape(&text)
                    ));
                }
            }
        }
        if let Some(uri) = attr.get("BulkDataURI").and_then(|v| v.as_str()) {
            out.push_str(&format!("<BulkData uri=\"{}\"/>", xml_escape(uri)));
        }
        out.push_str("</DicomAttribute>");
    }
}
