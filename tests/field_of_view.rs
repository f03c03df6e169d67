//! The endoscope field-of-view stage (issue #14): tramy's circle fit with the converted
//! torchcontentarea model gives the circles of the Python reference of the package's algorithm
//! (`models/endoscopy-field-of-view/reference.json`), and an endoscopy clip's frames are cropped
//! to the circle, which is kept with each finding.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn folder() -> PathBuf {
    repo_root().join("models/endoscopy-field-of-view")
}

/// The reference frames (made from their names by `reference_frames.py`) as PNGs in `dir`.
fn reference_frames(dir: &Path) -> serde_json::Value {
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import reference_frames as rf
from PIL import Image
for name in rf.FRAMES:
    Image.fromarray(rf.make(name)).save(f"{sys.argv[2]}/{name}.png")
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .arg(folder())
        .arg(dir)
        .output()
        .unwrap();
    assert_success(&out, "reference_frames.py");
    serde_json::from_slice(&std::fs::read(folder().join("reference.json")).unwrap()).unwrap()
}

fn tramy_circle(frame: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tramy"))
        .args(["models", "run"])
        .arg(folder())
        .arg(frame)
        .output()
        .unwrap();
    assert_success(&out, "tramy models run (field of view)");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn tramys_circle_fit_gives_the_reference_circles_on_every_frame() {
    pneumonia_model();
    let tmp = tempfile::tempdir().unwrap();
    let reference = reference_frames(tmp.path());
    let frames = reference["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 12);
    for f in frames {
        let name = f["name"].as_str().unwrap();
        let ours = tramy_circle(&tmp.path().join(format!("{name}.png")));
        let found = &ours["field_of_view"];
        match f["circle"].as_array() {
            None => assert!(found.is_null(), "{name}: no circle expected, got {ours}"),
            Some(c) => {
                let want: Vec<f64> = c.iter().map(|v| v.as_f64().unwrap()).collect();
                let got = [
                    found["x"].as_f64().unwrap(),
                    found["y"].as_f64().unwrap(),
                    found["radius"].as_f64().unwrap(),
                ];
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 0.5, "{name}: {got:?} vs {want:?}");
                }
                let confidence = found["confidence"].as_f64().unwrap();
                assert!((confidence - want[3]).abs() < 1e-3, "{name}: {ours}");
                assert_eq!(ours["cropped"], confidence >= 0.06, "{name}: {ours}");
            }
        }
    }
}

#[test]
fn the_onnx_conversion_matches_the_torchscript_model_and_the_reference() {
    pneumonia_model();
    let out = Command::new(python())
        .arg(folder().join("convert.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert_success(&out, "endoscopy-field-of-view/convert.py --check");
}

/// Frames `names` of the reference as one multi-frame RGB Video Endoscopic instance at `out`.
fn clip_of_reference_frames(names: &[&str], out: &Path) {
    let script = r#"
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import reference_frames as rf
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
frames = np.stack([rf.make(n) for n in sys.argv[3:]])
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
meta.MediaStorageSOPInstanceUID = generate_uid()
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
ds.PatientName, ds.PatientID, ds.Modality = "SYNTHETIC^FOV", "SYNTH-FOV", "ES"
ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
ds.NumberOfFrames = len(frames)
ds.PixelData = frames.tobytes()
ds.save_as(sys.argv[2], enforce_file_format=True)
"#;
    let made = Command::new(python())
        .args(["-c", script])
        .arg(folder())
        .arg(out)
        .args(names)
        .output()
        .unwrap();
    assert_success(&made, "the reference clip");
}

#[test]
fn an_endoscopy_clips_frames_are_cropped_to_the_field_of_view_kept_with_each_finding() {
    pneumonia_model();
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("clip.dcm");
    let names = [
        "circle-854x480-centred",
        "full-854x480",
        "circle-854x480-offset",
    ];
    clip_of_reference_frames(&names, &clip);
    let study = {
        let obj = dicom_object::open_file(&clip).unwrap();
        tramy::dicom::attributes::text(&obj, dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
    };
    let server = TramyServer::start();
    server.store_files(&[&clip], "storescu of the clip");
    let findings = wait_for("3 frame findings and the clip's", || {
        let v = server.findings(&study);
        (v.len() == 4).then_some(v)
    });
    let frame = |n: i64| {
        findings
            .iter()
            .find(|f| f["frame"] == n)
            .unwrap_or_else(|| panic!("frame {n}: {findings:?}"))
    };
    // Frame 1: the reference circle (426.5, 239.6, 225.7); frame 2 has none.
    let fov = &frame(1)["field_of_view"];
    assert!((fov["x"].as_f64().unwrap() - 426.52).abs() < 0.5, "{fov}");
    assert!(
        (fov["radius"].as_f64().unwrap() - 225.67).abs() < 0.5,
        "{fov}"
    );
    assert!(frame(2)["field_of_view"].is_null(), "{}", frame(2));
    assert!((frame(3)["field_of_view"]["x"].as_f64().unwrap() - 439.61).abs() < 0.5);

    // The heatmap is of what the model scores: the first frame cropped to its circle's
    // bounding box (columns 200-653, rows 13-466), not the whole 854x480 frame.
    let f = frame(1);
    let r = server.http(
        "GET",
        &format!(
            "/api/v1/studies/{study}/series/{}/instances/{}/heatmap?model={}&label=polyp",
            f["series_instance_uid"].as_str().unwrap(),
            f["sop_instance_uid"].as_str().unwrap(),
            f["model"].as_str().unwrap()
        ),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let heat = image::load_from_memory(&r.body).unwrap();
    assert_eq!((heat.width(), heat.height()), (454, 454));
}
