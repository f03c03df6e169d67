//! DICOM JSON (PS3.18 F.2) of an instance's metadata, bulk data left out, as kept in the index so
//! that metadata requests never touch the object store.

use std::io::Write;

use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;

/// Values of binary VRs larger than this are bulk data and left out of the metadata.
pub const BULK_DATA_THRESHOLD: usize = 1024;

/// Stands for the instance's WADO-RS URL inside stored metadata; [`resolve_bulk_data_uris`]
/// replaces it when the metadata is served, since the URL depends on how the client reached us.
pub const INSTANCE_URL_TOKEN: &str = "tramy-instance:";

/// Serialises `obj` as a DICOM JSON object in which Pixel Data and top-level binary values over
/// [`BULK_DATA_THRESHOLD`] bytes are BulkDataURI references (PS3.18 F.2.6) to the instance's
/// `bulkdata/{tag}` resource; large binary values inside sequences are left out.
///
/// Written directly rather than through `dicom_json::to_value` and [`conform`]: that route
/// cloned the data set, built a `serde_json::Value` tree and rewrote it, which cost about a sixth
/// of ingest CPU (perf, `benches/compare_orthanc.sh`). The output is the same JSON (a unit test
/// compares the two on every sample).
pub fn metadata_json(obj: &InMemDicomObject) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(4096);
    write_data_set(obj, Depth::TopLevel, &mut out)?;
    // Only UTF-8 is written: JSON text is escaped by serde_json, the rest is ASCII.
    String::from_utf8(out).map_err(serde::ser::Error::custom)
}

/// Where a data set sits: bulk data is referenced at the top level and left out inside sequences.
#[derive(Clone, Copy, PartialEq)]
enum Depth {
    TopLevel,
    InSequence,
}

fn write_data_set(
    obj: &InMemDicomObject,
    depth: Depth,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    out.push(b'{');
    let mut first = true;
    for elem in obj.iter() {
        let bulk = is_bulk_value(elem);
        if bulk && depth == Depth::InSequence {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        let Tag(group, element) = elem.tag();
        write!(
            out,
            "\"{group:04X}{element:04X}\":{{\"vr\":\"{}\"",
            elem.vr()
        )
        .map_err(serde_json::Error::io)?;
        if bulk {
            write!(
                out,
                ",\"BulkDataURI\":\"{INSTANCE_URL_TOKEN}/bulkdata/{group:04X}{element:04X}\""
            )
            .map_err(serde_json::Error::io)?;
        } else {
            write_value(elem, out)?;
        }
        out.push(b'}');
    }
    out.push(b'}');
    Ok(())
}

/// Pixel Data in fragments, or a binary value over the bulk-data threshold.
fn is_bulk_value(elem: &DataElement<InMemDicomObject>) -> bool {
    match elem.value() {
        Value::PixelSequence(_) => true,
        Value::Primitive(p) => is_bulk(elem.vr()) && p.calculate_byte_len() > BULK_DATA_THRESHOLD,
        Value::Sequence(_) => false,
    }
}

/// The `"Value"` (or `"InlineBinary"`) member of an attribute, after its `"vr"`; nothing for an
/// attribute with no value (PS3.18 F.2.5).
fn write_value(
    elem: &DataElement<InMemDicomObject>,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let primitive = match elem.value() {
        Value::Sequence(seq) => {
            if !seq.items().is_empty() {
                out.extend_from_slice(b",\"Value\":[");
                for (i, item) in seq.items().iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_data_set(item, Depth::InSequence, out)?;
                }
                out.push(b']');
            }
            return Ok(());
        }
        Value::PixelSequence(_) | Value::Primitive(PrimitiveValue::Empty) => return Ok(()),
        Value::Primitive(p) => p,
    };
    let values = match elem.vr() {
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(primitive.to_bytes());
            out.extend_from_slice(b",\"InlineBinary\":");
            return serde_json::to_writer(out, &encoded);
        }
        VR::SQ => {
            return Err(serde::ser::Error::custom(
                "a primitive value declared as a sequence (VR SQ)",
            ))
        }
        VR::PN => person_names(primitive),
        VR::IS | VR::DS => decimal_strings(primitive),
        VR::FL | VR::FD | VR::SL | VR::SS | VR::SV | VR::UL | VR::US | VR::UV => {
            binary_numbers(primitive)
        }
        VR::AT => attribute_tags(primitive),
        _ => primitive
            .to_multi_str()
            .iter()
            .map(|text| text_value(text))
            .collect(),
    };
    write_values(&values, out)
}

/// One value of a multi-valued attribute, as F.2 writes it.
enum JsonValue {
    /// An empty value keeps its place as `null` (F.2.5).
    Null,
    Text(std::borrow::Cow<'static, str>),
    Integer(i64),
    Decimal(f64),
    /// A person name's component groups (F.2.2): Alphabetic, Ideographic, Phonetic.
    PersonName([String; 3]),
}

fn text_value(text: &str) -> JsonValue {
    if text.trim().is_empty() {
        JsonValue::Null
    } else {
        JsonValue::Text(text.to_string().into())
    }
}

/// Writes `,"Value":[...]`, or nothing when every value is empty (F.2.5).
fn write_values(values: &[JsonValue], out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    if values.iter().all(|v| matches!(v, JsonValue::Null)) {
        return Ok(());
    }
    out.extend_from_slice(b",\"Value\":[");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match value {
            JsonValue::Null => out.extend_from_slice(b"null"),
            JsonValue::Text(text) => serde_json::to_writer(&mut *out, text.as_ref())?,
            JsonValue::Integer(n) => serde_json::to_writer(&mut *out, n)?,
            JsonValue::Decimal(f) => serde_json::to_writer(&mut *out, f)?,
            JsonValue::PersonName(groups) => write_person_name(groups, out)?,
        }
    }
    out.push(b']');
    Ok(())
}

fn write_person_name(groups: &[String; 3], out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    out.push(b'{');
    let mut first = true;
    for (name, group) in ["Alphabetic", "Ideographic", "Phonetic"].iter().zip(groups) {
        if group.is_empty() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write!(out, "\"{name}\":").map_err(serde_json::Error::io)?;
        serde_json::to_writer(&mut *out, group)?;
    }
    out.push(b'}');
    Ok(())
}

/// PN values split into their component groups at `=` (PS3.5 6.2); a name with no group is null.
fn person_names(value: &PrimitiveValue) -> Vec<JsonValue> {
    value
        .to_multi_str()
        .iter()
        .map(|name| {
            let mut parts = name.split('=');
            let mut group = || parts.next().unwrap_or_default().to_string();
            let groups = [group(), group(), group()];
            if groups.iter().all(String::is_empty) {
                JsonValue::Null
            } else {
                JsonValue::PersonName(groups)
            }
        })
        .collect()
}

/// IS and DS values as JSON numbers (F.2.3); text that is no number stays text.
fn decimal_strings(value: &PrimitiveValue) -> Vec<JsonValue> {
    match value {
        PrimitiveValue::Str(_) | PrimitiveValue::Strs(_) => value
            .to_multi_str()
            .iter()
            .map(|text| match decimal_number(text.trim()) {
                _ if text.trim().is_empty() => JsonValue::Null,
                Some(n) => n,
                None => JsonValue::Text(text.to_string().into()),
            })
            .collect(),
        other => binary_numbers(other),
    }
}

/// A JSON number for IS or DS text: an integer when it is one, else a finite decimal.
fn decimal_number(text: &str) -> Option<JsonValue> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(JsonValue::Integer(i));
    }
    let f = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
    Some(JsonValue::Decimal(f))
}

/// Binary numbers as JSON numbers; 64-bit integers beyond 32 bits and non-finite floats as text,
/// as dicom-json writes them (JSON numbers lose precision past 2^53, and have no NaN).
fn binary_numbers(value: &PrimitiveValue) -> Vec<JsonValue> {
    fn int<T: Copy + TryInto<i32> + ToString>(n: T) -> JsonValue {
        match n.try_into() {
            Ok(small) => JsonValue::Integer(i64::from(small)),
            Err(_) => JsonValue::Text(n.to_string().into()),
        }
    }
    fn float(f: f64) -> JsonValue {
        if f.is_finite() {
            JsonValue::Decimal(f)
        } else if f.is_nan() {
            JsonValue::Text("NaN".into())
        } else if f > 0.0 {
            JsonValue::Text("inf".into())
        } else {
            JsonValue::Text("-inf".into())
        }
    }
    use PrimitiveValue as P;
    match value {
        P::U8(v) => v.iter().map(|&n| JsonValue::Integer(n.into())).collect(),
        P::I16(v) => v.iter().map(|&n| JsonValue::Integer(n.into())).collect(),
        P::U16(v) => v.iter().map(|&n| JsonValue::Integer(n.into())).collect(),
        P::I32(v) => v.iter().map(|&n| JsonValue::Integer(n.into())).collect(),
        P::U32(v) => v.iter().map(|&n| JsonValue::Integer(n.into())).collect(),
        P::I64(v) => v.iter().map(|&n| int(n)).collect(),
        P::U64(v) => v.iter().map(|&n| int(n)).collect(),
        P::F32(v) => v.iter().map(|&f| float(f64::from(f))).collect(),
        P::F64(v) => v.iter().map(|&f| float(f)).collect(),
        // Text under a binary VR (a malformed data set): written as the data set holds it.
        other => other.to_multi_str().iter().map(|t| text_value(t)).collect(),
    }
}

/// AT values as `"GGGGEEEE"` (F.2.3).
fn attribute_tags(value: &PrimitiveValue) -> Vec<JsonValue> {
    match value {
        PrimitiveValue::Tags(tags) => tags
            .iter()
            .map(|t| JsonValue::Text(format!("{:04X}{:04X}", t.group(), t.element()).into()))
            .collect(),
        other => other.to_multi_str().iter().map(|t| text_value(t)).collect(),
    }
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

    /// What `metadata_json` wrote before it was written directly: dicom-json's value tree,
    /// brought to F.2 by [`conform`], with bulk data referenced.
    fn metadata_through_dicom_json(obj: &InMemDicomObject) -> serde_json::Value {
        let mut json = dicom_json::to_value(without_bulk_data(obj)).unwrap();
        conform(&mut json);
        let map = json.as_object_mut().unwrap();
        for elem in obj.iter().filter(|e| is_bulk_value(e)) {
            let tag = format!("{:04X}{:04X}", elem.tag().group(), elem.tag().element());
            map.insert(
                tag.clone(),
                serde_json::json!({
                    "vr": elem.vr().to_string(),
                    "BulkDataURI": format!("{INSTANCE_URL_TOKEN}/bulkdata/{tag}"),
                }),
            );
        }
        json
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
                Value::Primitive(p)
                    if is_bulk(vr) && p.calculate_byte_len() > BULK_DATA_THRESHOLD =>
                {
                    None
                }
                _ => Some(elem.clone()),
            }
        }))
    }

    /// The samples in `dicom-samples/`, and pydicom's test files where a Python set-up under
    /// `target/` has them (they add character sets, sequences and odd values).
    fn sample_files() -> Vec<std::path::PathBuf> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(root.join("dicom-samples"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
            .collect();
        assert!(files.len() >= 8, "the committed samples are there");
        let venvs = [
            "target/setup-venv",
            "target/tmp/test-venv",
            "target/bench-venv",
        ];
        for venv in venvs.iter().map(|v| root.join(v)) {
            let Ok(libs) = std::fs::read_dir(venv.join("lib")) else {
                continue;
            };
            for lib in libs.filter_map(|e| e.ok()) {
                let test_files = lib.path().join("site-packages/pydicom/data/test_files");
                if let Ok(dir) = std::fs::read_dir(test_files) {
                    files.extend(dir.filter_map(|e| e.ok().map(|e| e.path())));
                }
            }
        }
        files
    }

    #[test]
    fn metadata_written_directly_equals_dicom_json_brought_to_f2() {
        let mut compared = 0;
        for path in sample_files() {
            // Read as ingest reads (declared lengths checked first: dicom-rs alone spends
            // seconds zero-filling on some of pydicom's malformed files).
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let received = crate::dicom::part10::ReceivedInstance::from_part10(bytes.into());
            let Some(file) = received.ok().and_then(|r| r.parse().ok()) else {
                continue;
            };

            let obj: &InMemDicomObject = &file;
            let direct = metadata_json(obj);
            // dicom-json panics on some malformed values that the direct writer writes as text.
            let Ok(Ok(reference)) = std::panic::catch_unwind(|| {
                std::panic::AssertUnwindSafe(|| metadata_through_dicom_json(obj))()
            })
            .map(Ok::<_, ()>) else {
                continue;
            };
            // Both through text: serde_json reads decimals back to the nearest f64 only roughly.
            let reference: serde_json::Value =
                serde_json::from_str(&reference.to_string()).unwrap();
            let direct: serde_json::Value = serde_json::from_str(&direct.unwrap()).unwrap();
            assert_eq!(direct, reference, "{}", path.display());
            compared += 1;
        }
        assert!(compared >= 8, "compared {compared} files");
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
