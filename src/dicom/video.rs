//! Video transfer syntaxes (MPEG-2, H.264, H.265): frames decoded, and H.264/H.265 clips remuxed
//! into MP4, by Debian's `ffmpeg` run as a child process.
//!
//! PS3.5 8.2.5-8.2.8: the whole video stream is one frame item of the encapsulated Pixel Data,
//! possibly split into several fragments, which together form the stream; the Basic Offset
//! Table is empty. Number of Frames counts the stream's pictures.
//!
//! Why a child process and not bindings: FFmpeg's libraries through Rust bindings tie the build
//! to one FFmpeg version's headers and put a codec's crash inside tramy; a child is killed on a
//! deadline, its output is capped, and a build without ffmpeg still compiles and runs (decoding
//! then fails with [`VideoError::NoFfmpeg`]). `ffmpeg-sidecar` was not used: its value is
//! downloading ffmpeg and parsing progress events, while this needs stdin in, capped stdout out
//! and a kill on a deadline, which std::process does in a few lines. Nothing is written to disk.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use dicom_object::file::{OpenFileOptions, ReadPreamble};

/// MPEG-2 Main Profile @ Main Level.
pub const MPEG2_MPML: &str = "1.2.840.10008.1.2.4.100";
/// MPEG-2 Main Profile @ High Level.
pub const MPEG2_MPHL: &str = "1.2.840.10008.1.2.4.101";
/// H.264 High Profile / Level 4.1 (the first of .102-.106).
pub const H264_HP41: &str = "1.2.840.10008.1.2.4.102";
/// HEVC/H.265 Main Profile / Level 5.1.
pub const HEVC_MP51: &str = "1.2.840.10008.1.2.4.107";

/// The codec family of a video transfer syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// MPEG-2 Video (ISO/IEC 13818-2), .100 and .101 (and their fragmentable forms).
    Mpeg2,
    /// H.264 / MPEG-4 AVC, .102 to .106.
    H264,
    /// H.265 / HEVC, .107 and .108.
    H265,
}

impl VideoCodec {
    /// The codec of a transfer syntax, `None` when it is not a video syntax.
    pub fn of(uid: &str) -> Option<VideoCodec> {
        let uid = uid.trim_end_matches(['\0', ' ']);
        let rest = uid.strip_prefix("1.2.840.10008.1.2.4.")?;
        // The fragmentable variants (.100.1 and so on, PS3.5 8.2.5.2) carry the same streams.
        let number = rest.split('.').next()?.parse::<u32>().ok()?;
        match number {
            100 | 101 => Some(VideoCodec::Mpeg2),
            102..=106 => Some(VideoCodec::H264),
            107 | 108 => Some(VideoCodec::H265),
            _ => None,
        }
    }

    /// ffmpeg's demuxer for the elementary stream.
    fn demuxer(self) -> &'static str {
        match self {
            VideoCodec::Mpeg2 => "mpegvideo",
            VideoCodec::H264 => "h264",
            VideoCodec::H265 => "hevc",
        }
    }
}

/// Whether `uid` is one of the video transfer syntaxes (PS3.5 8.2.5-8.2.8).
pub fn is_video_transfer_syntax(uid: &str) -> bool {
    VideoCodec::of(uid).is_some()
}

/// Why frames could not be decoded or a clip remuxed.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The ffmpeg executable is missing.
    #[error("video frames need ffmpeg: install Debian's ffmpeg (or set [video] ffmpeg)")]
    NoFfmpeg,
    /// The stored object does not parse, or is not a video instance.
    #[error("the stored object cannot be read as video: {0}")]
    Read(String),
    /// A frame beyond the clip.
    #[error("frame {frame} does not exist; the clip has {frames} frames (numbered from 0)")]
    NoSuchFrame {
        /// Requested (0-based).
        frame: u32,
        /// Number of Frames.
        frames: u32,
    },
    /// More frames asked for at once than `[video] max_frames_per_call`.
    #[error("{asked} frames asked for in one call; at most {limit} are decoded at once")]
    TooManyFrames {
        /// Asked for.
        asked: usize,
        /// The limit.
        limit: u32,
    },
    /// ffmpeg refused the stream or stopped short.
    #[error("the video stream cannot be decoded: {0}")]
    Decode(String),
    /// ffmpeg ran past the deadline and was killed.
    #[error("decoding the video took longer than {0} s and was stopped")]
    Timeout(u64),
    /// The clip cannot go into the container asked for without re-encoding.
    #[error("{0}")]
    NotRemuxable(String),
}

/// How ffmpeg is run; `[video]` in the configuration.
#[derive(Debug, Clone)]
pub struct VideoSettings {
    /// The ffmpeg executable (a name looked up in PATH, or a path).
    pub ffmpeg: PathBuf,
    /// Wall-clock limit of one ffmpeg run; the child is killed past it.
    pub timeout: Duration,
    /// Most frames one call decodes.
    pub max_frames_per_call: u32,
    /// Most decoded bytes (rows x columns x 3 x frames) one call may produce.
    pub max_decoded_bytes: u64,
}

impl Default for VideoSettings {
    fn default() -> Self {
        VideoSettings {
            ffmpeg: PathBuf::from("ffmpeg"),
            timeout: Duration::from_secs(60),
            max_frames_per_call: 1024,
            max_decoded_bytes: 1 << 30,
        }
    }
}

static SETTINGS: OnceLock<VideoSettings> = OnceLock::new();

/// Sets how ffmpeg is run, once at start-up (`tramy serve`, `tramy worker`); later calls are
/// ignored. Without it the defaults apply.
pub fn configure(settings: VideoSettings) {
    let _ = SETTINGS.set(settings);
}

fn settings() -> &'static VideoSettings {
    SETTINGS.get_or_init(VideoSettings::default)
}

/// A video instance's stream and what its attributes say about it.
#[derive(Debug)]
pub struct Clip {
    /// The codec of its transfer syntax.
    pub codec: VideoCodec,
    /// Rows and Columns.
    pub rows: u32,
    /// Columns.
    pub columns: u32,
    /// Number of Frames (1 when absent).
    pub frames: u32,
    /// Frames per second from Frame Time (PS3.3 C.7.6.5.1.1) or Cine Rate; 25 when neither.
    pub frame_rate: f64,
    /// The elementary stream: every fragment of the one frame item, joined.
    pub stream: Vec<u8>,
}

/// The stream of a Part 10 video instance (PS3.5 8.2.5-8.2.8: the fragments together).
pub fn clip(part10: &[u8]) -> Result<Clip, VideoError> {
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(Cursor::new(part10))
        .map_err(|e| VideoError::Read(e.to_string()))?;
    let ts = obj.meta().transfer_syntax().to_string();
    let codec = VideoCodec::of(&ts)
        .ok_or_else(|| VideoError::Read(format!("transfer syntax {ts} is not a video syntax")))?;
    let number = |tag| {
        obj.get(tag)
            .and_then(|e| e.to_int::<i64>().ok())
            .and_then(|v| u32::try_from(v).ok())
    };
    let (rows, columns) = match (number(tags::ROWS), number(tags::COLUMNS)) {
        (Some(r), Some(c)) if r > 0 && c > 0 => (r, c),
        _ => return Err(VideoError::Read("Rows or Columns missing".into())),
    };
    let frames = number(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    let frame_time = obj
        .get(tags::FRAME_TIME)
        .and_then(|e| e.to_float64().ok())
        .filter(|ms| ms.is_finite() && *ms > 0.0);
    let frame_rate = frame_time
        .map(|ms| 1000.0 / ms)
        .or_else(|| number(tags::CINE_RATE).filter(|r| *r > 0).map(f64::from))
        .unwrap_or(25.0)
        .clamp(0.1, 1000.0);
    let fragments = obj
        .get(tags::PIXEL_DATA)
        .and_then(|e| e.value().fragments())
        .ok_or_else(|| VideoError::Read("no encapsulated pixel data".into()))?;
    Ok(Clip {
        codec,
        rows,
        columns,
        frames,
        frame_rate,
        stream: fragments.concat(),
    })
}

/// Decodes the given frames (0-based, in the order asked) of a Part 10 video instance to RGB.
/// Only those frames leave ffmpeg (its `select` filter); a frame beyond Number of Frames is
/// an error naming the count.
pub fn decode_frames(part10: &[u8], frames: &[u32]) -> Result<Vec<image::RgbImage>, VideoError> {
    let clip = clip(part10)?;
    decode_clip_frames(&clip, frames)
}

/// [`decode_frames`] on a clip already read.
pub fn decode_clip_frames(clip: &Clip, frames: &[u32]) -> Result<Vec<image::RgbImage>, VideoError> {
    let limits = settings();
    if let Some(&frame) = frames.iter().find(|f| **f >= clip.frames) {
        return Err(VideoError::NoSuchFrame {
            frame,
            frames: clip.frames,
        });
    }
    let mut wanted: Vec<u32> = frames.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    if wanted.len() > limits.max_frames_per_call as usize {
        return Err(VideoError::TooManyFrames {
            asked: wanted.len(),
            limit: limits.max_frames_per_call,
        });
    }
    let frame_len = clip.rows as usize * clip.columns as usize * 3;
    let expected = frame_len as u64 * wanted.len() as u64;
    if expected > limits.max_decoded_bytes {
        return Err(VideoError::TooManyFrames {
            asked: wanted.len(),
            limit: (limits.max_decoded_bytes / frame_len as u64) as u32,
        });
    }
    let select = select_expression(&wanted);
    let args = [
        "-f".into(),
        clip.codec.demuxer().into(),
        "-i".into(),
        "pipe:0".into(),
        "-vf".into(),
        format!("select='{select}'"),
        // Each selected picture once, as decoded: no frame-rate conversion duplicating frames.
        "-fps_mode".into(),
        "passthrough".into(),
        "-frames:v".into(),
        wanted.len().to_string(),
        "-f".into(),
        "rawvideo".into(),
        "-pix_fmt".into(),
        "rgb24".into(),
        "pipe:1".into(),
    ];
    let raw = run_ffmpeg(&args, &clip.stream, expected as usize)?;
    if raw.len() as u64 != expected {
        let whole = raw.len() / frame_len;
        return Err(VideoError::Decode(if raw.len() % frame_len == 0 {
            format!(
                "the stream gave {whole} of the {} frames asked for; it holds fewer frames than Number of Frames ({}) states",
                wanted.len(),
                clip.frames
            )
        } else {
            format!(
                "the stream's picture size differs from Rows x Columns ({}x{})",
                clip.rows, clip.columns
            )
        }));
    }
    let decoded: Vec<image::RgbImage> = raw
        .chunks_exact(frame_len)
        .map(|f| image::RgbImage::from_raw(clip.columns, clip.rows, f.to_vec()))
        .collect::<Option<_>>()
        .ok_or_else(|| VideoError::Decode("decoded frame size mismatch".into()))?;
    Ok(frames
        .iter()
        .filter_map(|f| wanted.binary_search(f).ok().map(|i| decoded[i].clone()))
        .collect())
}

/// ffmpeg's `select` expression for sorted, distinct frame numbers: runs with a common step as
/// one `between`/`mod` term each (triage samples every k-th frame), the terms summed as a
/// balanced tree, since ffmpeg's expression parser refuses a long flat chain (about 100 terms).
fn select_expression(wanted: &[u32]) -> String {
    let mut terms = Vec::new();
    let mut i = 0;
    while i < wanted.len() {
        let first = wanted[i];
        let step = wanted.get(i + 1).map(|n| n - first);
        let mut last = i;
        if let Some(step) = step {
            while wanted
                .get(last + 1)
                .is_some_and(|n| n - wanted[last] == step)
            {
                last += 1;
            }
        }
        terms.push(match (step, last - i) {
            (Some(1), n) if n > 0 => format!("between(n\\,{first}\\,{})", wanted[last]),
            (Some(step), n) if n > 0 => format!(
                "between(n\\,{first}\\,{})*not(mod(n-{first}\\,{step}))",
                wanted[last]
            ),
            _ => format!("eq(n\\,{first})"),
        });
        i = last + 1;
    }
    balanced_sum(&terms)
}

fn balanced_sum(terms: &[String]) -> String {
    match terms {
        [] => "0".into(),
        [one] => one.clone(),
        _ => {
            let (a, b) = terms.split_at(terms.len() / 2);
            format!("({}+{})", balanced_sum(a), balanced_sum(b))
        }
    }
}

/// The clip as an MP4 file (fragmented, so it is written to a pipe), its H.264 or H.265 stream
/// copied without re-encoding. MPEG-2 is refused: MP4 may hold MPEG-2 video, but browsers, the
/// reason to ask for MP4, do not play it.
pub fn to_mp4(part10: &[u8]) -> Result<Vec<u8>, VideoError> {
    let clip = clip(part10)?;
    let tag = match clip.codec {
        VideoCodec::H264 => "avc1",
        // hvc1 (parameter sets in the sample entry) is what Safari and Chrome play.
        VideoCodec::H265 => "hvc1",
        VideoCodec::Mpeg2 => {
            return Err(VideoError::NotRemuxable(
                "MPEG-2 video is not offered as video/mp4: browsers do not play MPEG-2 in MP4 and tramy does not re-encode; retrieve the instance, or its frames with transfer-syntax=*".into(),
            ))
        }
    };
    let args = [
        "-f".into(),
        clip.codec.demuxer().into(),
        "-framerate".into(),
        format!("{:.6}", clip.frame_rate),
        "-i".into(),
        "pipe:0".into(),
        "-c:v".into(),
        "copy".into(),
        "-tag:v".into(),
        tag.into(),
        "-movflags".into(),
        "frag_keyframe+empty_moov+default_base_moof".into(),
        "-f".into(),
        "mp4".into(),
        "pipe:1".into(),
    ];
    // A remux adds a few bytes per sample; twice the stream plus 1 MiB bounds it generously.
    let cap = clip.stream.len() * 2 + (1 << 20);
    let out = run_ffmpeg(&args, &clip.stream, cap)?;
    if out.is_empty() {
        return Err(VideoError::Decode("ffmpeg wrote no MP4".into()));
    }
    Ok(out)
}

/// Runs ffmpeg with `args`, `input` on its stdin; returns its stdout, refusing more than `cap`
/// bytes, and kills it past the configured timeout.
fn run_ffmpeg(args: &[String], input: &[u8], cap: usize) -> Result<Vec<u8>, VideoError> {
    let limits = settings();
    let mut child = Command::new(&limits.ffmpeg)
        .args(["-hide_banner", "-nostats", "-loglevel", "error"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VideoError::NoFfmpeg,
            _ => VideoError::Decode(format!("ffmpeg does not start: {e}")),
        })?;
    let deadline = Instant::now() + limits.timeout;
    let result = std::thread::scope(|scope| {
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        // ffmpeg stops reading once it has the frames asked for: a broken pipe is expected.
        scope.spawn(move || stdin.map(|mut s| s.write_all(input)));
        let errors = scope.spawn(move || {
            let mut text = String::new();
            if let Some(s) = stderr {
                let _ = s.take(16 * 1024).read_to_string(&mut text);
            }
            text
        });
        let (tx, rx) = mpsc::channel();
        scope.spawn(move || {
            let mut out = Vec::new();
            let read = stdout.map(|s| s.take(cap as u64 + 1).read_to_end(&mut out));
            let _ = tx.send((read.is_some(), out));
        });
        let wait = deadline.saturating_duration_since(Instant::now());
        let outcome = match rx.recv_timeout(wait) {
            Ok((_, out)) if out.len() > cap => Err(VideoError::Decode(format!(
                "ffmpeg wrote more than {cap} bytes"
            ))),
            Ok((_, out)) => finish(&mut child, deadline).map(|ok| (ok, out)),
            Err(_) => Err(VideoError::Timeout(limits.timeout.as_secs())),
        };
        if outcome.is_err() {
            // Kill before joining: the reader and writer threads end once the pipes close.
            let _ = child.kill();
            let _ = child.wait();
        }
        let errors = errors.join().unwrap_or_default();
        (outcome, errors)
    });
    match result {
        (Ok((true, out)), _) => Ok(out),
        (Ok((false, _)), errors) => Err(VideoError::Decode(last_line(&errors))),
        (Err(e), _) => Err(e),
    }
}

/// Waits for the child until `deadline`; whether it exited successfully.
fn finish(child: &mut Child, deadline: Instant) -> Result<bool, VideoError> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status.success()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => return Err(VideoError::Timeout(settings().timeout.as_secs())),
            Err(e) => return Err(VideoError::Decode(e.to_string())),
        }
    }
}

/// ffmpeg's last error line, the reason a stream failed (ffmpeg prints no patient data).
fn last_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().chars().take(300).collect())
        .unwrap_or_else(|| "ffmpeg failed without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_syntaxes_are_told_from_others() {
        for uid in [
            MPEG2_MPML,
            MPEG2_MPHL,
            H264_HP41,
            "1.2.840.10008.1.2.4.106",
            HEVC_MP51,
            "1.2.840.10008.1.2.4.108",
            "1.2.840.10008.1.2.4.100.1",
        ] {
            assert!(is_video_transfer_syntax(uid), "{uid}");
        }
        for uid in [
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.109",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.4.1000",
        ] {
            assert!(!is_video_transfer_syntax(uid), "{uid}");
        }
        assert_eq!(
            VideoCodec::of("1.2.840.10008.1.2.4.104\0"),
            Some(VideoCodec::H264)
        );
    }

    #[test]
    fn frame_selection_groups_runs_with_a_step() {
        assert_eq!(select_expression(&[4]), "eq(n\\,4)");
        assert_eq!(select_expression(&[0, 1, 2, 3]), "between(n\\,0\\,3)");
        assert_eq!(
            select_expression(&[0, 5, 10, 12]),
            "(between(n\\,0\\,10)*not(mod(n-0\\,5))+eq(n\\,12))"
        );
        // A thousand scattered frames nest about ten deep, not a thousand.
        let scattered: Vec<u32> = (0..1000).map(|n| n * n).collect();
        let depth = select_expression(&scattered)
            .chars()
            .scan(0i32, |d, c| {
                *d += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                Some(*d)
            })
            .max();
        assert!(depth.is_some_and(|d| d < 16), "{depth:?}");
    }

    #[test]
    fn ffmpegs_last_error_line_is_the_reason() {
        assert_eq!(last_line("a\n[h264] bad\n\n"), "[h264] bad");
        assert_eq!(last_line(""), "ffmpeg failed without a message");
    }
}
