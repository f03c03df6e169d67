//! The endoscope's field of view (issue #14): endoscopic video shows the scene inside a circle
//! (the scope's optics) on black. Before an endoscopy model scores a frame, the field-of-view
//! model (`models/endoscopy-field-of-view`: torchcontentarea's learned content-area estimator,
//! MIT) scores 16 horizontal strips of the frame for "edge of the field of view", the best point
//! of each strip half is kept, and a deterministic RANSAC fits the circle; the frame is then
//! cropped to the circle's bounding box and masked outside it, and the circle is kept with the
//! finding.
//!
//! The algorithm is the package's (`csrc/source/make_strips_cpu.cpp`,
//! `find_points_from_scores_cpu.cpp`, `fit_circle_cpu.cpp`), written here from the spec in
//! `models/endoscopy-field-of-view/README.md`, in `f32` as the package computes; the network is
//! the ONNX conversion. It is pinned against the Python reference in `reference.json`
//! (`tests/field_of_view.rs`).

use image::{DynamicImage, GenericImageView, Rgb, RgbImage};
use ndarray::{Array4, Axis};
use serde::{Deserialize, Serialize};

use super::model::{LoadedModel, ModelError};

const STRIPS: usize = 16;
/// Rows of a strip: three unpadded 3×3 convolutions need 7.
const PATCH: usize = 7;
const HALF_PATCH: usize = PATCH / 2;
/// A point must score above this to count.
const EDGE_THRESHOLD: f32 = 0.03;
/// Below this confidence a frame has no field of view (the package's second default
/// threshold): the model gets the whole frame.
pub const CIRCLE_THRESHOLD: f32 = 0.06;
const RANSAC_ATTEMPTS: i32 = 32;
const RANSAC_ITERATIONS: usize = 3;
const INLIER_DISTANCE: f32 = 3.0;
const MEAN: [f32; 3] = [0.3441, 0.2251, 0.2203];
const STD: [f32; 3] = [0.2381, 0.1994, 0.1939];
/// Frames lower than this put strip rows outside the frame.
const MIN_HEIGHT: u32 = 90;
/// The model's output, `[S, 1, 1, W - 6]`, sigmoid applied.
const OUTPUT: &str = "scores";

/// The circle the scope shows the scene in, in frame pixels (column, row of pixel centres).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldOfView {
    /// Centre column.
    pub x: f32,
    /// Centre row.
    pub y: f32,
    /// Radius.
    pub radius: f32,
    /// Mean score of the edge points on the circle, 0 to 1; the circle is used from
    /// [`CIRCLE_THRESHOLD`] up.
    pub confidence: f32,
}

/// A found edge point.
#[derive(Debug, Clone, Copy)]
struct Point {
    x: f32,
    y: f32,
    score: f32,
}

/// The centre row of each strip: logistic spacing, denser near the top and bottom edges.
fn strip_rows(height: u32) -> [usize; STRIPS] {
    let s = STRIPS as f32;
    std::array::from_fn(|i| {
        let t = -(i as f32 - s / 2.0 + 0.5) / (s / 8.0);
        (1.0 + (height as f32 - 2.0) / (1.0 + t.exp())) as usize
    })
}

/// The model's input for one frame, `[16, 5, 7, W]`: each strip's rows normalised as the
/// package trained it, and the pixels' coordinates.
fn strips(frame: &RgbImage) -> Array4<f32> {
    let (w, h) = frame.dimensions();
    let mut out = Array4::<f32>::zeros((STRIPS, 5, PATCH, w as usize));
    for (s, row) in strip_rows(h).iter().enumerate() {
        for k in 0..PATCH {
            let y = (row + k).saturating_sub(HALF_PATCH).min(h as usize - 1);
            for x in 0..w as usize {
                let Rgb(p) = *frame.get_pixel(x as u32, y as u32);
                for c in 0..3 {
                    out[[s, c, k, x]] = (f32::from(p[c]) / 255.0 - MEAN[c]) / STD[c];
                }
                out[[s, 3, k, x]] = x as f32 / w as f32 - 0.5;
                out[[s, 4, k, x]] = y as f32 / h as f32 - 0.5;
            }
        }
    }
    out
}

/// The best column of each half of each strip (the first maximum above 0): 32 points.
fn points(scores: &ndarray::ArrayView2<f32>, height: u32) -> Vec<Point> {
    let width = scores.len_of(Axis(1));
    let rows = strip_rows(height);
    let mut found = Vec::with_capacity(2 * STRIPS);
    for (s, row) in rows.iter().enumerate() {
        for (lo, hi) in [(0, width / 2), (width / 2, width)] {
            let (mut best, mut index) = (0.0_f32, 0usize);
            for x in lo..hi {
                if scores[[s, x]] > best {
                    best = scores[[s, x]];
                    index = x + HALF_PATCH;
                }
            }
            found.push(Point {
                x: index as f32,
                y: *row as f32,
                score: best,
            });
        }
    }
    found
}

/// The package's random numbers (the MSVC `rand` recurrence), so its attempts are ours.
struct FastRand(i32);

impl FastRand {
    fn next(&mut self) -> usize {
        self.0 = self.0.wrapping_mul(214_013).wrapping_add(2_531_011);
        ((self.0 >> 16) & 0x7FFF) as usize
    }

    fn triplet(&mut self, count: usize) -> [usize; 3] {
        let a = self.next() % count;
        let b = loop {
            let r = self.next() % count;
            if r != a {
                break r;
            }
        };
        let c = loop {
            let r = self.next() % count;
            if r != a && r != b {
                break r;
            }
        };
        [a, b, c]
    }
}

type Circle = (f32, f32, f32);

/// The circle through three points; None when they are collinear.
fn circle_through(a: &Point, b: &Point, c: &Point) -> Option<Circle> {
    let offset = b.x * b.x + b.y * b.y;
    let bc = 0.5 * (a.x * a.x + a.y * a.y - offset);
    let cd = 0.5 * (offset - c.x * c.x - c.y * c.y);
    let det = (a.x - b.x) * (b.y - c.y) - (b.x - c.x) * (a.y - b.y);
    if det.abs() <= 1e-8 || det.is_nan() {
        return None;
    }
    let inverse = 1.0 / det;
    let x = (bc * (b.y - c.y) - cd * (a.y - b.y)) * inverse;
    let y = (cd * (a.x - b.x) - bc * (b.x - c.x)) * inverse;
    Some((x, y, ((b.x - x) * (b.x - x) + (b.y - y) * (b.y - y)).sqrt()))
}

/// The least-squares (Kasa) circle through `points`, solved by the package's Cholesky, whose
/// early returns (a singular system) leave the right-hand side as it is.
fn least_squares_circle(points: &[&Point]) -> Circle {
    let mut m = [[0.0_f32; 3]; 3];
    let mut r = [0.0_f32; 3];
    for p in points {
        let (x, y) = (p.x, p.y);
        m[0][0] += x * x;
        m[0][1] += x * y;
        m[1][1] += y * y;
        m[0][2] += x;
        m[1][2] += y;
        m[2][2] += 1.0;
        r[0] += x * x * x + x * y * y;
        r[1] += x * x * y + y * y * y;
        r[2] += x * x + y * y;
    }
    cholesky_solve(&mut m, &mut r);
    let [a, b, c] = r;
    (a / 2.0, b / 2.0, (4.0 * c + a * a + b * b).sqrt() / 2.0)
}

/// In place, step for step as the package's `Cholesky3x3`. The negated comparisons are
/// deliberate: a NaN pivot takes the early return, as the package's `!(x > 0)` does.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn cholesky_solve(m: &mut [[f32; 3]; 3], r: &mut [f32; 3]) {
    let mut d = [0.0_f32; 3];
    if !(m[0][0] > 0.0) {
        return;
    }
    d[0] = m[0][0].sqrt();
    m[1][0] = m[0][1] / d[0];
    m[2][0] = m[0][2] / d[0];
    let s = m[1][1] - m[1][0] * m[1][0];
    if !(s > 0.0) {
        return;
    }
    d[1] = s.sqrt();
    m[2][1] = (m[1][2] - m[1][0] * m[2][0]) / d[1];
    let s = m[2][2] - m[2][1] * m[2][1] - m[2][0] * m[2][0];
    if !(s > 0.0) {
        return;
    }
    d[2] = s.sqrt();
    r[0] /= d[0];
    r[1] = (r[1] - m[1][0] * r[0]) / d[1];
    r[2] = (r[2] - m[2][1] * r[1] - m[2][0] * r[0]) / d[2];
    r[2] /= d[2];
    r[1] = (r[1] - m[2][1] * r[2]) / d[1];
    r[0] = (r[0] - m[1][0] * r[1] - m[2][0] * r[2]) / d[0];
}

/// A circle a scope could show: centred near the frame's centre, neither tiny nor huge.
fn plausible((x, y, r): Circle, width: u32, height: u32) -> bool {
    let (w, h) = (width as f32, height as f32);
    let (dx, dy) = (x - 0.5 * w, y - 0.5 * h);
    (dx * dx + dy * dy).sqrt() < 0.2 * w && 0.2 * w < r && r < 0.8 * w
}

/// RANSAC over the kept points: 32 seeded attempts, each a 3-point circle refined over its
/// inliers; the plausible circle with the highest mean inlier score wins.
fn fit_circle(all: &[Point], width: u32, height: u32) -> Option<FieldOfView> {
    let kept: Vec<&Point> = all.iter().filter(|p| p.score > EDGE_THRESHOLD).collect();
    if kept.len() < 3 {
        return None;
    }
    let mut best: Option<FieldOfView> = None;
    for attempt in 0..RANSAC_ATTEMPTS {
        let mut rand = FastRand(attempt.wrapping_mul(42_342));
        let mut inliers: Vec<usize> = rand.triplet(kept.len()).to_vec();
        let mut circle: Option<Circle> = None;
        let mut score = 0.0_f32;
        for _ in 0..RANSAC_ITERATIONS {
            circle = if inliers.len() == 3 {
                circle_through(kept[inliers[0]], kept[inliers[1]], kept[inliers[2]]).or(circle)
            } else {
                let chosen: Vec<&Point> = inliers.iter().map(|&i| kept[i]).collect();
                Some(least_squares_circle(&chosen))
            };
            let Some((cx, cy, r)) = circle else { break };
            inliers.clear();
            score = 0.0;
            for (i, p) in kept.iter().enumerate() {
                let (dx, dy) = (cx - p.x, cy - p.y);
                if (r - (dx * dx + dy * dy).sqrt()).abs() < INLIER_DISTANCE {
                    score += p.score;
                    inliers.push(i);
                }
            }
            score /= all.len() as f32;
        }
        let Some(c) = circle else { continue };
        if plausible(c, width, height) && score > best.map_or(0.0, |b| b.confidence) {
            best = Some(FieldOfView {
                x: c.0,
                y: c.1,
                radius: c.2,
                confidence: score,
            });
        }
    }
    best
}

/// The field of view of each frame (None where none is found: a frame lower than 90 rows, or
/// too few edge points, or no plausible circle), in one inference over all their strips.
pub fn estimate(
    model: &LoadedModel,
    frames: &[RgbImage],
) -> Result<Vec<Option<FieldOfView>>, ModelError> {
    let mut found = vec![None; frames.len()];
    // Frames of one width share a batch (a clip's frames all do).
    let usable: Vec<usize> = (0..frames.len())
        .filter(|&i| frames[i].height() >= MIN_HEIGHT && frames[i].width() > PATCH as u32)
        .collect();
    for width in widths(frames, &usable) {
        let same: Vec<usize> = usable
            .iter()
            .copied()
            .filter(|&i| frames[i].width() == width)
            .collect();
        let batches: Vec<Array4<f32>> = same.iter().map(|&i| strips(&frames[i])).collect();
        let views: Vec<_> = batches.iter().map(|b| b.view()).collect();
        let batch = ndarray::concatenate(Axis(0), &views).map_err(|e| inference(model, e))?;
        let scores = model.output(&batch, OUTPUT)?;
        let columns = scores.len() / (same.len() * STRIPS).max(1);
        let scores = scores
            .into_shape_with_order((same.len(), STRIPS, columns))
            .map_err(|e| inference(model, e))?;
        for (n, &i) in same.iter().enumerate() {
            let frame_scores = scores.index_axis(Axis(0), n);
            let h = frames[i].height();
            found[i] = fit_circle(&points(&frame_scores, h), width, h);
        }
    }
    Ok(found)
}

fn widths(frames: &[RgbImage], usable: &[usize]) -> Vec<u32> {
    let mut w: Vec<u32> = usable.iter().map(|&i| frames[i].width()).collect();
    w.sort_unstable();
    w.dedup();
    w
}

fn inference(model: &LoadedModel, e: impl std::fmt::Display) -> ModelError {
    ModelError::Inference {
        model: model.manifest.name.clone(),
        reason: e.to_string(),
    }
}

/// The frame as the model should see it: with a confident field of view, cropped to the
/// circle's bounding box (clipped to the frame) and black outside the circle; else whole.
pub fn crop(frame: &DynamicImage, fov: Option<&FieldOfView>) -> DynamicImage {
    let Some(f) = fov.filter(|f| f.confidence >= CIRCLE_THRESHOLD) else {
        return frame.clone();
    };
    let (w, h) = frame.dimensions();
    let clip = |v: f32, max: u32| (v.max(0.0) as u32).min(max);
    let (x0, x1) = (
        clip((f.x - f.radius).floor(), w),
        clip((f.x + f.radius).ceil() + 1.0, w),
    );
    let (y0, y1) = (
        clip((f.y - f.radius).floor(), h),
        clip((f.y + f.radius).ceil() + 1.0, h),
    );
    if x1 <= x0 || y1 <= y0 {
        return frame.clone();
    }
    let rgb = frame.to_rgb8();
    let r2 = f.radius * f.radius;
    DynamicImage::ImageRgb8(RgbImage::from_fn(x1 - x0, y1 - y0, |x, y| {
        let (px, py) = ((x + x0) as f32, (y + y0) as f32);
        if (px - f.x).powi(2) + (py - f.y).powi(2) <= r2 {
            *rgb.get_pixel(x + x0, y + y0)
        } else {
            Rgb([0, 0, 0])
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_rows_follow_the_packages_logistic_spacing() {
        assert_eq!(
            strip_rows(480),
            [11, 18, 29, 46, 71, 107, 154, 210, 269, 325, 372, 408, 433, 450, 461, 468]
        );
        assert_eq!(
            strip_rows(720),
            [17, 27, 44, 69, 107, 160, 231, 315, 404, 488, 559, 612, 650, 675, 692, 702]
        );
    }

    #[test]
    fn points_on_a_circle_give_that_circle() {
        // 32 points on the circle (427, 240, 225), as strip halves would find them.
        let (cx, cy, r) = (427.0_f32, 240.0_f32, 225.0_f32);
        let points: Vec<Point> = strip_rows(480)
            .iter()
            .flat_map(|&row| {
                let dy = row as f32 - cy;
                let dx = (r * r - dy * dy).max(0.0).sqrt();
                [(cx - dx).round(), (cx + dx).round()].map(|x| Point {
                    x,
                    y: row as f32,
                    score: if dy.abs() < r { 0.9 } else { 0.0 },
                })
            })
            .collect();
        let f = fit_circle(&points, 854, 480).expect("a circle");
        assert!((f.x - cx).abs() < 1.0 && (f.y - cy).abs() < 1.0, "{f:?}");
        assert!((f.radius - r).abs() < 1.0, "{f:?}");
        assert!(f.confidence > CIRCLE_THRESHOLD, "{f:?}");
    }

    #[test]
    fn too_few_points_or_an_implausible_circle_is_none() {
        let p = |x, y| Point { x, y, score: 0.5 };
        assert!(fit_circle(&[p(1.0, 1.0), p(2.0, 2.0)], 854, 480).is_none());
        // A tiny circle in a corner.
        let corner: Vec<Point> = (0..8)
            .map(|i| {
                let a = i as f32 * std::f32::consts::FRAC_PI_4;
                p(20.0 + 10.0 * a.cos(), 20.0 + 10.0 * a.sin())
            })
            .collect();
        assert!(fit_circle(&corner, 854, 480).is_none());
    }

    #[test]
    fn the_package_random_sequence_is_reproduced() {
        // MSVC rand() from seed 0: 38, 7719, 21238, 2437.
        let mut r = FastRand(0);
        assert_eq!(
            [r.next(), r.next(), r.next(), r.next()],
            [38, 7719, 21238, 2437]
        );
    }

    #[test]
    fn crop_keeps_the_circle_and_blacks_out_the_rest() {
        let frame = DynamicImage::ImageRgb8(RgbImage::from_pixel(100, 100, Rgb([200, 100, 50])));
        let fov = FieldOfView {
            x: 50.0,
            y: 50.0,
            radius: 30.0,
            confidence: 0.2,
        };
        let out = crop(&frame, Some(&fov)).to_rgb8();
        // Columns and rows 20 to 80: the circle's bounding box.
        assert_eq!(out.dimensions(), (61, 61));
        assert_eq!(out.get_pixel(30, 30), &Rgb([200, 100, 50]));
        assert_eq!(out.get_pixel(0, 0), &Rgb([0, 0, 0]));
        let weak = FieldOfView {
            confidence: 0.01,
            ..fov
        };
        assert_eq!(crop(&frame, Some(&weak)).dimensions(), (100, 100));
    }
}
