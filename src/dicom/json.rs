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
    conform(&mut json);
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
    let mut json = dicom_json::to_value(&obj)?;
    conform(&mut json);
    Ok(json)
}

/// Brings dicom-json's output to PS3.18 F.2, in place, through nested sequences: IS and DS
/// values are JSON numbers (F.2.3; dicom-json keeps the text of values read from a file), an
/// empty value of a multi-valued attribute is `null` and an attribute with no value has no
/// `Value` (F.2.5). Text that is not a number stays text, as the data set holds it.
pub fn conform(json: &mut serde_json::Value) {
    let Some(map) = json.as_object_mut() else {
        return;
    };
    for attribute in map.values_mut() {
        let Some(attribute) = attribute.as_object_mut() else {
            continue;
        };
        let vr = attribute
            .get("vr")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let Some(values) = attribute.get_mut("Value").and_then(|v| v.as_array_mut()) else {
            continue;
        };
        for value in values.iter_mut() {
            conform_value(&vr, value);
        }
        if values.iter().all(serde_json::Value::is_null) {
            attribute.remove("Value");
        }
    }
}

fn conform_value(vr: &str, value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(_) if vr == "SQ" => conform(value),
        // A person name with no component group.
        Value::Object(groups) if groups.values().all(|g| g.as_str() == Some("")) => {
            *value = Value::Null
        }
        Value::String(text) if text.trim().is_empty() => *value = Value::Null,
        Value::String(text) if vr == "IS" || vr == "DS" => {
            if let Some(n) = number(text.trim()) {
                *value = n;
            }
        }
        _ => {}
    }
}

/// A JSON number for IS or DS text: an integer when it is one, else a finite decimal.
fn number(text: &str) -> Option<serde_json::Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(i.into());
    }
    let f = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
    serde_json::Number::from_f64(f).map(serde_json::Value::Number)
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
                } else if value.is_null() {
                    // An empty value keeps its place in the numbering (PS3.19 A.1.5).
                    continue;
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

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{dicom_value, PrimitiveValue};
    use dicom_dictionary_std::tags;

    fn element(tag: Tag, vr: VR, value: PrimitiveValue) -> DataElement<InMemDicomObject> {
        DataElement::new(tag, vr, value)
    }

    #[test]
    fn is_and_ds_are_numbers_and_empty_values_have_no_value_per_ps3_18_f2() {
        // As read from a file: IS and DS are text.
        let item = InMemDicomObject::from_element_iter([element(
            tags::SLICE_THICKNESS,
            VR::DS,
            dicom_value!(Strs, [" 2.50"]),
        )]);
        let obj = InMemDicomObject::from_element_iter([
            element(tags::INSTANCE_NUMBER, VR::IS, dicom_value!(Strs, ["12 "])),
            element(
                tags::PIXEL_SPACING,
                VR::DS,
                dicom_value!(Strs, ["0.3125", "1e2"]),
            ),
            element(tags::WINDOW_CENTER, VR::DS, dicom_value!(Strs, ["40", ""])),
            element(tags::PATIENT_NAME, VR::PN, dicom_value!(Strs, [""])),
            element(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::Empty),
            element(tags::STUDY_ID, VR::SH, dicom_value!(Strs, [""])),
            element(
                tags::SERIES_NUMBER,
                VR::IS,
                dicom_value!(Strs, ["not a number"]),
            ),
            DataElement::new(
                tags::REFERENCED_IMAGE_SEQUENCE,
                VR::SQ,
                dicom_core::value::DataSetSequence::from(vec![item]),
            ),
        ]);
        let json: serde_json::Value = serde_json::from_str(&metadata_json(&obj).unwrap()).unwrap();
        assert_eq!(json["00200013"]["Value"], serde_json::json!([12]));
        assert_eq!(
            json["00280030"]["Value"],
            serde_json::json!([0.3125, 100.0])
        );
        assert_eq!(json["00281050"]["Value"], serde_json::json!([40, null]));
        for empty in ["00100010", "00080050", "00200010"] {
            assert_eq!(
                json[empty],
                serde_json::json!({ "vr": json[empty]["vr"] }),
                "{empty} has no Value"
            );
        }
        assert_eq!(
            json["00200011"]["Value"],
            serde_json::json!(["not a number"]),
            "text that is no number stays as the data set holds it"
        );
        assert_eq!(
            json["00081140"]["Value"][0]["00180050"]["Value"],
            serde_json::json!([2.5]),
            "inside sequences too"
        );
        assert!(to_native_xml(&json).contains("<Value number=\"1\">40</Value></DicomAttribute>"));
    }

    #[test]
    fn indexed_attributes_are_conformant_dicom_json() {
        let json = attributes_json([
            (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, "3"),
            (tags::PATIENT_NAME, ""),
        ])
        .unwrap();
        assert_eq!(json["00201208"]["Value"], serde_json::json!([3]));
        assert_eq!(json["00100010"], serde_json::json!({ "vr": "PN" }));
    }
}
