//! WADO-RS frames as OHIF asks for them (PS3.18 8.7.3.5): with `transfer-syntax=*` the stored
//! bitstream goes out, each part naming its transfer syntax; an image tramy cannot decode is
//! still served as stored, never refused with 406.

mod common;

use std::process::Command;

use common::*;

const OHIF_ACCEPT: &str = "multipart/related; type=application/octet-stream; transfer-syntax=*";

fn uids(file: &str) -> (String, String, String) {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::open_file(repo_root().join("dicom-samples").join(file)).unwrap();
    let t = |tag| tramy::dicom::attributes::text(&obj, tag);
    (
        t(tags::STUDY_INSTANCE_UID),
        t(tags::SERIES_INSTANCE_UID),
        t(tags::SOP_INSTANCE_UID),
    )
}

fn frames_url(file: &str, list: &str) -> String {
    let (study, series, sop) = uids(file);
    format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{list}")
}

/// The part headers of a multipart body (the frames are binary; headers are ASCII lines).
fn part_content_types(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("Content-Type: "))
        .map(str::to_string)
        .collect()
}

fn start_with(files: &[&str]) -> TramyServer {
    let server = TramyServer::start();
    let paths: Vec<_> = files
        .iter()
        .map(|f| repo_root().join("dicom-samples").join(f))
        .collect();
    let paths: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    server.store_files(&paths, "the samples");
    server
}

#[test]
fn dicomweb_client_gets_every_samples_frames_as_stored_with_their_transfer_syntax() {
    let server = TramyServer::start();
    let files = samples();
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    server.store_files(&paths, "every sample");
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/frames_check.py"))
        .env("TRAMY_TOKEN", server.token())
        .arg(server.dicomweb())
        .args(&files)
        .output()
        .expect("frames_check.py runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(result["ok"], true, "{}", result["details"]);
}

#[test]
fn a_jpeg_extended_frame_ohif_asks_for_is_the_stored_bitstream_not_a_406() {
    let server = start_with(&["nm_jpeg_extended.dcm"]);
    let r = server.http(
        "GET",
        &frames_url("nm_jpeg_extended.dcm", "1"),
        &[("Accept", OHIF_ACCEPT)],
        b"",
    );
    assert_eq!(r.status, 200, "{:?}", r.header("warning"));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("multipart/related; type=\"application/octet-stream\""),
        "{:?}",
        r.header("content-type")
    );
    assert_eq!(
        part_content_types(&r.body),
        ["application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.51"]
    );
    // The 6830-byte stored fragment, not 1024 x 256 x 2 decoded bytes.
    assert!(r.body.len() < 8000, "{} bytes", r.body.len());
    let soi = r.body.windows(2).position(|w| w == [0xFF, 0xD8]);
    assert!(soi.is_some(), "a JPEG bitstream");
}

#[test]
fn ultrasound_frames_ohif_asks_for_stay_compressed_and_a_plain_octet_stream_is_decoded() {
    let server = start_with(&["us_multiframe_jpeg.dcm"]);
    let url = frames_url("us_multiframe_jpeg.dcm", "1,30");
    let r = server.http("GET", &url, &[("Accept", OHIF_ACCEPT)], b"");
    assert_eq!(r.status, 200, "{:?}", r.header("warning"));
    assert_eq!(
        part_content_types(&r.body),
        ["application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"; 2]
    );
    assert!(
        r.body.len() < 20_000,
        "two ~6 kB JPEG frames: {} bytes",
        r.body.len()
    );

    // Without transfer-syntax, octet-stream means Explicit VR Little Endian (PS3.18 8.7.3.5.2):
    // decoded 240 x 320 RGB frames, named so.
    let r = server.http(
        "GET",
        &url,
        &[(
            "Accept",
            "multipart/related; type=\"application/octet-stream\"",
        )],
        b"",
    );
    assert_eq!(r.status, 200, "{:?}", r.header("warning"));
    assert_eq!(
        part_content_types(&r.body),
        ["application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"; 2]
    );
    assert!(r.body.len() > 2 * 240 * 320 * 3, "{} bytes", r.body.len());

    // A syntax tramy cannot produce from the stored one is refused with the way out.
    let r = server.http(
        "GET",
        &url,
        &[(
            "Accept",
            "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.90",
        )],
        b"",
    );
    assert_eq!(r.status, 406);
    assert!(r.header("warning").unwrap().contains("transfer-syntax=*"));
}
