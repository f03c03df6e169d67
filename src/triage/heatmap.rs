//! Occlusion sensitivity maps (Zeiler & Fergus, 2014): a model-agnostic picture of where a model
//! looked. Each cell of a grid over the input is covered in turn (with zero in the model's input
//! space); the drop in the label's probability is that cell's importance. All occluded copies go
//! through the model as one batch.
//!
//! For a model made for an anatomy (issue #13), only the cells its gate finds the anatomy in are
//! covered, and the map is drawn inside the anatomy alone: a finding in the lungs is looked for
//! in the lungs, and the cells outside cost no inference.

use std::io::Cursor;

use image::{DynamicImage, GrayImage, Rgb, RgbImage};
use ndarray::{s, Array4, Axis};

use super::manifest::Layout;
use super::model::LoadedModel;

/// Cells per side of the occlusion grid.
pub const GRID: usize = 8;

/// Why no map could be made.
#[derive(Debug, thiserror::Error)]
pub enum HeatmapError {
    /// The model has no such label.
    #[error("model {model} has no label {label:?}")]
    NoSuchLabel {
        /// Model.
        model: String,
        /// Label.
        label: String,
    },
    /// Inference failed.
    #[error(transparent)]
    Model(#[from] super::model::ModelError),
    /// The image could not be encoded.
    #[error("cannot encode the heatmap: {0}")]
    Encode(String),
    /// The instance's pixels cannot be made into the model's input.
    #[error(transparent)]
    Image(#[from] super::preprocess::PreprocessError),
    /// The instance's first frame cannot be rendered.
    #[error("cannot render the image: {0}")]
    Render(String),
}

/// Importance of each grid cell for `label` on the single-image batch `input`, in 0..=1
/// (row-major, `GRID` × `GRID`), and the unoccluded probability.
pub fn occlusion(
    model: &LoadedModel,
    input: &Array4<f32>,
    label: &str,
) -> Result<(Vec<f32>, f32), HeatmapError> {
    occlusion_of_cells(model, input, label, &[true; GRID * GRID])
}

/// [`occlusion`] over the cells marked in `cells` (row-major); the others get 0 and cost
/// nothing.
pub fn occlusion_of_cells(
    model: &LoadedModel,
    input: &Array4<f32>,
    label: &str,
    cells: &[bool],
) -> Result<(Vec<f32>, f32), HeatmapError> {
    let index = model
        .manifest
        .labels
        .iter()
        .position(|l| l.name == label)
        .ok_or_else(|| HeatmapError::NoSuchLabel {
            model: model.manifest.name.clone(),
            label: label.to_string(),
        })?;
    let baseline = model.infer(input)?[0][index].probability;
    let (h, w) = match model.manifest.input.layout {
        Layout::Nchw => (input.shape()[2], input.shape()[3]),
        Layout::Nhwc => (input.shape()[1], input.shape()[2]),
    };
    // Zero in the model's input space: black for scaled inputs, the mean for normalised ones.
    let fill = 0.0;
    let single = input.index_axis(Axis(0), 0);
    let covered: Vec<usize> = (0..GRID * GRID)
        .filter(|&c| cells.get(c).copied().unwrap_or(false))
        .collect();
    if covered.is_empty() {
        return Ok((vec![0.0; GRID * GRID], baseline));
    }
    let mut batch = Array4::<f32>::zeros((
        covered.len(),
        input.shape()[1],
        input.shape()[2],
        input.shape()[3],
    ));
    for (&cell, mut copy) in covered.iter().zip(batch.outer_iter_mut()) {
        copy.assign(&single);
        let (gy, gx) = (cell / GRID, cell % GRID);
        let (y0, y1) = (gy * h / GRID, (gy + 1) * h / GRID);
        let (x0, x1) = (gx * w / GRID, (gx + 1) * w / GRID);
        match model.manifest.input.layout {
            Layout::Nchw => copy.slice_mut(s![.., y0..y1, x0..x1]).fill(fill),
            Layout::Nhwc => copy.slice_mut(s![y0..y1, x0..x1, ..]).fill(fill),
        }
    }
    let mut drops = vec![0.0_f32; GRID * GRID];
    for (&cell, scores) in covered.iter().zip(model.infer(&batch)?) {
        drops[cell] = (baseline - scores[index].probability).max(0.0);
    }
    let max = drops.iter().cloned().fold(0.0_f32, f32::max);
    Ok((
        drops
            .iter()
            .map(|d| if max > 0.0 { d / max } else { 0.0 })
            .collect(),
        baseline,
    ))
}

/// Overlays the importance grid on `image` (red = important) and encodes a PNG; with a
/// `mask` (an anatomy gate's), only inside it.
pub fn overlay_png(
    image: &DynamicImage,
    importance: &[f32],
    mask: Option<&GrayImage>,
) -> Result<Vec<u8>, HeatmapError> {
    let grey: GrayImage = image.to_luma8();
    let (w, h) = grey.dimensions();
    let out = RgbImage::from_fn(w, h, |x, y| {
        let cell = ((y as usize * GRID / h as usize).min(GRID - 1)) * GRID
            + (x as usize * GRID / w as usize).min(GRID - 1);
        let inside = mask.is_none_or(|m| super::gate::covers(m, x, y, w, h));
        let heat = if inside {
            importance.get(cell).copied().unwrap_or(0.0)
        } else {
            0.0
        };
        let g = f32::from(grey.get_pixel(x, y)[0]);
        Rgb([
            (g * (1.0 - 0.6 * heat) + 255.0 * 0.6 * heat) as u8,
            (g * (1.0 - 0.6 * heat)) as u8,
            (g * (1.0 - 0.6 * heat)) as u8,
        ])
    });
    png(DynamicImage::ImageRgb8(out))
}

fn png(image: DynamicImage) -> Result<Vec<u8>, HeatmapError> {
    let mut png = Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| HeatmapError::Encode(e.to_string()))?;
    Ok(png.into_inner())
}

/// The heatmap of `label` on the first frame of a Part 10 file, as a PNG of that frame: over
/// the whole image, or inside the anatomy `gate` finds (for a model made for an anatomy).
///
/// For a model cropped to the endoscope's field of view (`field_of_view`, the field-of-view
/// model), the map is of the cropped frame, drawn on it: what the model scores.
pub fn heatmap_png(
    model: &LoadedModel,
    gate: Option<&LoadedModel>,
    field_of_view: Option<&LoadedModel>,
    part10: &[u8],
    label: &str,
) -> Result<Vec<u8>, HeatmapError> {
    let (mut images, _) = super::preprocess::images_from_dicom(part10, &model.manifest)?;
    images.truncate(1);
    let cropped = match (field_of_view, images.first()) {
        (Some(f), Some(frame)) => {
            let found = super::field_of_view::estimate(f, &[frame.to_rgb8()])?;
            Some(super::field_of_view::crop(
                frame,
                found.first().copied().flatten().as_ref(),
            ))
        }
        _ => None,
    };
    let first = match &cropped {
        Some(c) => std::slice::from_ref(c),
        None => &images[..],
    };
    let input = super::preprocess::from_images(first, &model.manifest);
    let mask = match gate {
        Some(gate) => Some(mask_of(
            gate,
            super::preprocess::first_frame_input(&gate.manifest, &model.manifest, &images, part10)?,
        )?),
        None => None,
    };
    let cells = match &mask {
        Some(m) => super::gate::cells_inside(m, GRID),
        None => vec![true; GRID * GRID],
    };
    let (importance, _) = occlusion_of_cells(model, &input, label, &cells)?;
    let image = match cropped {
        Some(c) => c,
        None => rendered(part10)?,
    };
    overlay_png(&image, &importance, mask.as_ref())
}

/// The anatomy `gate` finds on the first frame of a Part 10 file, at the gate's input size.
pub fn anatomy_mask(gate: &LoadedModel, part10: &[u8]) -> Result<GrayImage, HeatmapError> {
    let (images, _) = super::preprocess::images_from_dicom(part10, &gate.manifest)?;
    let input = super::preprocess::from_images(&images[..1.min(images.len())], &gate.manifest);
    mask_of(gate, input)
}

/// The gate's mask for its input of one image.
fn mask_of(gate: &LoadedModel, input: ndarray::Array4<f32>) -> Result<GrayImage, HeatmapError> {
    let mut masks = super::gate::masks(gate, &input)?;
    Ok(masks.pop().unwrap_or_default())
}

/// The anatomy `gate` finds on the first frame, as a PNG overlay of the frame's size: the
/// anatomy green and half transparent, the rest fully transparent, for a viewer to lay over
/// the image.
pub fn anatomy_overlay_png(gate: &LoadedModel, part10: &[u8]) -> Result<Vec<u8>, HeatmapError> {
    let mask = anatomy_mask(gate, part10)?;
    let frame = rendered(part10)?;
    let (w, h) = (frame.width(), frame.height());
    let overlay = image::RgbaImage::from_fn(w, h, |x, y| {
        if super::gate::covers(&mask, x, y, w, h) {
            image::Rgba([0, 200, 80, 110])
        } else {
            image::Rgba([0, 0, 0, 0])
        }
    });
    png(DynamicImage::ImageRgba8(overlay))
}

fn rendered(part10: &[u8]) -> Result<DynamicImage, HeatmapError> {
    crate::dicom::pixels::frame_image(part10, 1, None)
        .map_err(|e| HeatmapError::Render(e.to_string()))
}
