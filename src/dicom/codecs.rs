//! Pixel decoders for what dicom-rs cannot decode (or decodes wrongly) in the default build:
//! 12-bit JPEG (Extended, processes 2 & 4; PS3.5 A.4.1), JPEG-LS (PS3.5 A.4.3), untransformed
//! RGB JPEG and 32-bit RLE. Such an instance is turned into native pixel data (Explicit VR Little
//! Endian) before dicom-pixeldata sees it, so rendering, thumbnails, frames, transcoding and
//! triage all gain them through `pixels::open`.
//!
//! Choices, from a survey of what builds with only a C compiler at hand:
//! - 12-bit JPEG: `jpeg-decoder` (dicom-pixeldata's JPEG codec) and `zune-jpeg` refuse sample
//!   precision 12 for DCT processes. `libjpeg-turbo-rs` is a pure-Rust port of libjpeg-turbo 3
//!   with 12-bit decoding, decode limits, and CI cross-checks against the C library; it needs no
//!   cmake or nasm (the C libjpeg-turbo 3 crates do, and Debian bookworm ships 2.1.5 without
//!   12-bit). Its output matches libjpeg's (pylibjpeg) within 1 level of 4096 (IDCT rounding).
//! - JPEG-LS: dicom-rs' `charls` feature builds CharLS with cmake and a C++ compiler, so it is
//!   an optional cargo feature (`--features charls`), and when enabled dicom-rs decodes JPEG-LS
//!   itself. Without it, `pure_jpegls` (pure Rust, checked against CharLS streams) decodes
//!   single-component images — every greyscale modality; it refuses colour (interleaved)
//!   streams, which then get a reason naming the feature. `dicom-toolkit-codec`'s pure-Rust
//!   JPEG-LS was tried too and failed on pydicom's JPEG-LS test files.
//! - 8-bit colour JPEG whose Photometric Interpretation is RGB and whose stream names no colour
//!   transform (no JFIF or Adobe marker): its samples are RGB as they are (PS3.5 8.2.1), as
//!   dcmtk and pydicom read them, but dicom-rs' decoder converts them from YCbCr; decoded here
//!   with libjpeg-turbo-rs' colour conversion off (`jpeg-decoder`'s, tried first, differs from
//!   dcmtk by up to 110 levels on pydicom's SC_jpeg_no_color_transform.dcm).
//! - 32-bit RLE Lossless (PS3.5 Annex G): dicom-rs' RLE decoder takes 8 and 16 bits only; the
//!   byte-plane segments are put together here.
//!
//! Also here: 32-bit native pixel data in Explicit VR Big Endian, which dicom-rs reads as 16-bit
//! words (OW) and so holds with the two halves of each value swapped.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::adapters::PixelDataObject;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::pixels::PixelError;

/// JPEG Baseline (process 1) and Extended (processes 2 & 4).
const JPEG_DCT: [&str; 2] = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"];
/// Explicit VR Big Endian (retired, PS3.5 A.3).
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
/// RLE Lossless.
const RLE: &str = "1.2.840.10008.1.2.5";
/// JPEG-LS Lossless and Near-Lossless.
const JPEG_LS: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];

/// What tramy decodes of `ts` beyond dicom-rs' own codecs, in words for the conformance
/// statement; `None` where it adds nothing.
pub fn added_decoding(ts: &str) -> Option<&'static str> {
    // The same words with or without the feature, so the committed statement fits both builds.
    match ts {
        _ if JPEG_LS.contains(&ts) => Some("single-component; colour with the `charls` feature"),
        "1.2.840.10008.1.2.4.51" => Some("8- and 12-bit"),
        _ => None,
    }
}

/// Which of our decoders an object needs, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Jpeg12,
    JpegLs,
    JpegRgb,
    Rle32,
}

/// Replaces encapsulated pixel data that dicom-rs cannot decode (see the module docs) with the
/// decoded native pixel data and marks the object Explicit VR Little Endian. Objects dicom-rs
/// decodes itself are left alone. Returns whether the object changed.
pub fn decode_unsupported(obj: &mut DefaultDicomObject) -> Result<bool, PixelError> {
    if transfer_syntax(obj) == EXPLICIT_VR_BE {
        return Ok(whole_32_bit_values(obj, true));
    }
    let Some(codec) = needed_codec(obj) else {
        return Ok(false);
    };
    if codec == Codec::Rle32 {
        return rle_32_bit(obj).map(|()| true);
    }
    let samples = obj.samples_per_pixel().unwrap_or(1);
    let bits_allocated = obj.bits_allocated().unwrap_or(0);
    if !matches!(bits_allocated, 8 | 16) {
        return Err(decode_error("Bits Allocated must be 8 or 16"));
    }
    let values = decode_all_frames(obj, codec)?;
    replace_pixel_data(
        obj,
        values,
        bits_allocated,
        codec == Codec::Jpeg12 && samples == 3,
    )?;
    mark_native(obj, samples)?;
    Ok(true)
}

/// Every frame's samples, interleaved, each frame checked against Rows × Columns.
fn decode_all_frames(obj: &DefaultDicomObject, codec: Codec) -> Result<Vec<u16>, PixelError> {
    let frames = obj.number_of_frames().unwrap_or(1).max(1);
    let (rows, cols) = (obj.rows().unwrap_or(0), obj.cols().unwrap_or(0));
    let samples = obj.samples_per_pixel().unwrap_or(1);
    let frame_len = usize::from(rows) * usize::from(cols) * usize::from(samples);
    let mut values: Vec<u16> = Vec::new();
    for frame in 0..frames {
        let data = obj
            .frame_pixel_data(frame)
            .ok_or_else(|| decode_error(&format!("frame {} is missing", frame + 1)))?;
        let decoded = match codec {
            Codec::Jpeg12 => decode_jpeg12(&data, rows, cols, samples)?,
            Codec::JpegLs => decode_jpeg_ls(&data, rows, cols, samples)?,
            Codec::JpegRgb => decode_jpeg_rgb(&data)?,
            Codec::Rle32 => return Err(decode_error("32-bit RLE has no 16-bit samples")),
        };
        if decoded.len() != frame_len {
            return Err(decode_error(
                "a frame decodes to another size than Rows × Columns",
            ));
        }
        values.extend_from_slice(&decoded);
    }
    Ok(values)
}

fn transfer_syntax(obj: &DefaultDicomObject) -> &str {
    obj.meta().transfer_syntax().trim_end_matches(['\0', ' '])
}

fn needed_codec(obj: &DefaultDicomObject) -> Option<Codec> {
    let ts = transfer_syntax(obj);
    if ts == RLE && obj.bits_allocated() == Some(32) {
        return Some(Codec::Rle32);
    }
    if JPEG_LS.contains(&ts) {
        // With the `charls` feature dicom-rs has a JPEG-LS decoder of its own.
        let registered = TransferSyntaxRegistry.get(ts)?;
        return (!registered.can_decode_all()).then_some(Codec::JpegLs);
    }
    if JPEG_DCT.contains(&ts) {
        let first = obj.frame_pixel_data(0)?;
        if sample_precision(&first)? > 8 {
            return Some(Codec::Jpeg12);
        }
        let rgb = obj
            .photometric_interpretation()
            .is_some_and(|p| p.trim_end_matches(['\0', ' ']) == "RGB");
        let untransformed =
            !has_app_marker(&first, 0xE0, b"JFIF") && !has_app_marker(&first, 0xEE, b"Adobe");
        return (rgb && obj.samples_per_pixel() == Some(3) && untransformed)
            .then_some(Codec::JpegRgb);
    }
    None
}

/// Whether the marker segments before the first scan hold APPn `marker` starting with `id`.
fn has_app_marker(stream: &[u8], marker: u8, id: &[u8]) -> bool {
    let mut pos = 2;
    while pos + 4 <= stream.len() && stream[pos] == 0xFF && stream[pos + 1] != 0xDA {
        let len = usize::from(u16::from_be_bytes([stream[pos + 2], stream[pos + 3]]));
        if stream[pos + 1] == marker && stream.get(pos + 4..pos + 4 + id.len()) == Some(id) {
            return true;
        }
        pos += 2 + len;
    }
    false
}

fn decode_jpeg_rgb(data: &[u8]) -> Result<Vec<u16>, PixelError> {
    // libjpeg's JCS_YCbCr output: the components as stored, unconverted.
    let mut decoder =
        libjpeg_turbo_rs::Decoder::new(data).map_err(|e| decode_error(&format!("JPEG: {e}")))?;
    decoder.set_output_colorspace(libjpeg_turbo_rs::ColorSpace::YCbCr);
    let image = decoder
        .decode_image()
        .map_err(|e| decode_error(&format!("JPEG: {e}")))?;
    Ok(image.data.into_iter().map(u16::from).collect())
}

/// Holds 32-bit native pixel data as whole 32-bit values (see the module docs): dicom-rs reads
/// Pixel Data (OW) as 16-bit words in the data set's byte order, so a 32-bit value would be
/// written back, in another byte order, as two separately swapped halves.
pub fn whole_32_bit_values(obj: &mut InMemDicomObject, big_endian: bool) -> bool {
    let bits_allocated = obj
        .element(tags::BITS_ALLOCATED)
        .ok()
        .and_then(|e| e.to_int::<u16>().ok());
    if bits_allocated != Some(32) {
        return false;
    }
    let Ok(element) = obj.element(tags::PIXEL_DATA) else {
        return false;
    };
    let values: Vec<u32> = match element.value().primitive() {
        // Words in the data set's order: big endian puts the high half first.
        Some(PrimitiveValue::U16(words)) => words
            .chunks_exact(2)
            .map(|w| match big_endian {
                true => (u32::from(w[0]) << 16) | u32::from(w[1]),
                false => (u32::from(w[1]) << 16) | u32::from(w[0]),
            })
            .collect(),
        Some(PrimitiveValue::U8(bytes)) => bytes
            .chunks_exact(4)
            .map(|b| match big_endian {
                true => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                false => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            })
            .collect(),
        _ => return false,
    };
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U32(values.into()),
    ));
    true
}

/// The sample precision (P) of a JPEG stream's frame header (ITU-T T.81 B.2.2), found by walking
/// the marker segments that precede it.
fn sample_precision(stream: &[u8]) -> Option<u8> {
    let mut pos = 2; // after SOI
    while pos + 4 < stream.len() {
        if stream[pos] != 0xFF {
            return None;
        }
        let marker = stream[pos + 1];
        if marker == 0xFF {
            pos += 1; // fill byte
            continue;
        }
        // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            return stream.get(pos + 4).copied();
        }
        let len = usize::from(u16::from_be_bytes([stream[pos + 2], stream[pos + 3]]));
        pos += 2 + len;
    }
    None
}

fn decode_jpeg12(data: &[u8], rows: u16, cols: u16, samples: u16) -> Result<Vec<u16>, PixelError> {
    // Bound the decode by the image the data set declares, never by what the stream claims.
    let limits = libjpeg_turbo_rs::DecodeLimits {
        max_width: usize::from(cols),
        max_height: usize::from(rows),
        max_pixels: u64::from(rows) * u64::from(cols),
        ..Default::default()
    };
    let image = libjpeg_turbo_rs::decompress_12bit_with_limits(data, &limits)
        .map_err(|e| decode_error(&format!("12-bit JPEG: {e}")))?;
    if image.width != usize::from(cols)
        || image.height != usize::from(rows)
        || image.num_components != usize::from(samples)
    {
        return Err(decode_error(
            "the JPEG stream's size does not match the data set's",
        ));
    }
    // Samples are 0..=4095; the bit pattern is what Pixel Representation interprets.
    Ok(image.data.iter().map(|v| *v as u16).collect())
}

fn decode_jpeg_ls(data: &[u8], rows: u16, cols: u16, samples: u16) -> Result<Vec<u16>, PixelError> {
    if samples != 1 {
        return Err(decode_error(
            "colour JPEG-LS needs the CharLS codec: build tramy with `--features charls` (needs cmake)",
        ));
    }
    let (values, width, height) = jpegls::decode(data, u32::from(cols), u32::from(rows))
        .map_err(|e| decode_error(&format!("JPEG-LS: {e}")))?;
    if width != u32::from(cols) || height != u32::from(rows) {
        return Err(decode_error(
            "the JPEG-LS stream's size does not match the data set's",
        ));
    }
    Ok(values)
}

/// Puts `values` in as native Pixel Data and switches the object to Explicit VR Little Endian.
fn replace_pixel_data(
    obj: &mut DefaultDicomObject,
    values: Vec<u16>,
    bits_allocated: u16,
    ycbcr_converted: bool,
) -> Result<(), PixelError> {
    let element = if bits_allocated == 8 {
        let bytes = values
            .into_iter()
            .map(|v| u8::try_from(v).map_err(|_| decode_error("an 8-bit sample is over 255")))
            .collect::<Result<Vec<u8>, _>>()?;
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(bytes.into()))
    } else {
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(values.into()))
    };
    obj.put(element);
    if ycbcr_converted {
        // The decoder outputs RGB for a YCbCr frame, as libjpeg does (PS3.5 8.2.1).
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("RGB"),
        ));
    }
    Ok(())
}

/// Marks the object Explicit VR Little Endian with interleaved samples: decoders give
/// interleaved samples, whatever Planar Configuration said of the stream.
fn mark_native(obj: &mut DefaultDicomObject, samples: u16) -> Result<(), PixelError> {
    if samples > 1 {
        obj.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        ));
    }
    let native = TransferSyntaxRegistry
        .get(super::EXPLICIT_VR_LE)
        .ok_or_else(|| decode_error("Explicit VR Little Endian is not registered"))?;
    obj.update_meta(|meta| meta.set_transfer_syntax(native));
    Ok(())
}

fn rle_32_bit(obj: &mut DefaultDicomObject) -> Result<(), PixelError> {
    let frames = obj.number_of_frames().unwrap_or(1).max(1);
    let pixels = usize::from(obj.rows().unwrap_or(0)) * usize::from(obj.cols().unwrap_or(0));
    let samples = obj.samples_per_pixel().unwrap_or(1);
    let mut values = Vec::new();
    for frame in 0..frames {
        let data = obj
            .frame_pixel_data(frame)
            .ok_or_else(|| decode_error(&format!("frame {} is missing", frame + 1)))?;
        values.extend(decode_rle_32(&data, pixels, usize::from(samples))?);
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U32(values.into()),
    ));
    mark_native(obj, samples)
}

/// One RLE frame of 32-bit samples (PS3.5 G.3): a header of segment offsets, then one PackBits
/// segment per byte plane, most significant byte of each sample first. Interleaved output.
fn decode_rle_32(frame: &[u8], pixels: usize, samples: usize) -> Result<Vec<u32>, PixelError> {
    let word = |i: usize| {
        frame
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let segments = samples * 4;
    if word(0) != Some(segments) {
        return Err(decode_error(
            "the RLE header does not have one segment per byte plane",
        ));
    }
    let mut values = vec![0u32; pixels * samples];
    for segment in 0..segments {
        let start = word(segment + 1).ok_or_else(|| decode_error("RLE header too short"))?;
        let end = if segment + 1 < segments {
            word(segment + 2)
        } else {
            Some(frame.len())
        };
        let bytes = frame
            .get(start..end.unwrap_or(0).max(start))
            .ok_or_else(|| decode_error("an RLE segment lies outside the frame"))?;
        let plane = unpack_bits(bytes, pixels)?;
        let (sample, shift) = (segment / 4, 24 - 8 * (segment % 4));
        for (pixel, byte) in plane.into_iter().enumerate() {
            values[pixel * samples + sample] |= u32::from(byte) << shift;
        }
    }
    Ok(values)
}

/// PackBits (PS3.5 G.3.1), stopping at `len` bytes.
fn unpack_bits(mut input: &[u8], len: usize) -> Result<Vec<u8>, PixelError> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let (&n, rest) = input
            .split_first()
            .ok_or_else(|| decode_error("an RLE segment decodes short"))?;
        let n = n as i8;
        if n >= 0 {
            let count = n as usize + 1;
            let literal = rest
                .get(..count)
                .ok_or_else(|| decode_error("an RLE literal run is cut off"))?;
            out.extend_from_slice(literal);
            input = &rest[count..];
        } else if n != -128 {
            let byte = *rest
                .first()
                .ok_or_else(|| decode_error("an RLE replicate run is cut off"))?;
            out.extend(std::iter::repeat_n(byte, (1 - i16::from(n)) as usize));
            input = &rest[1..];
        } else {
            input = rest;
        }
    }
    out.truncate(len);
    Ok(out)
}

fn decode_error(reason: &str) -> PixelError {
    PixelError::Decode(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_precision_is_read_from_the_frame_header() {
        // SOI, APP0 (length 4), SOF1 with P = 12.
        let stream = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xC1, 0x00, 0x0B, 0x0C, 0x00,
        ];
        assert_eq!(sample_precision(&stream), Some(12));
    }

    #[test]
    fn packbits_runs_and_literals_unpack() {
        // Literal of 2, replicate 3 times, no-op, literal of 1.
        let input = [0x01, 7, 8, 0xFE, 9, 0x80, 0x00, 5];
        assert_eq!(unpack_bits(&input, 6).unwrap(), [7, 8, 9, 9, 9, 5]);
        assert!(
            unpack_bits(&input[..3], 6).is_err(),
            "short input is refused"
        );
    }

    #[test]
    fn app_markers_before_the_scan_are_found() {
        let stream = [
            0xFF, 0xD8, 0xFF, 0xEE, 0x00, 0x07, b'A', b'd', b'o', b'b', b'e', 0xFF, 0xDA, 0x00,
        ];
        assert!(has_app_marker(&stream, 0xEE, b"Adobe"));
        assert!(!has_app_marker(&stream, 0xE0, b"JFIF"));
    }

    #[test]
    fn a_stream_without_a_frame_header_has_no_precision() {
        assert_eq!(
            sample_precision(&[0xFF, 0xD8, 0x00, 0x00, 0x00, 0x00]),
            None
        );
        assert_eq!(
            sample_precision(&[0xFF, 0xD8, 0xFF, 0xE0, 0xFF, 0xFF]),
            None
        );
    }
}
