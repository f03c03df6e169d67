//! Occlusion sensitivity maps (Zeiler & Fergus, 2014): a model-agnostic picture of where a model
//! looked. Each cell of a grid over the input is covered in turn (with zero in the model's input
//! space); the drop in the label's probability is that cell's importance. All occluded copies go
//! through the model as one batch.

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
}

/// Importance of each grid cell for `label` on the single-image batch `input`, in 0..=1
/// (row-major, `GRID` × `GRID`), and the unoccluded probability.
pub fn occlusion(
    model: &LoadedModel,
    input: &Array4<f32>,
    label: &str,
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
    let mut batch = Array4::<f32>::zeros((
        GRID * GRID,
        input.shape()[1],
        input.shape()[2],
        input.shape()[3],
    ));
    for (cell, mut copy) in batch.outer_iter_mut().enumerate() {
        copy.assign(&single);
        let (gy, gx) = (cell / GRID, cell % GRID);
        let (y0, y1) = (gy * h / GRID, (gy + 1) * h / GRID);
        let (x0, x1) = (gx * w / GRID, (gx + 1) * w / GRID);
        match model.manifest.input.layout {
            Layout::Nchw => copy.slice_mut(s![.., y0..y1, x0..x1]).fill(fill),
            Layout::Nhwc => copy.slice_mut(s![y0..y1, x0..x1, ..]).fill(fill),
        }
    }
    let drops: Vec<f32> = model
        .infer(&batch)?
        .iter()
        .map(|scores| (baseline - scores[index].probability).max(0.0))
        .collect();
    let max = drops.iter().cloned().fold(0.0_f32, f32::max);
    Ok((
        drops
            .iter()
            .map(|d| if max > 0.0 { d / max } else { 0.0 })
            .collect(),
        baseline,
    ))
}

/// Overlays the importance grid on `image` (red = important) and encodes a PNG.
pub fn overlay_png(image: &DynamicImage, importance: &[f32]) -> Result<Vec<u8>, HeatmapError> {
    let grey: GrayImage = image.to_luma8();
    let (w, h) = grey.dimensions();
    let out = RgbImage::from_fn(w, h, |x, y| {
        let cell = ((y as usize * GRID / h as usize).min(GRID - 1)) * GRID
            + (x as usize * GRID / w as usize).min(GRID - 1);
        let heat = importance.get(cell).copied().unwrap_or(0.0);
        let g = f32::from(grey.get_pixel(x, y)[0]);
        Rgb([
            (g * (1.0 - 0.6 * heat) + 255.0 * 0.6 * heat) as u8,
            (g * (1.0 - 0.6 * heat)) as u8,
            (g * (1.0 - 0.6 * heat)) as u8,
        ])
    });
    let mut png = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(out)
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| HeatmapError::Encode(e.to_string()))?;
    Ok(png.into_inner())
}
