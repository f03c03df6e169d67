//! How fast a clip runs: the frames per second a multi-frame image or video declares (PS3.3
//! C.7.6.5 Cine Module: Frame Time (0018,1063) in milliseconds, Cine Rate (0018,0040); C.7.6.2
//! / C.8.x: Recommended Display Frame Rate (0008,2144)), so that triage can sample a clip in
//! time rather than by frame count.

use std::io::Cursor;

use dicom_dictionary_std::tags;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use dicom_object::InMemDicomObject;

use super::attributes::text;

/// The frames per second `obj` declares; None when it declares none (or nonsense).
pub fn frames_per_second(obj: &InMemDicomObject) -> Option<f64> {
    let number = |tag| {
        text(obj, tag)
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0)
    };
    number(tags::FRAME_TIME)
        .map(|ms| 1000.0 / ms)
        .or_else(|| number(tags::CINE_RATE))
        .or_else(|| number(tags::RECOMMENDED_DISPLAY_FRAME_RATE))
        .filter(|fps| fps.is_finite() && *fps <= 1000.0)
}

/// [`frames_per_second`] of a Part 10 file, reading its header only (up to Pixel Data).
pub fn frames_per_second_of(part10: &[u8]) -> Option<f64> {
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .from_reader(Cursor::new(part10))
        .ok()?;
    frames_per_second(&obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn with(tag: dicom_core::Tag, vr: VR, value: &str) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        obj
    }

    #[test]
    fn frame_time_then_cine_rate_then_recommended_rate() {
        assert_eq!(
            frames_per_second(&with(tags::FRAME_TIME, VR::DS, "40")),
            Some(25.0)
        );
        assert_eq!(
            frames_per_second(&with(tags::CINE_RATE, VR::IS, "30")),
            Some(30.0)
        );
        assert_eq!(
            frames_per_second(&with(tags::RECOMMENDED_DISPLAY_FRAME_RATE, VR::IS, "24")),
            Some(24.0)
        );
        assert_eq!(
            frames_per_second(&with(tags::FRAME_TIME, VR::DS, "0")),
            None
        );
        assert_eq!(frames_per_second(&InMemDicomObject::new_empty()), None);
    }
}
