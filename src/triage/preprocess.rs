//! Stored DICOM (or a PNG/JPEG for evaluation sets) to model input, as the manifest says:
//! decode (every transfer syntax with a decoder), modality LUT and VOI window to 8 bits with
//! MONOCHROME1 inverted, resize, scale/offset, per-channel normalisation, layout.

use std::borrow::Cow;

use dicom_pixeldata::{VoiLutOption, WindowLevel};
use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, Pixel};
use ndarray::Array4;
use rayon::prelude::*;

use super::manifest::{Layout, ModelManifest, Window};
use crate::dicom::pixels::{self, PixelError};

/// Why an instance cannot become model input.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// Not readable as DICOM.
    #[error("cannot read the instance: {0}")]
    Read(String),
    /// No pixel data, or no decoder for it.
    #[error("cannot decode the pixel data: {0}")]
    Decode(String),
}

fn filter(name: &str) -> FilterType {
    match name {
        "nearest" => FilterType::Nearest,
        "catmull-rom" => FilterType::CatmullRom,
        "lanczos3" => FilterType::Lanczos3,
        _ => FilterType::Triangle,
    }
}

/// Nearest-neighbour resize sampling each output pixel's centre, `(x + 0.5) * in / out`, with
/// the coordinate accumulated step by step exactly as Pillow's `ImagingScaleAffine` does (and so
/// Keras' `load_img`): a model trained on Pillow-resized images sees the same pixels here.
fn nearest(image: &DynamicImage, width: u32, height: u32) -> DynamicImage {
    let sources = |len_in: u32, len_out: u32| -> Vec<u32> {
        let step = f64::from(len_in) / f64::from(len_out);
        let mut at = step * 0.5;
        (0..len_out)
            .map(|_| {
                let index = (at as u32).min(len_in.saturating_sub(1));
                at += step;
                index
            })
            .collect()
    };
    let columns = sources(image.width(), width);
    let rows = sources(image.height(), height);
    // Only the sampled pixels are converted, not a full-size copy of a 2000-pixel radiograph.
    let out = image::RgbImage::from_fn(width, height, |x, y| {
        image
            .get_pixel(columns[x as usize], rows[y as usize])
            .to_rgb()
    });
    DynamicImage::ImageRgb8(out)
}

/// The frames a model looks at: 1 for single-image models; every `frame_step`-th frame, at most
/// `max_frames`, for per-frame models.
pub fn sampled_frames(manifest: &ModelManifest, number_of_frames: u32) -> Vec<u32> {
    if manifest.task != super::manifest::Task::PerFrame {
        return vec![0];
    }
    let p = &manifest.preprocess;
    (0..number_of_frames.max(1))
        .step_by(p.frame_step as usize)
        .take(p.max_frames as usize)
        .collect()
}

/// The frames a model looks at in a Part 10 file of `number_of_frames`: in time over the whole
/// clip for a model with a `[clip]` rule (at the rate the file declares), else as
/// [`sampled_frames`].
fn frames_of(manifest: &ModelManifest, part10: &[u8], number_of_frames: u32) -> Vec<u32> {
    match (&manifest.clip, manifest.task) {
        (Some(rule), super::manifest::Task::PerFrame) => super::clip::sampled_frames(
            rule,
            manifest.preprocess.frame_step,
            manifest.preprocess.max_frames,
            number_of_frames,
            crate::dicom::cine::frames_per_second_of(part10),
        ),
        _ => sampled_frames(manifest, number_of_frames),
    }
}

/// The model input for a Part 10 file: a batch of one image, or of the sampled frames.
pub fn from_dicom(
    part10: &[u8],
    manifest: &ModelManifest,
) -> Result<(Array4<f32>, Vec<u32>), PreprocessError> {
    let (images, frames) = images_from_dicom(part10, manifest)?;
    Ok((to_tensor(&images, manifest), frames))
}

/// The 8-bit images a model looks at in a Part 10 file (windowed as its manifest says, not yet
/// resized), with their frame numbers: what [`from_images`] turns into its input, and what
/// another model with the same window (an anatomy gate) can share.
pub fn images_from_dicom(
    part10: &[u8],
    manifest: &ModelManifest,
) -> Result<(Vec<DynamicImage>, Vec<u32>), PreprocessError> {
    if pixels::is_video(part10) {
        return video_images(part10, manifest);
    }
    pixels::with_decoded(part10, |decoded| {
        let has_voi = matches!(decoded.window(), Ok(Some(w)) if !w.is_empty())
            || matches!(decoded.voi_lut_sequence(), Ok(Some(l)) if !l.is_empty());
        let voi = match manifest.preprocess.window {
            // 8-bit pixels without a VOI (digitised film, a photo) already are display values,
            // as viewers show them; stretching them to their own min..max would change what a
            // model trained on the original images sees.
            Window::Image if !has_voi && decoded.bits_allocated() == 8 => VoiLutOption::Identity,
            Window::Image => VoiLutOption::Default,
            Window::FullRange => VoiLutOption::Normalize,
            Window::Fixed { center, width } => VoiLutOption::Custom(WindowLevel { center, width }),
        };
        let frames = frames_of(manifest, part10, decoded.number_of_frames());
        // Frames of a clip are independent: convert them in parallel.
        let images = frames
            .par_iter()
            .map(|&f| pixels::to_8bit_image(decoded, f, &voi))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((images, frames))
    })
    .map_err(|e| match e {
        PixelError::Read(reason) => PreprocessError::Read(reason),
        PixelError::Decode(reason) => PreprocessError::Decode(reason),
        other => PreprocessError::Decode(other.to_string()),
    })
}

/// The sampled frames of a video instance (MPEG-2, H.264, H.265), decoded by ffmpeg in one
/// run; windowing does not apply to video.
fn video_images(
    part10: &[u8],
    manifest: &ModelManifest,
) -> Result<(Vec<DynamicImage>, Vec<u32>), PreprocessError> {
    use crate::dicom::video::{self, VideoError};
    let clip = video::clip(part10).map_err(|e| PreprocessError::Read(e.to_string()))?;
    let frames = frames_of(manifest, part10, clip.frames);
    let images = video::decode_clip_frames(&clip, &frames).map_err(|e| match e {
        VideoError::Read(reason) => PreprocessError::Read(reason),
        other => PreprocessError::Decode(other.to_string()),
    })?;
    Ok((
        images.into_iter().map(DynamicImage::ImageRgb8).collect(),
        frames,
    ))
}

/// `manifest`'s input for the first frame of a Part 10 file whose frames were already decoded
/// as `images` for `decoded_for`: those images when the two windows agree (an anatomy gate and
/// its chest model), else a decoding of its own.
pub fn first_frame_input(
    manifest: &ModelManifest,
    decoded_for: &ModelManifest,
    images: &[DynamicImage],
    part10: &[u8],
) -> Result<Array4<f32>, PreprocessError> {
    if manifest.preprocess.window == decoded_for.preprocess.window {
        return Ok(to_tensor(&images[..1.min(images.len())], manifest));
    }
    let (own, _) = images_from_dicom(part10, manifest)?;
    Ok(to_tensor(&own[..1.min(own.len())], manifest))
}

/// The model input for 8-bit images (evaluation sets of PNG/JPEG, or [`images_from_dicom`]).
pub fn from_images(images: &[DynamicImage], manifest: &ModelManifest) -> Array4<f32> {
    to_tensor(images, manifest)
}

fn to_tensor(images: &[DynamicImage], manifest: &ModelManifest) -> Array4<f32> {
    let input = &manifest.input;
    let p = &manifest.preprocess;
    let (h, w, c) = (
        input.height as usize,
        input.width as usize,
        input.channels as usize,
    );
    let mut tensor = match input.layout {
        Layout::Nchw => Array4::<f32>::zeros((images.len(), c, h, w)),
        Layout::Nhwc => Array4::<f32>::zeros((images.len(), h, w, c)),
    };
    for (n, image) in images.iter().enumerate() {
        let resized = if image.width() == input.width && image.height() == input.height {
            Cow::Borrowed(image)
        } else if p.resize_filter == "nearest" {
            Cow::Owned(nearest(image, input.width, input.height))
        } else if image.width() >= 4 * input.width && image.height() >= 4 * input.height {
            // Large reductions (a 2000-pixel radiograph to a 224 input): area-average to twice
            // the target first, which is fast and alias-free, then the manifest's filter.
            Cow::Owned(
                image
                    .thumbnail_exact(input.width * 2, input.height * 2)
                    .resize_exact(input.width, input.height, filter(&p.resize_filter)),
            )
        } else {
            Cow::Owned(image.resize_exact(input.width, input.height, filter(&p.resize_filter)))
        };
        // One conversion, to what the model takes: c samples per pixel, row by row.
        let samples = if c == 1 {
            resized.to_luma8().into_raw()
        } else {
            resized.to_rgb8().into_raw()
        };
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let sample = f32::from(samples[(y * w + x) * c + ch]);
                    let mut v = sample * p.scale + p.offset;
                    if let Some(mean) = p.mean.get(ch) {
                        v -= mean;
                    }
                    if let Some(std) = p.std.get(ch) {
                        v /= std;
                    }
                    match input.layout {
                        Layout::Nchw => tensor[[n, ch, y, x]] = v,
                        Layout::Nhwc => tensor[[n, y, x, ch]] = v,
                    }
                }
            }
        }
    }
    tensor
}
