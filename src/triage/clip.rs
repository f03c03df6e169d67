//! Per-study video triage (issue #14): a per-frame model reads a clip at a sampling rate in
//! time, and each label's finding for the clip is the maximum of its per-frame probabilities
//! smoothed over a window of sampled frames, with the frames where the smoothed probability
//! stays at or above the label's threshold. One noisy frame does not flag a clip; a lesion in
//! view for a few frames does, and the report says where.

use super::manifest::{ClipRule, ModelManifest, Urgency};
use super::model::Scores;

/// A label's finding on a whole clip.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipFinding {
    /// Label.
    pub label: String,
    /// The highest smoothed probability over the clip.
    pub probability: f32,
    /// Whether the smoothed probability reached the label's threshold anywhere.
    pub flagged: bool,
    /// Urgency when flagged.
    pub urgency: Urgency,
    /// The sampled frames (0-based) where the smoothed probability is at or above the
    /// threshold, in order.
    pub fired_frames: Vec<u32>,
    /// The sampled frame (0-based) where the smoothed probability peaks.
    pub peak_frame: u32,
}

/// The frames (0-based) a clip rule samples from a clip of `number_of_frames` frames at
/// `frames_per_second` (None: the clip does not say; every `frame_step`-th frame), at most
/// `max_frames`, spread evenly over the whole clip.
pub fn sampled_frames(
    rule: &ClipRule,
    frame_step: u32,
    max_frames: u32,
    number_of_frames: u32,
    frames_per_second: Option<f64>,
) -> Vec<u32> {
    let n = number_of_frames.max(1);
    let step = match frames_per_second {
        Some(fps) if fps > 0.0 => (fps / f64::from(rule.sample_fps)).round().max(1.0) as u32,
        _ => frame_step.max(1),
    };
    let at_rate: Vec<u32> = (0..n).step_by(step as usize).collect();
    let max = max_frames.max(1) as usize;
    if at_rate.len() <= max {
        return at_rate;
    }
    // Evenly over the clip: the i-th of `max` picks sits at i * (len - 1) / (max - 1).
    let last = at_rate.len() - 1;
    let mut picked: Vec<u32> = (0..max)
        .map(|i| at_rate[if max == 1 { 0 } else { i * last / (max - 1) }])
        .collect();
    picked.dedup();
    picked
}

/// Each label's clip finding from the per-frame `scores` of the sampled `frames`.
pub fn clip_findings(
    manifest: &ModelManifest,
    rule: &ClipRule,
    frames: &[u32],
    scores: &[Scores],
) -> Vec<ClipFinding> {
    manifest
        .labels
        .iter()
        .filter_map(|label| {
            let series: Vec<f32> = scores
                .iter()
                .map(|frame| {
                    frame
                        .iter()
                        .find(|s| s.label == label.name)
                        .map_or(0.0, |s| s.probability)
                })
                .collect();
            let smoothed = smooth(&series, rule.smoothing_frames as usize);
            // The first frame where the smoothed probability peaks.
            let (peak, probability) =
                smoothed
                    .iter()
                    .enumerate()
                    .fold(None, |best: Option<(usize, f32)>, (i, &p)| match best {
                        Some((_, b)) if b >= p => best,
                        _ => Some((i, p)),
                    })?;
            let fired_frames: Vec<u32> = smoothed
                .iter()
                .zip(frames)
                .filter(|(p, _)| **p >= label.threshold)
                .map(|(_, f)| *f)
                .collect();
            Some(ClipFinding {
                label: label.name.clone(),
                probability,
                flagged: !fired_frames.is_empty(),
                urgency: label.urgency,
                fired_frames,
                peak_frame: *frames.get(peak)?,
            })
        })
        .collect()
}

/// The centred moving average of `values` over `window` values (fewer at the ends).
fn smooth(values: &[f32], window: usize) -> Vec<f32> {
    let half = window.max(1) / 2;
    (0..values.len())
        .map(|i| {
            let from = i.saturating_sub(half);
            let to = (i + half + 1).min(values.len());
            let part = &values[from..to];
            part.iter().sum::<f32>() / part.len() as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::model::LabelScore;

    fn rule(sample_fps: f32, smoothing_frames: u32) -> ClipRule {
        ClipRule {
            sample_fps,
            smoothing_frames,
        }
    }

    #[test]
    fn frames_are_sampled_at_the_rate_and_spread_over_the_whole_clip() {
        // 25 fps sampled at 5 fps: every 5th frame.
        assert_eq!(
            sampled_frames(&rule(5.0, 1), 1, 64, 20, Some(25.0)),
            vec![0, 5, 10, 15]
        );
        // A 2-minute clip at 25 fps, 2 per second is 240: capped at 64, first to last.
        let picked = sampled_frames(&rule(2.0, 1), 1, 64, 3000, Some(25.0));
        assert_eq!(picked.len(), 64);
        assert_eq!(picked[0], 0);
        assert!(*picked.last().unwrap() >= 2975, "{picked:?}");
        // No rate in the clip: frame_step.
        assert_eq!(
            sampled_frames(&rule(2.0, 1), 3, 64, 10, None),
            vec![0, 3, 6, 9]
        );
    }

    fn manifest() -> ModelManifest {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models/endoscopy-synthetic-demo/model.toml"),
        )
        .unwrap();
        toml::from_str(&text).unwrap()
    }

    fn scores(label: &str, values: &[f32]) -> Vec<Scores> {
        values
            .iter()
            .map(|&p| {
                vec![LabelScore {
                    label: label.into(),
                    probability: p,
                    flagged: p >= 0.5,
                    urgency: Urgency::Routine,
                }]
            })
            .collect()
    }

    #[test]
    fn one_noisy_frame_does_not_flag_a_clip_and_a_run_of_frames_does() {
        let m = manifest();
        let label = m.labels[0].name.clone();
        let threshold = m.labels[0].threshold;
        let frames: Vec<u32> = (0..9).map(|i| i * 10).collect();
        let spike = scores(&label, &[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        let found = clip_findings(&m, &rule(2.0, 3), &frames, &spike);
        assert!(!found[0].flagged, "{found:?} (threshold {threshold})");
        assert_eq!(found[0].peak_frame, 30, "the first frame of the peak");

        let run = scores(&label, &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        let found = clip_findings(&m, &rule(2.0, 3), &frames, &run);
        assert!(found[0].flagged, "{found:?}");
        assert_eq!(found[0].peak_frame, 40);
        assert!((found[0].probability - 1.0).abs() < 1e-6);
        assert!(found[0].fired_frames.contains(&40), "{found:?}");
        assert!(!found[0].fired_frames.contains(&0), "{found:?}");
    }
}
