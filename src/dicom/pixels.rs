//! Pixel data: decoding for transcoding and rendering (dicom-pixeldata), without I/O.
//!
//! Decoders available: native, RLE, JPEG (baseline, extended 8- and 12-bit, lossless), JPEG 2000
//! (openjp2), deflate, and JPEG-LS (single-component in pure Rust; colour with the `charls`
//! feature). The 12-bit JPEG and JPEG-LS decoders dicom-rs lacks are in `codecs.rs`, applied
//! here when an object is opened, so every caller gets them.

use std::io::Cursor;

use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{
    ConvertOptions, DecodedPixelData, PixelDecoder, Transcode, VoiLutOption, WindowLevel,
};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use image::imageops::FilterType;

/// Why pixels could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    /// The stored object does not parse.
    #[error("the stored object cannot be read: {0}")]
    Read(String),
    /// No pixel data, or a codec we do not have.
    #[error("cannot decode the pixel data: {0}")]
    Decode(String),
    /// The requested transfer syntax is unknown or cannot be encoded.
    #[error("cannot convert to transfer syntax {0}")]
    Target(String),
    /// The frame does not exist.
    #[error("frame {frame} does not exist; the instance has {frames}")]
    NoSuchFrame {
        /// Requested (1-based).
        frame: u32,
        /// Available.
        frames: u32,
    },
    /// Image encoding failed.
    #[error("cannot encode the image: {0}")]
    Encode(String),
}

/// Runs third-party pixel code that can panic on damaged data (dicom-rs' RLE decoder indexes past
/// a segment that decodes short) and turns a panic into `on_panic(reason)`: damaged pixel data is
/// bad input, refused like any other, and never takes a worker down.
pub fn contained<T, E>(
    f: impl FnOnce() -> Result<T, E>,
    on_panic: impl FnOnce(String) -> E,
) -> Result<T, E> {
    let outer = CONTAINING.replace(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINING.set(outer);
    result.unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "decoder failure".into());
        Err(on_panic(format!("the pixel data is damaged ({reason})")))
    })
}

thread_local! {
    static CONTAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside [`contained`]: a panic hook uses it to tell a decoder's panic on
/// damaged input (refused, logged quietly) from a bug.
pub fn is_contained() -> bool {
    CONTAINING.get()
}

/// Whether a Part 10 file's File Meta group names a video transfer syntax (PS3.5 8.2.5-8.2.8):
/// its frames are decoded by `video`, not dicom-rs.
pub fn is_video(part10: &[u8]) -> bool {
    part10
        .get(128..)
        .and_then(|rest| dicom_object::meta::FileMetaTable::from_reader(rest).ok())
        .is_some_and(|meta| super::video::is_video_transfer_syntax(meta.transfer_syntax()))
}

/// Frames (0-based) of a video instance, with the video errors as pixel errors (frames 1-based).
pub fn video_frames(part10: &[u8], frames: &[u32]) -> Result<Vec<image::RgbImage>, PixelError> {
    super::video::decode_frames(part10, frames).map_err(|e| match e {
        super::video::VideoError::NoSuchFrame { frame, frames } => PixelError::NoSuchFrame {
            frame: frame.saturating_add(1),
            frames,
        },
        super::video::VideoError::Read(reason) => PixelError::Read(reason),
        other => PixelError::Decode(other.to_string()),
    })
}

/// Parses a Part 10 file, with pixel data dicom-rs cannot decode already decoded to native
/// (`codecs::decode_unsupported`).
fn open(part10: &[u8]) -> Result<DefaultDicomObject, PixelError> {
    let mut obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(Cursor::new(part10))
        .map_err(|e| PixelError::Read(e.to_string()))?;
    super::unknown_vr::resolve(&mut obj);
    super::codecs::decode_unsupported(&mut obj)?;
    Ok(obj)
}

/// [`open`], then palette colour and uncompressed YBR_FULL_422 as RGB (`presentation`): what
/// rendering and triage see; never what WADO-RS serves.
fn open_for_display(part10: &[u8]) -> Result<DefaultDicomObject, PixelError> {
    let mut obj = open(part10)?;
    super::presentation::for_display(&mut obj)?;
    Ok(obj)
}

/// Converts a Part 10 file to `target` (decoding compressed pixel data when needed) and returns
/// the new Part 10 file.
pub fn transcode(part10: &[u8], target: &str) -> Result<Vec<u8>, PixelError> {
    contained(|| transcode_unguarded(part10, target), PixelError::Decode)
}

fn transcode_unguarded(part10: &[u8], target: &str) -> Result<Vec<u8>, PixelError> {
    let ts = TransferSyntaxRegistry
        .get(target)
        .ok_or_else(|| PixelError::Target(target.to_string()))?;
    let mut obj = open(part10)?;
    obj.transcode(ts)
        .map_err(|e| PixelError::Decode(e.to_string()))?;
    let mut out = Vec::with_capacity(part10.len() * 2);
    obj.write_all(&mut out)
        .map_err(|e| PixelError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes the given frames (1-based) of a Part 10 file to native little-endian sample bytes,
/// as WADO-RS sends uncompressed frames (PS3.18 8.7.3.3.2).
pub fn decode_frames(part10: &[u8], wanted: &[usize]) -> Result<Vec<Vec<u8>>, PixelError> {
    if is_video(part10) {
        // Video frames decode to interleaved 8-bit RGB.
        let zero_based: Vec<u32> = wanted
            .iter()
            .map(|&n| u32::try_from(n).unwrap_or(u32::MAX).saturating_sub(1))
            .collect();
        return video_frames(part10, &zero_based)
            .map(|images| images.into_iter().map(image::RgbImage::into_raw).collect());
    }
    decoded_with(open, part10, |decoded| {
        let frames = decoded.number_of_frames();
        wanted
            .iter()
            .map(|&n| {
                let frame = u32::try_from(n).unwrap_or(u32::MAX);
                if frame == 0 || frame > frames {
                    return Err(PixelError::NoSuchFrame { frame, frames });
                }
                decoded
                    .frame_data(frame - 1)
                    .map(<[u8]>::to_vec)
                    .map_err(|e| PixelError::Decode(e.to_string()))
            })
            .collect()
    })
}

/// Image format of a rendered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderedFormat {
    /// JPEG with a quality from 1 to 100.
    Jpeg(u8),
    /// PNG (lossless).
    Png,
}

impl RenderedFormat {
    /// The media type.
    pub fn media_type(self) -> &'static str {
        match self {
            RenderedFormat::Jpeg(_) => "image/jpeg",
            RenderedFormat::Png => "image/png",
        }
    }
}

/// How to render (PS3.18 8.3.5.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderOptions {
    /// Window centre and width; `None` uses the image's own (or a full-range window).
    pub window: Option<(f64, f64)>,
    /// Fit inside this many columns and rows, keeping the aspect ratio.
    pub viewport: Option<(u32, u32)>,
    /// Output format.
    pub format: RenderedFormat,
}

/// Decodes `frame` (1-based) of a Part 10 file to an 8-bit image through the VOI window
/// (`None`: the image's own, or its full range when it has none).
pub fn frame_image(
    part10: &[u8],
    frame: u32,
    window: Option<(f64, f64)>,
) -> Result<image::DynamicImage, PixelError> {
    if is_video(part10) {
        // Windowing does not apply to video: its frames are display-ready colour.
        let mut images = video_frames(part10, &[frame.saturating_sub(1)])?;
        return images
            .pop()
            .map(image::DynamicImage::ImageRgb8)
            .ok_or_else(|| PixelError::Decode("no frame decoded".into()));
    }
    with_decoded(part10, |decoded| {
        let frames = decoded.number_of_frames();
        if frame == 0 || frame > frames {
            return Err(PixelError::NoSuchFrame { frame, frames });
        }
        let voi = match window {
            Some((center, width)) if width > 0.0 => {
                VoiLutOption::Custom(WindowLevel { center, width })
            }
            Some(_) => VoiLutOption::Normalize,
            None => VoiLutOption::Default,
        };
        to_8bit_image(decoded, frame - 1, &voi)
    })
}

/// Opens a Part 10 file for display, decodes its pixel data once and hands it to `f`, all
/// inside [`contained`]: the one place tramy decodes pixels for rendering and triage input.
pub fn with_decoded<T>(
    part10: &[u8],
    f: impl FnOnce(&DecodedPixelData<'_>) -> Result<T, PixelError>,
) -> Result<T, PixelError> {
    decoded_with(open_for_display, part10, f)
}

fn decoded_with<T>(
    open: fn(&[u8]) -> Result<DefaultDicomObject, PixelError>,
    part10: &[u8],
    f: impl FnOnce(&DecodedPixelData<'_>) -> Result<T, PixelError>,
) -> Result<T, PixelError> {
    contained(
        || {
            let obj = open(part10)?;
            let decoded = obj
                .decode_pixel_data()
                .map_err(|e| PixelError::Decode(e.to_string()))?;
            f(&decoded)
        },
        PixelError::Decode,
    )
}

/// Frame `frame` (0-based) of decoded pixels as an 8-bit image through `voi`; images whose
/// window cannot be applied fall back to the full range of their values.
pub fn to_8bit_image(
    decoded: &DecodedPixelData<'_>,
    frame: u32,
    voi: &VoiLutOption,
) -> Result<image::DynamicImage, PixelError> {
    decoded
        .to_dynamic_image_with_options(
            frame,
            &ConvertOptions::new().with_voi_lut(voi.clone()).force_8bit(),
        )
        .or_else(|_| {
            decoded.to_dynamic_image_with_options(
                frame,
                &ConvertOptions::new()
                    .with_voi_lut(VoiLutOption::Normalize)
                    .force_8bit(),
            )
        })
        .or_else(|e| {
            if decoded.samples_per_pixel() == 3 {
                rgb_from_32_bit(decoded, frame).map_err(|_| e)
            } else {
                grey_from_values(decoded, frame, voi).map_err(|_| e)
            }
        })
        .map_err(|e| PixelError::Decode(e.to_string()))
}

/// The values of a single-sample frame after the Modality LUT (rescale), for any bits
/// allocated: dicom-pixeldata converts only 8 and 16 bits, so 32-bit frames (RT Dose grids)
/// are read here from the decoded bytes, which dicom-rs keeps little endian.
fn frame_values(decoded: &DecodedPixelData<'_>, frame: u32) -> Result<Vec<f64>, PixelError> {
    if decoded.bits_allocated() != 32 {
        return decoded
            .to_vec_frame(frame)
            .map_err(|e| PixelError::Decode(e.to_string()));
    }
    let bytes = decoded
        .frame_data(frame)
        .map_err(|e| PixelError::Decode(e.to_string()))?;
    let signed = matches!(
        decoded.pixel_representation(),
        dicom_pixeldata::PixelRepresentation::Signed
    );
    let (slope, intercept) = decoded
        .rescale()
        .ok()
        .and_then(|r| r.first().map(|r| (r.slope, r.intercept)))
        .unwrap_or((1.0, 0.0));
    Ok(bytes
        .chunks_exact(4)
        .map(|b| {
            let raw = [b[0], b[1], b[2], b[3]];
            let v = if signed {
                i32::from_le_bytes(raw) as f64
            } else {
                u32::from_le_bytes(raw) as f64
            };
            v * slope + intercept
        })
        .collect())
}

/// A single-sample frame that dicom-pixeldata cannot turn into an image (32-bit pixels, such as
/// RT Dose grids), windowed here: through a custom window, else over the frame's full range.
fn grey_from_values(
    decoded: &DecodedPixelData<'_>,
    frame: u32,
    voi: &VoiLutOption,
) -> Result<image::DynamicImage, PixelError> {
    if decoded.samples_per_pixel() != 1 {
        return Err(PixelError::Decode("not a single-sample image".into()));
    }
    let values = frame_values(decoded, frame)?;
    let (low, high) = match voi {
        // PS3.3 C.11.2.1.2.1 (LINEAR): x <= c - 0.5 - (w-1)/2 is black, x > c - 0.5 + (w-1)/2
        // white, linear in between.
        VoiLutOption::Custom(WindowLevel { center, width }) if *width > 1.0 => (
            center - 0.5 - (width - 1.0) / 2.0,
            center - 0.5 + (width - 1.0) / 2.0,
        ),
        VoiLutOption::Custom(WindowLevel { center, width }) if *width > 0.0 => {
            (center - width / 2.0, center + width / 2.0)
        }
        _ => values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            }),
    };
    let span = (high - low).max(f64::MIN_POSITIVE);
    let invert = matches!(
        decoded.photometric_interpretation(),
        dicom_pixeldata::PhotometricInterpretation::Monochrome1
    );
    let grey: Vec<u8> = values
        .iter()
        .map(|v| {
            let level = ((v - low) / span).clamp(0.0, 1.0) * 255.0;
            let level = if invert { 255.0 - level } else { level };
            level.round() as u8
        })
        .collect();
    image::GrayImage::from_raw(decoded.columns(), decoded.rows(), grey)
        .map(image::DynamicImage::ImageLuma8)
        .ok_or_else(|| PixelError::Decode("pixel count does not match the image size".into()))
}

/// A 32-bit RGB frame (dicom-pixeldata converts 8 and 16 bits only), each sample scaled from
/// Bits Stored to 8 bits; colour images have no VOI window.
fn rgb_from_32_bit(
    decoded: &DecodedPixelData<'_>,
    frame: u32,
) -> Result<image::DynamicImage, PixelError> {
    if decoded.bits_allocated() != 32 {
        return Err(PixelError::Decode("not a 32-bit image".into()));
    }
    let bytes = decoded
        .frame_data(frame)
        .map_err(|e| PixelError::Decode(e.to_string()))?;
    let max = ((1u64 << decoded.bits_stored().clamp(1, 32)) - 1) as f64;
    let rgb: Vec<u8> = bytes
        .chunks_exact(4)
        .map(|b| {
            let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64;
            (v / max * 255.0).round().clamp(0.0, 255.0) as u8
        })
        .collect();
    image::RgbImage::from_raw(decoded.columns(), decoded.rows(), rgb)
        .map(image::DynamicImage::ImageRgb8)
        .ok_or_else(|| PixelError::Decode("pixel count does not match the image size".into()))
}

/// Renders `frame` (1-based) of a Part 10 file as an 8-bit image.
pub fn render(part10: &[u8], frame: u32, options: &RenderOptions) -> Result<Vec<u8>, PixelError> {
    let image = frame_image(part10, frame, options.window)?;
    let image = match options.viewport {
        Some((w, h)) if w > 0 && h > 0 && (w < image.width() || h < image.height()) => {
            image.resize(w, h, FilterType::Triangle)
        }
        _ => image,
    };
    let mut out = Cursor::new(Vec::new());
    match options.format {
        RenderedFormat::Jpeg(quality) => {
            let rgb = image.to_rgb8();
            let mut encoder =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
            encoder
                .encode_image(&rgb)
                .map_err(|e| PixelError::Encode(e.to_string()))?;
        }
        RenderedFormat::Png => image
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| PixelError::Encode(e.to_string()))?,
    }
    Ok(out.into_inner())
}
