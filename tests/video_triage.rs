//! Per-study video triage (issue #14): an H.264 Video Endoscopic clip pushed over DIMSE is
//! decoded by ffmpeg, sampled in time (the synthetic demo's `[clip]`: 5 frames a second), each
//! sampled frame scored, and the clip's finding names the frames where the lesion is in view.
//! The clip comes from the synthetic demo's generator with a polyp in its middle third
//! (`tests/clients/make_video_clip.py`).

mod common;

use common::*;
use std::process::Command;

#[test]
fn an_h264_clip_is_triaged_in_time_and_its_finding_names_the_frames_where_the_polyp_is() {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("skipped: ffmpeg is not installed (.ci/run installs it)");
        return;
    }
    pneumonia_model();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("clip.dcm");
    // 90 frames at 25 fps: 3.6 s, the polyp in frames 31-60 (the middle third).
    let made = Command::new(python())
        .arg(repo_root().join("tests/clients/make_video_clip.py"))
        .args(["h264", "90", "5"])
        .arg(&file)
        .output()
        .unwrap();
    assert_success(&made, "make_video_clip.py");
    let clip: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let study = clip["study"].as_str().unwrap().to_string();

    let server = TramyServer::start();
    server.store_files(&[&file], "storescu of the H.264 clip");
    // Sampled at 5 of its 25 frames a second: frames 1, 6, ..., 86 (18), and the clip's finding.
    let findings = wait_for("18 frame findings and the clip's", || {
        let v = server.findings(&study);
        (v.len() == 19).then_some(v)
    });
    let mut frames: Vec<i64> = findings
        .iter()
        .map(|f| f["frame"].as_i64().unwrap())
        .filter(|f| *f > 0)
        .collect();
    frames.sort();
    assert_eq!(frames, (0..18).map(|i| 1 + 5 * i).collect::<Vec<i64>>());
    let whole = findings
        .iter()
        .find(|f| f["frame"] == 0)
        .expect("the clip's finding");
    assert_eq!(whole["flagged"], true, "{whole}");
    let fired: Vec<i64> = whole["fired_frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_i64().unwrap())
        .collect();
    // The smoothing window reaches one sampled frame (5 frames) either side of the polyp.
    assert!(
        !fired.is_empty() && fired.iter().all(|f| (26..=65).contains(f)),
        "fired on {fired:?}, the polyp is in frames 31-60"
    );
    // The report is in the study, a clip group among the frames'.
    let sr = server.http(
        "GET",
        &format!("/dicomweb/studies/{study}/series?Modality=SR"),
        &[("Accept", "application/dicom+json")],
        b"",
    );
    assert_eq!(sr.status, 200, "{}", String::from_utf8_lossy(&sr.body));
}
