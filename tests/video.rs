//! Video Endoscopic clips in MPEG-2, H.264 and H.265 (issue 14 item 1): stored as received over
//! DIMSE and STOW-RS, their frames decoded by tramy exactly as ffmpeg decodes the same stream,
//! rendered, thumbnailed and served as MP4; a damaged stream refused with a reason.
//! Clips are made at test time by tests/clients/make_video_clip.py with Debian's ffmpeg.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;

/// One generated clip.
struct Clip {
    file: PathBuf,
    stream: PathBuf,
    study: String,
    series: String,
    sop: String,
    frames: u32,
}

impl Clip {
    fn url(&self, tail: &str) -> String {
        format!(
            "/dicomweb/studies/{}/series/{}/instances/{}{tail}",
            self.study, self.series, self.sop
        )
    }
}

fn ffmpeg_available() -> bool {
    Command::new("ffmpeg").arg("-version").output().is_ok()
}

fn make_clip(dir: &Path, codec: &str, frames: u32, seed: u32, extra: &[&str]) -> Clip {
    let file = dir.join(format!("{codec}-{seed}.dcm"));
    let stream = dir.join(format!("{codec}-{seed}.bin"));
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/make_video_clip.py"))
        .args([codec, &frames.to_string(), &seed.to_string()])
        .arg(&file)
        .arg("--stream")
        .arg(&stream)
        .args(extra)
        .output()
        .expect("python runs");
    assert_success(&out, "make_video_clip.py");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let text = |k: &str| json[k].as_str().expect(k).to_string();
    Clip {
        file,
        stream,
        study: text("study"),
        series: text("series"),
        sop: text("sop"),
        frames,
    }
}

const CODECS: [&str; 3] = ["mpeg2", "h264", "h265"];

fn stow(server: &TramyServer, file: &Path) {
    let (ct, body) = stow_body(&[std::fs::read(file).unwrap()]);
    let r = server.http(
        "POST",
        "/dicomweb/studies",
        &[("Content-Type", &ct), ("Accept", "application/dicom+json")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn retrieved_dataset(server: &TramyServer, clip: &Clip) -> Vec<u8> {
    let r = server.http(
        "GET",
        &clip.url(""),
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    single_part_dataset(&r.body)
}

/// ffmpeg's own decoding of frame `k` (0-based) of the elementary stream, as RGB.
fn ffmpeg_frame(stream: &Path, k: u32) -> image::RgbImage {
    let png = stream.with_extension(format!("ref{k}.png"));
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(stream)
        .args([
            "-vf",
            &format!("select=eq(n\\,{k})"),
            "-fps_mode",
            "passthrough",
            "-frames:v",
            "1",
            "-pix_fmt",
            "rgb24",
            "-f",
            "image2",
        ])
        .arg(&png)
        .output()
        .expect("ffmpeg runs");
    assert_success(&out, "ffmpeg reference frame");
    image::open(&png).expect("reference PNG").to_rgb8()
}

fn rendered_png(server: &TramyServer, clip: &Clip, frame: u32) -> image::RgbImage {
    let r = server.http(
        "GET",
        &clip.url(&format!("/frames/{frame}/rendered")),
        &[("Accept", "image/png")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/png"));
    image::load_from_memory(&r.body).expect("PNG").to_rgb8()
}

#[test]
fn clips_in_each_video_syntax_are_stored_as_received_over_dimse_and_stow_rs() {
    if !ffmpeg_available() {
        eprintln!("skipped: ffmpeg is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TramyServer::start();
    for codec in CODECS {
        let by_dimse = make_clip(dir.path(), codec, 12, 1, &[]);
        let by_stow = make_clip(dir.path(), codec, 12, 2, &[]);
        server.store_files(&[&by_dimse.file], codec);
        stow(&server, &by_stow.file);
        for clip in [&by_dimse, &by_stow] {
            assert!(
                retrieved_dataset(&server, clip) == dataset_bytes(&clip.file),
                "{codec}: the retrieved data set differs from what was sent"
            );
        }
    }
}

#[test]
fn decoded_frames_match_ffmpegs_own_decoding_pixel_for_pixel() {
    if !ffmpeg_available() {
        eprintln!("skipped: ffmpeg is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TramyServer::start();
    for codec in CODECS {
        let clip = make_clip(dir.path(), codec, 20, 3, &[]);
        server.store_files(&[&clip.file], codec);
        for k in [0, 7, clip.frames - 1] {
            let ours = rendered_png(&server, &clip, k + 1);
            let reference = ffmpeg_frame(&clip.stream, k);
            assert_eq!(
                ours.dimensions(),
                reference.dimensions(),
                "{codec} frame {k}"
            );
            assert!(
                ours.as_raw() == reference.as_raw(),
                "{codec} frame {k}: tramy's decoding differs from ffmpeg's"
            );
            // A native frame request decodes to the same interleaved RGB.
            let r = server.http(
                "GET",
                &clip.url(&format!("/frames/{}", k + 1)),
                &[(
                    "Accept",
                    "multipart/related; type=\"application/octet-stream\"",
                )],
                b"",
            );
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            assert!(
                r.body
                    .windows(reference.as_raw().len())
                    .any(|w| w == reference.as_raw().as_slice()),
                "{codec} frame {k}: the decoded native frame is not ffmpeg's RGB"
            );
        }
        // Consecutive frames differ: the right frame is chosen, not the first one again.
        assert_ne!(
            rendered_png(&server, &clip, 1).as_raw(),
            rendered_png(&server, &clip, 2).as_raw(),
            "{codec}"
        );
        // transfer-syntax=* keeps sending the stored bitstream, once, whatever frame is named.
        let r = server.http(
            "GET",
            &clip.url("/frames/5"),
            &[(
                "Accept",
                "multipart/related; type=application/octet-stream; transfer-syntax=*",
            )],
            b"",
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let stream = std::fs::read(&clip.stream).unwrap();
        assert!(
            r.body.windows(stream.len()).any(|w| w == stream.as_slice()),
            "{codec}: the stored stream is not in the answer"
        );
        // A frame beyond the clip is not found, and the answer names the count.
        let r = server.http(
            "GET",
            &clip.url("/frames/21/rendered"),
            &[("Accept", "image/png")],
            b"",
        );
        assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains("20"));
    }
}

/// ffprobe's codec name and counted frames of an MP4.
fn probe_mp4(path: &Path) -> (String, u32) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert_success(&out, "ffprobe");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (codec, frames) = text.split_once(',').expect("codec,frames");
    (codec.to_string(), frames.parse().expect("frame count"))
}

#[test]
fn clips_render_thumbnail_and_remux_to_mp4() {
    if !ffmpeg_available() {
        eprintln!("skipped: ffmpeg is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TramyServer::start();
    for codec in CODECS {
        let clip = make_clip(dir.path(), codec, 15, 4, &[]);
        stow(&server, &clip.file);
        let r = server.http(
            "GET",
            &clip.url("/rendered"),
            &[("Accept", "image/jpeg")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some("image/jpeg"));
        let jpeg = image::load_from_memory(&r.body).expect("JPEG");
        assert_eq!((jpeg.width(), jpeg.height()), (256, 256));
        let r = server.http(
            "GET",
            &clip.url("/thumbnail"),
            &[("Accept", "image/jpeg")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let thumb = image::load_from_memory(&r.body).expect("JPEG");
        assert!(thumb.width() <= 128 && thumb.height() <= 128);

        let r = server.http(
            "GET",
            &clip.url("/rendered"),
            &[("Accept", "video/mp4")],
            b"",
        );
        if codec == "mpeg2" {
            assert_eq!(r.status, 406, "{}", String::from_utf8_lossy(&r.body));
            assert!(String::from_utf8_lossy(&r.body).contains("MPEG-2"));
            continue;
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some("video/mp4"));
        let mp4 = dir.path().join(format!("{codec}.mp4"));
        std::fs::write(&mp4, &r.body).unwrap();
        let want = if codec == "h264" { "h264" } else { "hevc" };
        assert_eq!(probe_mp4(&mp4), (want.to_string(), clip.frames), "{codec}");
    }
}

#[test]
fn a_damaged_stream_is_refused_with_a_reason_promptly() {
    if !ffmpeg_available() {
        eprintln!("skipped: ffmpeg is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TramyServer::start();
    for (codec, damage) in [
        ("h264", "random"),
        ("h265", "truncate"),
        ("mpeg2", "random"),
    ] {
        let clip = make_clip(dir.path(), codec, 20, 5, &["--corrupt", damage]);
        server.store_files(&[&clip.file], codec);
        let started = Instant::now();
        let r = server.http(
            "GET",
            &clip.url("/frames/19/rendered"),
            &[("Accept", "image/png")],
            b"",
        );
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert_eq!(r.status, 406, "{codec} {damage}: {body}");
        assert!(body.contains("video stream cannot be decoded"), "{body}");
        // A liveness bound, generous for two busy cores: never a hang until the 60 s timeout.
        assert!(started.elapsed().as_secs() < 30, "{codec} {damage}");
    }
    // The server still serves after the refusals.
    assert_eq!(server.http_get("/healthz").map(|(c, _)| c), Some(200));
}

#[test]
fn without_ffmpeg_rendering_a_clip_is_refused_naming_what_to_install() {
    if !ffmpeg_available() {
        eprintln!("skipped: the clip itself needs ffmpeg to be made");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TramyServer::start_with_config("[video]\nffmpeg = \"/nonexistent/ffmpeg\"\n");
    let clip = make_clip(dir.path(), "h264", 5, 6, &[]);
    stow(&server, &clip.file);
    for (path, accept) in [
        ("/rendered", "image/jpeg"),
        ("/thumbnail", "image/jpeg"),
        ("/rendered", "video/mp4"),
    ] {
        let r = server.http("GET", &clip.url(path), &[("Accept", accept)], b"");
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 406, "{path} {accept}: {body}");
        if path != "/thumbnail" {
            assert!(body.contains("install Debian's ffmpeg"), "{body}");
        }
    }
}
