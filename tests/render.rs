//! Rendering of pixel data that dicom-pixeldata cannot turn into an image by itself: 32-bit RT
//! Dose grids render, and their pixels match pydicom's reading under the same (full-range)
//! window.

mod common;

use std::process::Command;

use common::*;

/// Frame 1 of `file` through pydicom, windowed over its full range to 8 bits, and its UIDs.
fn pydicom_reference(file: &str) -> (Vec<u8>, [String; 3]) {
    let script = r#"
import sys, numpy, pydicom
ds = pydicom.dcmread(sys.argv[1])
frame = ds.pixel_array[0] if int(getattr(ds, "NumberOfFrames", 1)) > 1 else ds.pixel_array
v = frame.astype(numpy.float64)
lo, hi = v.min(), v.max()
grey = numpy.clip(numpy.round((v - lo) / max(hi - lo, 1e-300) * 255.0), 0, 255).astype(numpy.uint8)
print(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
sys.stdout.flush()
sys.stdout.buffer.write(grey.tobytes())
"#;
    let out = Command::new(python())
        .args(["-c", script, file])
        .output()
        .unwrap();
    assert_success(&out, "pydicom reference");
    let split = out.stdout.iter().position(|b| *b == b'\n').unwrap();
    let uids: Vec<String> = String::from_utf8_lossy(&out.stdout[..split])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    (
        out.stdout[split + 1..].to_vec(),
        [uids[0].clone(), uids[1].clone(), uids[2].clone()],
    )
}

#[test]
fn a_32_bit_rt_dose_renders_like_pydicom_reads_it() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let file = pydicom_test_file("rtdose.dcm");
    let (content_type, body) = stow_body(&[std::fs::read(&file).unwrap()]);
    let stored = server.http(
        "POST",
        "/dicomweb/studies",
        &[("Content-Type", content_type.as_str())],
        &body,
    );
    assert_eq!(
        stored.status,
        200,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );
    let (expected, [study, series, sop]) = pydicom_reference(&file);
    let png = server.http(
        "GET",
        &format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1/rendered"),
        &[("Accept", "image/png")],
        b"",
    );
    assert_eq!(png.status, 200, "{}", String::from_utf8_lossy(&png.body));
    let image = image::load_from_memory(&png.body).unwrap().to_luma8();
    assert_eq!(image.len(), expected.len(), "same size");
    let worst = image
        .as_raw()
        .iter()
        .zip(&expected)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "pixels differ from pydicom's by up to {worst}");
    assert!(
        expected.iter().any(|v| *v > 200),
        "the reference is not blank"
    );
}
