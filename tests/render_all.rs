//! Every image renders: each of pydicom's test files that holds pixel data is stored in tramy and
//! its frame 1 (and last frame) fetched as a PNG under an explicit window, then compared pixel by
//! pixel with pydicom + pylibjpeg's decoding under the same window (Rescale first, PS3.3 C.11.1;
//! linear VOI, PS3.3 C.11.2.1.2.1; colour as RGB), made by `tests/clients/render_reference.py`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;

/// Files pydicom itself cannot decode, deliberately broken by pydicom's authors, and why. Every
/// other file with pixel data must render and match.
const UNDECODABLE: [(&str, &str); 6] = [
    (
        "JPEG-lossy.dcm",
        "JPGExtended.dcm with the scan's spectral end (Se) set to 0: libjpeg refuses it",
    ),
    (
        "JPEG2000-embedded-sequence-delimiter.dcm",
        "a sequence delimiter inside the JPEG 2000 fragment",
    ),
    ("MR_truncated.dcm", "pixel data shorter than Rows × Columns"),
    ("badVR.dcm", "Number of Frames is '1A'"),
    ("meta_missing_tsyntax.dcm", "no Transfer Syntax UID"),
    ("nested_priv_SQ.dcm", "no Bits Allocated: not an image"),
];

/// Files pydicom reads but tramy refuses to store, and why: bad input that ingest rejects
/// (409 with a reason), not a pixel decoding matter. Pinned so that accepting them one day moves
/// them into the comparison.
const REFUSED_AT_INGEST: [(&str, &str); 1] = [(
    "SC_rgb_jpeg.dcm",
    "data set in Implicit VR while its transfer syntax says explicit",
)];

/// Most a rendered 8-bit level may differ from the reference: rounding of the window alone for
/// lossless data; for lossy data decoders may differ in IDCT/wavelet rounding and colour
/// conversion (libjpeg vs jpeg-decoder vs libjpeg-turbo-rs, OpenJPEG builds).
const LOSSLESS_TOLERANCE: u8 = 1;
const LOSSY_TOLERANCE: u8 = 4;

/// JPEG-LS colour streams (line or sample interleaved) need CharLS.
const NEEDS_CHARLS: [&str; 2] = ["SC_rgb_jls_lossy_line.dcm", "SC_rgb_jls_lossy_sample.dcm"];

fn references(out_dir: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/render_reference.py"))
        .arg(out_dir)
        .output()
        .unwrap();
    assert_success(&out, "render_reference.py");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The largest difference between tramy's rendering of one frame and the reference, or why
/// there is none.
fn rendered_difference(
    server: &TramyServer,
    entry: &serde_json::Value,
    frame: &serde_json::Value,
) -> Result<u8, String> {
    let s = |k: &str| entry[k].as_str().unwrap().to_string();
    let window = match entry["window"].as_array() {
        Some(w) => format!(
            "?window={},{},linear",
            w[0].as_f64().unwrap(),
            w[1].as_f64().unwrap()
        ),
        None => String::new(),
    };
    let path = format!(
        "/dicomweb/studies/{}/series/{}/instances/{}/frames/{}/rendered{window}",
        s("study"),
        s("series"),
        s("sop"),
        frame["number"]
    );
    let png = server.http("GET", &path, &[("Accept", "image/png")], b"");
    if png.status != 200 {
        return Err(format!(
            "frame {}: {} {}",
            frame["number"],
            png.status,
            String::from_utf8_lossy(&png.body)
        ));
    }
    let image = image::load_from_memory(&png.body).map_err(|e| e.to_string())?;
    let got = if entry["mode"] == "RGB" {
        image.to_rgb8().into_raw()
    } else {
        image.to_luma8().into_raw()
    };
    let expected = std::fs::read(frame["reference"].as_str().unwrap()).unwrap();
    if got.len() != expected.len() || image.width() as u64 != entry["columns"].as_u64().unwrap() {
        return Err(format!(
            "frame {}: {}×{} ({} samples), want {}×{} ({})",
            frame["number"],
            image.width(),
            image.height(),
            got.len(),
            entry["columns"],
            entry["rows"],
            expected.len()
        ));
    }
    Ok(got
        .iter()
        .zip(&expected)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0))
}

fn store(server: &TramyServer, file: &str) -> Result<(), String> {
    let (content_type, body) = stow_body(&[std::fs::read(file).unwrap()]);
    let stored = server.http(
        "POST",
        "/dicomweb/studies",
        &[("Content-Type", content_type.as_str())],
        &body,
    );
    if stored.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "STOW-RS {}: {}",
            stored.status,
            String::from_utf8_lossy(&stored.body)
        ))
    }
}

/// Stores one reference entry's file and checks what tramy makes of it: a report line, or the
/// failure.
fn check(server: &TramyServer, entry: &serde_json::Value, name: &str) -> Result<String, String> {
    let stored = store(server, entry["file"].as_str().unwrap());
    if NEEDS_CHARLS.contains(&name) && !cfg!(feature = "charls") {
        // Without CharLS the refusal names the feature that decodes it.
        return match stored.and_then(|()| rendered_difference(server, entry, &entry["frames"][0])) {
            Err(reason) if reason.contains("406") && reason.contains("--features charls") => {
                Ok(format!("{name}: 406 naming --features charls, as expected"))
            }
            other => Err(format!(
                "{name}: want a 406 naming the feature, got {other:?}"
            )),
        };
    }
    if let Some((_, why)) = REFUSED_AT_INGEST.iter().find(|(n, _)| *n == name) {
        return match stored {
            Err(reason) if reason.starts_with("STOW-RS 409") => {
                Ok(format!("{name}: refused at ingest as expected ({why})"))
            }
            other => Err(format!("{name}: expected a 409 ({why}), got {other:?}")),
        };
    }
    let tolerance = if entry["lossy"].as_bool().unwrap() {
        LOSSY_TOLERANCE
    } else {
        LOSSLESS_TOLERANCE
    };
    let worst = stored
        .and_then(|()| {
            entry["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|frame| rendered_difference(server, entry, frame))
                .try_fold(0, |worst, d| d.map(|d| worst.max(d)))
        })
        .map_err(|reason| format!("{name}: {reason}"))?;
    let line = format!(
        "{name} ({}): max difference {worst} (tolerance {tolerance})",
        entry["ts"].as_str().unwrap()
    );
    if worst > tolerance {
        return Err(line);
    }
    Ok(line)
}

#[test]
fn every_pydicom_test_image_renders_like_pydicom_and_pylibjpeg_decode_it() {
    // Several files share UIDs (one MR in many transfer syntaxes): each replaces the last.
    let server = TramyServer::start_with_config(
        "[triage]\nenabled = false\n[ingest]\non_conflict = \"overwrite\"\nfsync = false\n",
    );
    let out_dir = tempfile::tempdir().unwrap();
    let entries = references(out_dir.path());
    let mut undecodable = BTreeMap::new();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for entry in &entries {
        let name = entry["name"].as_str().unwrap().to_string();
        if let Some(error) = entry["error"].as_str() {
            undecodable.insert(name, error.to_string());
            continue;
        }
        match check(&server, entry, &name) {
            Ok(line) => report.push(line),
            Err(failure) => failures.push(failure),
        }
    }
    println!("{}", report.join("\n"));
    let expected: BTreeMap<String, String> = UNDECODABLE
        .iter()
        .map(|(name, why)| (name.to_string(), why.to_string()))
        .collect();
    assert_eq!(
        undecodable.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the files pydicom cannot decode are exactly the known broken ones: {undecodable:#?}"
    );
    assert!(
        report.len() >= 80,
        "pydicom's test files were found: {report:#?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The files whose decoding is tramy's own (`dicom/codecs.rs`, `dicom/presentation.rs`).
const OWN_DECODING: [&str; 6] = [
    "JPGExtended.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "SC_jpeg_no_color_transform.dcm",
    "SC_rgb_rle_32bit.dcm",
    "examples_palette.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
];

fn uids(file: &str) -> (String, String, String) {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::open_file(file).unwrap();
    let t = |tag| tramy::dicom::attributes::text(&obj, tag);
    (
        t(tags::STUDY_INSTANCE_UID),
        t(tags::SERIES_INSTANCE_UID),
        t(tags::SOP_INSTANCE_UID),
    )
}

#[test]
fn thumbnails_wado_uri_and_native_frames_use_the_same_decoders() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    for name in ["JPGExtended.dcm", "MR_small_jpeg_ls_lossless.dcm"] {
        let file = pydicom_test_file(name);
        store(&server, &file).unwrap();
        let (study, series, sop) = uids(&file);
        let instance = format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}");
        let thumbnail = server.http(
            "GET",
            &format!("{instance}/thumbnail"),
            &[("Accept", "image/jpeg")],
            b"",
        );
        assert_eq!(thumbnail.status, 200, "{name} thumbnail");
        assert!(image::load_from_memory(&thumbnail.body).is_ok(), "{name}");
        let wado = server.http(
            "GET",
            &format!("/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}&contentType=image/jpeg"),
            &[],
            b"",
        );
        assert_eq!(wado.status, 200, "{name} WADO-URI JPEG");
        assert_eq!(&wado.body[..2], b"\xFF\xD8", "{name}: a JPEG");
        // Without transfer-syntax=* the frame is decoded to Explicit VR Little Endian.
        let frame = server.http(
            "GET",
            &format!("{instance}/frames/1"),
            &[(
                "Accept",
                "multipart/related; type=\"application/octet-stream\"",
            )],
            b"",
        );
        assert_eq!(frame.status, 200, "{name} native frame");
        let obj = dicom_object::open_file(&file).unwrap();
        let text = |tag| {
            tramy::dicom::attributes::text(&obj, tag)
                .parse::<usize>()
                .unwrap()
        };
        use dicom_dictionary_std::tags;
        let native = text(tags::ROWS) * text(tags::COLUMNS) * 2;
        assert!(
            frame.body.len() >= native,
            "{name}: a {}-byte native frame, want at least {native}",
            frame.body.len()
        );
    }
}

#[test]
fn triage_preprocessing_takes_every_image_rendering_takes() {
    let manifest: tramy::triage::manifest::ModelManifest = toml::from_str(
        &std::fs::read_to_string(repo_root().join("models/chest-xray-pneumonia/model.toml"))
            .unwrap(),
    )
    .unwrap();
    for name in OWN_DECODING {
        let part10 = std::fs::read(pydicom_test_file(name)).unwrap();
        let (tensor, _) = tramy::triage::preprocess::from_dicom(&part10, &manifest)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (lo, hi) = tensor
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        assert!(hi > lo, "{name}: the model input is not blank");
    }
}

#[test]
fn damaged_pixel_data_in_tramys_own_decoders_is_refused_or_rendered_never_a_crash() {
    // xorshift64: deterministic damage, so a failure names a reproducible variant.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let options = tramy::dicom::pixels::RenderOptions {
        window: None,
        viewport: None,
        format: tramy::dicom::pixels::RenderedFormat::Png,
    };
    for name in OWN_DECODING {
        let original = std::fs::read(pydicom_test_file(name)).unwrap();
        // Pixel Data comes last in these files: damage the last half, where it lies.
        let start = original.len() / 2;
        for variant in 0..50 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 8 {
                let at = start + (next() as usize) % (bytes.len() - start);
                bytes[at] ^= 1 << (next() % 8);
            }
            if variant % 5 == 0 {
                bytes.truncate(start + (next() as usize) % (bytes.len() - start));
            }
            // Ok or a refusal; the test fails only by crashing, hanging or panicking outside
            // the decoders' containment.
            let _ = tramy::dicom::pixels::render(&bytes, 1, &options);
        }
    }
}
