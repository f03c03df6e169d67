//! Native pixel data that dicom-pixeldata decodes but cannot turn into an image, rewritten into a
//! form it can, for display only (rendering, thumbnails, triage input); the values WADO-RS
//! serves are never changed here.
//!
//! - PALETTE COLOR: indices through the Red/Green/Blue Palette Color Lookup Tables to 8-bit RGB
//!   (PS3.3 C.7.6.3.1.5, C.7.6.3.1.6).
//! - YBR_FULL_422 uncompressed: two pixels share one Cb and Cr (PS3.3 C.7.6.3.1.2); expanded and
//!   converted to RGB with the YBR_FULL equations of that section.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::pixels::PixelError;

/// Rewrites the object's pixel data for display when it is palette colour or uncompressed
/// YBR_FULL_422 (callers have already decoded compressed pixel data to native).
pub fn for_display(obj: &mut DefaultDicomObject) -> Result<(), PixelError> {
    if !super::transcode::is_native(obj.meta().transfer_syntax().trim_end_matches('\0')) {
        return Ok(());
    }
    match photometric(obj).as_str() {
        "PALETTE COLOR" => palette_to_rgb(obj),
        "YBR_FULL_422" if int(obj, tags::BITS_ALLOCATED) == Some(8) => ybr_422_to_rgb(obj),
        _ => Ok(()),
    }
}

fn photometric(obj: &DefaultDicomObject) -> String {
    obj.element(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

fn int(obj: &DefaultDicomObject, tag: Tag) -> Option<u32> {
    obj.element(tag).ok()?.to_int::<u32>().ok()
}

fn bytes(obj: &DefaultDicomObject, tag: Tag) -> Result<Vec<u8>, PixelError> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_bytes().ok())
        .map(|b| b.into_owned())
        .ok_or_else(|| decode_error(&format!("{tag} is missing")))
}

/// One palette table as 8-bit levels: (first mapped value, entries).
fn palette_table(
    obj: &DefaultDicomObject,
    descriptor: Tag,
    data: Tag,
) -> Result<(u32, Vec<u8>), PixelError> {
    let d: Vec<u32> = obj
        .element(descriptor)
        .ok()
        .and_then(|e| e.to_multi_int::<u32>().ok())
        .filter(|d| d.len() == 3)
        .ok_or_else(|| decode_error("a Palette Color Lookup Table Descriptor is missing"))?;
    // PS3.3 C.7.6.3.1.5: 0 entries means 65536; the first mapped value may be written as
    // a signed number; 8 or 16 bits per entry.
    let entries = if d[0] == 0 { 65536 } else { d[0] as usize };
    let first = d[1] & 0xFFFF;
    let bits = d[2];
    let raw = bytes(obj, data)?;
    let values: Vec<u32> = if raw.len() >= entries * 2 {
        raw.chunks_exact(2)
            .take(entries)
            .map(|w| u32::from(u16::from_le_bytes([w[0], w[1]])))
            .collect()
    } else if raw.len() >= entries {
        raw.iter().take(entries).map(|b| u32::from(*b)).collect()
    } else {
        return Err(decode_error(
            "a Palette Color Lookup Table is shorter than its descriptor",
        ));
    };
    let max = f64::from((1u32 << bits.clamp(1, 16)) - 1);
    let levels = values
        .iter()
        .map(|v| (f64::from(*v) / max * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    Ok((first, levels))
}

fn palette_to_rgb(obj: &mut DefaultDicomObject) -> Result<(), PixelError> {
    let tables = [
        palette_table(
            obj,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        )?,
        palette_table(
            obj,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        )?,
        palette_table(
            obj,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        )?,
    ];
    let pixels = bytes(obj, tags::PIXEL_DATA)?;
    let indices: Vec<u32> = match int(obj, tags::BITS_ALLOCATED) {
        Some(8) => pixels.iter().map(|b| u32::from(*b)).collect(),
        Some(16) => pixels
            .chunks_exact(2)
            .map(|w| u32::from(u16::from_le_bytes([w[0], w[1]])))
            .collect(),
        _ => return Err(decode_error("palette colour needs 8 or 16 bits allocated")),
    };
    let mut rgb = Vec::with_capacity(indices.len() * 3);
    for index in indices {
        for (first, levels) in &tables {
            // Values below the first mapped value take the first entry, above the last the last.
            let at = index.saturating_sub(*first) as usize;
            rgb.push(levels[at.min(levels.len() - 1)]);
        }
    }
    put_rgb(obj, rgb);
    Ok(())
}

fn ybr_422_to_rgb(obj: &mut DefaultDicomObject) -> Result<(), PixelError> {
    let pixels = bytes(obj, tags::PIXEL_DATA)?;
    let mut rgb = Vec::with_capacity(pixels.len() / 4 * 6);
    for group in pixels.chunks_exact(4) {
        let (cb, cr) = (f64::from(group[2]) - 128.0, f64::from(group[3]) - 128.0);
        for y in [f64::from(group[0]), f64::from(group[1])] {
            for v in [
                y + 1.402 * cr,
                y - 0.344136 * cb - 0.714136 * cr,
                y + 1.772 * cb,
            ] {
                rgb.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    put_rgb(obj, rgb);
    Ok(())
}

/// Replaces the pixel data with interleaved 8-bit RGB and describes it so.
fn put_rgb(obj: &mut DefaultDicomObject, rgb: Vec<u8>) {
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(rgb.into()),
    ));
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from("RGB"),
    ));
    obj.put(us(tags::SAMPLES_PER_PIXEL, 3));
    obj.put(us(tags::BITS_ALLOCATED, 8));
    obj.put(us(tags::BITS_STORED, 8));
    obj.put(us(tags::HIGH_BIT, 7));
    obj.put(us(tags::PIXEL_REPRESENTATION, 0));
    obj.put(us(tags::PLANAR_CONFIGURATION, 0));
}

fn decode_error(reason: &str) -> PixelError {
    PixelError::Decode(reason.to_string())
}
