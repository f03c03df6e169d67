//! Anatomy gates (issue #13): before a model made for an anatomy scores an image, a
//! segmentation model finds that anatomy in it, and the mask's area and shape decide whether
//! the image shows it. A tibia labelled `CHEST` has no lung fields, so the chest models never
//! score it; a chest radiograph with no Body Part Examined has two, so they do.
//!
//! The mask also serves what follows: the region a finding refers to in the SR (its convex
//! hull), and the cells of the occlusion heatmap worth computing.

use image::{GrayImage, Luma};
use imageproc::point::Point;
use imageproc::region_labelling::{connected_components, Connectivity};
use ndarray::{Array4, Axis};

use super::manifest::{Anatomy, GateSpec};
use super::model::{LoadedModel, ModelError};

/// A mask pixel inside the anatomy.
const INSIDE: u8 = 255;

/// What a gate found on one image.
#[derive(Debug, Clone)]
pub struct GateVerdict {
    /// The gate that looked: its name and version.
    pub gate: String,
    /// The anatomy looked for.
    pub anatomy: Anatomy,
    /// Share of the frame the anatomy covers.
    pub area_fraction: f32,
    /// Why the image does not show the anatomy; `None` when it does.
    pub refusal: Option<String>,
    /// The mask at the gate's input size: 255 inside the anatomy, 0 outside.
    pub mask: GrayImage,
}

impl GateVerdict {
    /// Whether the image shows the anatomy.
    pub fn passed(&self) -> bool {
        self.refusal.is_none()
    }
}

/// What one region of the anatomy is called in a reason.
pub fn region_noun(anatomy: Anatomy) -> &'static str {
    match anatomy {
        Anatomy::Chest => "lung",
    }
}

/// The gate's masks for a batch of its inputs, one per image.
pub fn masks(gate: &LoadedModel, batch: &Array4<f32>) -> Result<Vec<GrayImage>, ModelError> {
    let spec = spec_of(gate)?;
    let scores = gate.output(batch, &spec.output)?;
    let mismatch = |reason: String| ModelError::Mismatch {
        model: gate.manifest.name.clone(),
        reason,
    };
    let shape = scores.shape().to_vec();
    let [n, classes, h, w] = shape[..] else {
        return Err(mismatch(format!(
            "gate output {} has shape {shape:?}, not [N, classes, H, W]",
            spec.output
        )));
    };
    if n != batch.len_of(Axis(0)) || spec.class >= classes {
        return Err(mismatch(format!(
            "gate output {} has shape {shape:?}: no class {} for {} images",
            spec.output,
            spec.class,
            batch.len_of(Axis(0))
        )));
    }
    let scores = scores
        .into_dimensionality::<ndarray::Ix4>()
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(scores
        .outer_iter()
        .map(|image| {
            GrayImage::from_fn(w as u32, h as u32, |x, y| {
                let (x, y) = (x as usize, y as usize);
                let own = image[[spec.class, y, x]];
                // As argmax decides: the class wins only over every other class's score.
                let wins = (0..classes).all(|c| c == spec.class || own > image[[c, y, x]]);
                Luma([if wins { INSIDE } else { 0 }])
            })
        })
        .collect())
}

/// The gate's `[gate]` table (a loaded gate always has one: the manifest is validated).
pub fn spec_of(gate: &LoadedModel) -> Result<&GateSpec, ModelError> {
    gate.manifest
        .gate
        .as_ref()
        .ok_or_else(|| ModelError::Mismatch {
            model: gate.manifest.name.clone(),
            reason: "not an anatomy gate (no [gate] table)".into(),
        })
}

/// One connected region of a mask.
struct Region {
    pixels: u64,
    centroid_x: f64,
}

/// The connected regions of `mask`, largest first.
fn regions(mask: &GrayImage) -> Vec<Region> {
    let labels = connected_components(mask, Connectivity::Eight, Luma([0u8]));
    let mut sums: Vec<(u64, f64)> = Vec::new();
    for (x, _, label) in labels.enumerate_pixels() {
        let label = label[0] as usize;
        if label == 0 {
            continue;
        }
        if sums.len() < label {
            sums.resize(label, (0, 0.0));
        }
        sums[label - 1].0 += 1;
        sums[label - 1].1 += f64::from(x) + 0.5;
    }
    let mut regions: Vec<Region> = sums
        .into_iter()
        .filter(|(pixels, _)| *pixels > 0)
        .map(|(pixels, x_sum)| Region {
            pixels,
            centroid_x: x_sum / pixels as f64,
        })
        .collect();
    regions.sort_by_key(|r| std::cmp::Reverse(r.pixels));
    regions
}

/// Judges a mask against the thresholds of `gate` (its name and version).
pub fn judge(gate: &str, spec: &GateSpec, mask: GrayImage) -> GateVerdict {
    let frame = f64::from(mask.width()) * f64::from(mask.height());
    let share = |pixels: u64| {
        if frame > 0.0 {
            pixels as f64 / frame
        } else {
            0.0
        }
    };
    let inside = mask.pixels().filter(|p| p[0] == INSIDE).count() as u64;
    let area = share(inside) as f32;
    let noun = region_noun(spec.anatomy);
    let said = format!("{}: {noun} area {:.1}%", spec.refusal, area * 100.0);
    let [min, max] = spec.area_fraction;
    let refusal = if area < min {
        Some(said)
    } else if area > max {
        Some(format!(
            "{said}, more than the {:.0}% the anatomy covers",
            max * 100.0
        ))
    } else {
        shape_refusal(spec, &mask, share, &said)
    };
    GateVerdict {
        gate: gate.to_string(),
        anatomy: spec.anatomy,
        area_fraction: area,
        refusal,
        mask,
    }
}

/// Why the mask's regions do not have the anatomy's shape, if they do not.
fn shape_refusal(
    spec: &GateSpec,
    mask: &GrayImage,
    share: impl Fn(u64) -> f64,
    said: &str,
) -> Option<String> {
    let noun = region_noun(spec.anatomy);
    let regions = regions(mask);
    let large = regions
        .iter()
        .take_while(|r| share(r.pixels) >= f64::from(spec.region_fraction))
        .count();
    if large < spec.regions {
        return Some(format!(
            "{said}, in {large} {noun} field(s) of at least {:.0}% ({} expected)",
            spec.region_fraction * 100.0,
            spec.regions
        ));
    }
    let midline = f64::from(mask.width()) / 2.0;
    let sides = |r: &Region| r.centroid_x < midline;
    if spec.side_by_side && sides(&regions[0]) == sides(&regions[1]) {
        return Some(format!(
            "{said}, but the two {noun} fields are not side by side"
        ));
    }
    None
}

/// The convex hull of the mask's anatomy as a closed polygon in the source image's pixel
/// coordinates (column, row from the top left corner of the top left pixel, PS3.3
/// C.18.6.1.2), for an SR SCOORD: the smallest convex region holding all of it. Empty when
/// the mask is.
pub fn hull(mask: &GrayImage, columns: u32, rows: u32) -> Vec<(f32, f32)> {
    let border: Vec<Point<i32>> = imageproc::contours::find_contours::<i32>(mask)
        .into_iter()
        .flat_map(|c| c.points)
        .collect();
    let hull = imageproc::geometry::convex_hull(border);
    if hull.len() < 3 {
        return Vec::new();
    }
    // A mask pixel's centre, scaled to the source.
    let sx = columns as f32 / mask.width().max(1) as f32;
    let sy = rows as f32 / mask.height().max(1) as f32;
    let mut polygon: Vec<(f32, f32)> = hull
        .iter()
        .map(|p| ((p.x as f32 + 0.5) * sx, (p.y as f32 + 0.5) * sy))
        .collect();
    polygon.push(polygon[0]);
    polygon
}

/// Which cells of a `grid` × `grid` division of the mask hold any of the anatomy, row-major.
pub fn cells_inside(mask: &GrayImage, grid: usize) -> Vec<bool> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let mut cells = vec![false; grid * grid];
    for (x, y, p) in mask.enumerate_pixels() {
        if p[0] == INSIDE && w > 0 && h > 0 {
            let cell = (y as usize * grid / h).min(grid - 1) * grid
                + (x as usize * grid / w).min(grid - 1);
            cells[cell] = true;
        }
    }
    cells
}

/// Whether the mask pixel under `(x, y)` of an image of `width` × `height` is inside.
pub fn covers(mask: &GrayImage, x: u32, y: u32, width: u32, height: u32) -> bool {
    let mx = (u64::from(x) * u64::from(mask.width()) / u64::from(width.max(1))) as u32;
    let my = (u64::from(y) * u64::from(mask.height()) / u64::from(height.max(1))) as u32;
    mask.get_pixel_checked(mx, my)
        .is_some_and(|p| p[0] == INSIDE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chest_spec() -> GateSpec {
        GateSpec {
            anatomy: Anatomy::Chest,
            output: "logits".into(),
            class: 1,
            area_fraction: [0.1, 0.7],
            regions: 2,
            region_fraction: 0.03,
            side_by_side: true,
            refusal: "not a frontal chest radiograph".into(),
        }
    }

    /// A 100 × 100 mask with the given filled rectangles `(x0, y0, x1, y1)`.
    fn mask(rects: &[(u32, u32, u32, u32)]) -> GrayImage {
        GrayImage::from_fn(100, 100, |x, y| {
            let inside = rects
                .iter()
                .any(|&(x0, y0, x1, y1)| (x0..x1).contains(&x) && (y0..y1).contains(&y));
            Luma([if inside { INSIDE } else { 0 }])
        })
    }

    #[test]
    fn two_lung_fields_side_by_side_pass() {
        let v = judge(
            "lungs 1",
            &chest_spec(),
            mask(&[(10, 20, 40, 80), (60, 20, 90, 80)]),
        );
        assert!(v.passed(), "{:?}", v.refusal);
        assert!((v.area_fraction - 0.36).abs() < 1e-6);
    }

    #[test]
    fn an_empty_mask_is_refused_with_its_area() {
        let v = judge("lungs 1", &chest_spec(), mask(&[]));
        assert_eq!(
            v.refusal.as_deref(),
            Some("not a frontal chest radiograph: lung area 0.0%")
        );
    }

    #[test]
    fn one_field_or_two_on_one_side_is_refused() {
        let one = judge("lungs 1", &chest_spec(), mask(&[(20, 20, 80, 80)]));
        assert!(one.refusal.unwrap().contains("in 1 lung field(s)"));
        let same_side = judge(
            "lungs 1",
            &chest_spec(),
            mask(&[(0, 0, 45, 30), (0, 50, 45, 100)]),
        );
        assert!(same_side.refusal.unwrap().contains("not side by side"));
    }

    #[test]
    fn too_much_is_refused() {
        let v = judge("lungs 1", &chest_spec(), mask(&[(0, 0, 100, 90)]));
        assert!(v.refusal.unwrap().contains("more than the 70%"));
    }

    #[test]
    fn the_hull_is_closed_and_scaled_to_the_source() {
        let m = mask(&[(10, 20, 40, 80), (60, 20, 90, 80)]);
        let polygon = hull(&m, 1000, 500);
        assert_eq!(polygon.first(), polygon.last());
        let xs: Vec<f32> = polygon.iter().map(|p| p.0).collect();
        let ys: Vec<f32> = polygon.iter().map(|p| p.1).collect();
        let (min_x, max_x) = (
            xs.iter().cloned().fold(f32::MAX, f32::min),
            xs.iter().cloned().fold(0.0, f32::max),
        );
        let (min_y, max_y) = (
            ys.iter().cloned().fold(f32::MAX, f32::min),
            ys.iter().cloned().fold(0.0, f32::max),
        );
        assert_eq!((min_x, max_x), (105.0, 895.0));
        assert_eq!((min_y, max_y), (102.5, 397.5));
        assert!(hull(&mask(&[]), 10, 10).is_empty());
    }

    #[test]
    fn cells_inside_are_those_holding_any_of_the_anatomy() {
        let cells = cells_inside(&mask(&[(0, 0, 10, 10)]), 8);
        assert_eq!(cells.iter().filter(|c| **c).count(), 1);
        assert!(cells[0]);
    }
}
